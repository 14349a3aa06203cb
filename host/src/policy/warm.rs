//! Stores made ready before the requests that use them.
//!
//! Most of what a decision costs is not the plugin's code but instantiating the request's
//! plugins in a fresh store and, afterwards, dropping that store (which restores the pooled
//! memory slots for the next one). Neither depends on the request, so a background thread
//! (`sallyport-policy-warm`) does both: it keeps up to [`READY`] stores ready, each holding an
//! instance of every current plugin that was instantiated and never called, and it drops the
//! stores requests are done with. A request takes a ready store if one is there, or else
//! instantiates on its own thread as before.
//!
//! Isolation is unchanged: a store, and every instance in it, serves exactly one request and
//! is then dropped, so nothing a plugin does in one request is visible to the next. A ready
//! store is bound to the plugin versions it was made for; after a reload, stores made for the
//! old versions are dropped unused. What moves off the request's thread is work, not removed
//! work: under a load that keeps every core busy the thread cannot keep up, requests find no
//! ready store and instantiate themselves, and the latency is what it was without this.
//!
//! A plugin whose instantiation fails here (a trap in its start function, a deadline or memory
//! cap hit while instantiating) or that reaches for WASI while instantiating (its fixed clock
//! would read the wrong time) is left out of the ready stores of that plugin set: its requests
//! instantiate it themselves, and its faults are reported there, as deny decisions.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use wasmtime::{Engine, Store};

use super::Plugin;
use super::engine::Ctx;
use super::session::{InstanceKey, Session, instance_key, prepare_call};

/// Stores kept ready: enough for a burst of connections, few enough that the pooled slots and
/// memory they hold stay small.
pub const READY: usize = 4;

/// How often the thread looks at the plugin set when nothing happens (a reload is noticed
/// sooner: [`WarmPool::changed`]).
const IDLE: Duration = Duration::from_secs(1);

/// The plugin set a store was made for (compared by identity).
pub type PluginSet = Arc<Vec<Arc<Plugin>>>;

/// A store with every plugin of `plugins` instantiated (bar those left out), never called.
pub struct Ready {
    pub plugins: PluginSet,
    pub store: Store<Ctx>,
    pub instances: Vec<InstanceKey>,
}

enum Msg {
    /// A store a request is done with, to be dropped.
    Used(Store<Ctx>),
    /// The plugin set changed, or a ready store was taken.
    Refill,
}

/// The ready stores and the line to the thread that makes them.
pub struct WarmPool {
    engine: Engine,
    ready: Mutex<Vec<Ready>>,
    tx: OnceLock<mpsc::Sender<Msg>>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("ready", &self.ready.lock().len())
            .finish()
    }
}

impl WarmPool {
    /// A pool with no thread yet: until [`WarmPool::start`], requests instantiate themselves.
    pub fn new(engine: Engine) -> Arc<Self> {
        Arc::new(Self {
            engine,
            ready: Mutex::new(Vec::new()),
            tx: OnceLock::new(),
        })
    }

    /// Starts the thread. `current` gives the plugin set in force (`None` once the policy is
    /// gone); the thread ends when the pool or the policy is dropped.
    pub fn start(
        self: &Arc<Self>,
        current: impl Fn() -> Option<PluginSet> + Send + 'static,
    ) -> std::io::Result<()> {
        let (tx, rx) = mpsc::channel();
        let pool = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("sallyport-policy-warm".into())
            .spawn(move || run(pool, rx, current))?;
        let _ = self.tx.set(tx.clone());
        let _ = tx.send(Msg::Refill);
        Ok(())
    }

    /// A ready store made for exactly `plugins`, if there is one. Stores made for another set
    /// are handed to the thread to be dropped.
    pub fn take(&self, plugins: &PluginSet) -> Option<Ready> {
        let tx = self.tx.get()?;
        let (found, stale) = {
            let mut ready = self.ready.lock();
            let stale: Vec<Ready> = ready
                .extract_if(.., |r| !Arc::ptr_eq(&r.plugins, plugins))
                .collect();
            (ready.pop(), stale)
        };
        for r in stale {
            let _ = tx.send(Msg::Used(r.store));
        }
        let _ = tx.send(Msg::Refill);
        found
    }

    /// Drops `store` on the thread (or here, if there is no thread).
    pub fn give_back(&self, store: Store<Ctx>) {
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(Msg::Used(store));
        }
    }

    /// The plugin set changed: make stores for the new one.
    pub fn changed(&self) {
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(Msg::Refill);
        }
    }

    /// Tops the ready stores up to [`READY`] for `plugins`, dropping those made for another
    /// set. Stops early if a store cannot be made.
    fn refill(&self, plugins: &PluginSet, left_out: &mut LeftOut) {
        let (stale, missing) = {
            let mut ready = self.ready.lock();
            let stale: Vec<Ready> = ready
                .extract_if(.., |r| !Arc::ptr_eq(&r.plugins, plugins))
                .collect();
            (stale, READY.saturating_sub(ready.len()))
        };
        drop(stale);
        for _ in 0..missing {
            match self.make(plugins, left_out) {
                Some(r) => self.ready.lock().push(r),
                None => return,
            }
        }
    }

    /// One ready store for `plugins`, or `None` if none can be made (no runnable plugin, or
    /// one just failed to instantiate: it is left out from now on, and the next call retries).
    fn make(&self, plugins: &PluginSet, left_out: &mut LeftOut) -> Option<Ready> {
        if !left_out.set.as_ref().is_some_and(|s| Arc::ptr_eq(s, plugins)) {
            *left_out = LeftOut {
                set: Some(plugins.clone()),
                keys: Vec::new(),
            };
        }
        let mut store: Option<Store<Ctx>> = None;
        let mut instances: Vec<InstanceKey> = Vec::new();
        for p in plugins.iter() {
            let Ok(prepared) = &p.prepared else { continue };
            let key = instance_key(prepared, &p.meta);
            if left_out.keys.contains(&key) || instances.iter().any(|i| (i.0, i.1) == key) {
                continue;
            }
            let s = store.get_or_insert_with(|| {
                Session::new_store(&self.engine, "", crate::audit::now_ms() as u64, &p.meta)
            });
            prepare_call(s, &p.meta, p.limits);
            match prepared.instantiate(s) {
                Ok(i) if s.data().wasi.is_none() => instances.push((key.0, key.1, i)),
                Ok(_) => {
                    tracing::debug!(plugin = %p.name, "uses WASI while instantiating; not kept ready");
                    left_out.keys.push(key);
                    return None;
                }
                Err(e) => {
                    tracing::debug!(plugin = %p.name, error = %format!("{e:#}"), "cannot be made ready; its requests instantiate it");
                    left_out.keys.push(key);
                    return None;
                }
            }
        }
        Some(Ready {
            plugins: plugins.clone(),
            store: store?,
            instances,
        })
    }
}

/// Plugins of one set that are not made ready.
#[derive(Default)]
struct LeftOut {
    set: Option<PluginSet>,
    keys: Vec<(usize, usize)>,
}

fn run(
    pool: Weak<WarmPool>,
    rx: mpsc::Receiver<Msg>,
    current: impl Fn() -> Option<PluginSet>,
) {
    let mut left_out = LeftOut::default();
    loop {
        match rx.recv_timeout(IDLE) {
            Ok(Msg::Used(store)) => drop(store),
            Ok(Msg::Refill) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Used stores first: dropping them frees the pooled slots new ones need.
        while let Ok(msg) = rx.try_recv() {
            drop(msg);
        }
        let (Some(pool), Some(plugins)) = (pool.upgrade(), current()) else {
            return;
        };
        pool.refill(&plugins, &mut left_out);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::Hook;
    use crate::policy::Decision;
    use crate::policy::engine::{Limits, PluginMeta, PolicyEngine};
    use crate::policy::session::tests::{request, stateful};
    use std::time::Instant;

    fn plugin_set(engine: &PolicyEngine) -> PluginSet {
        let component =
            wasmtime::component::Component::new(engine.engine(), stateful()).unwrap();
        let prepared = engine
            .prepare("stateful", Hook::Authorize, &component)
            .unwrap();
        Arc::new(vec![Arc::new(Plugin {
            name: "stateful".into(),
            hook: Hook::Authorize,
            hash: "00".into(),
            meta: Arc::new(PluginMeta {
                name: "stateful".into(),
                config: Arc::default(),
            }),
            limits: Limits {
                deadline: Duration::from_millis(100),
                memory_bytes: 16 << 20,
            },
            prepared: Ok(prepared),
            metrics: Default::default(),
        })])
    }

    /// Waits (bounded) for the thread to have a store ready for `set`.
    fn take_ready(pool: &WarmPool, set: &PluginSet) -> Ready {
        let started = Instant::now();
        loop {
            if let Some(r) = pool.take(set) {
                return r;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no ready store");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn every_ready_store_serves_one_request_from_a_pristine_instance() {
        let engine = PolicyEngine::new(16 << 20).unwrap();
        let set = plugin_set(&engine);
        let pool = WarmPool::new(engine.engine().clone());
        let current = set.clone();
        pool.start(move || Some(current.clone())).unwrap();
        let r = request();
        let p = &set[0];
        let prepared = p.prepared.as_ref().unwrap();
        for _ in 0..50 {
            let ready = take_ready(&pool, &set);
            assert_eq!(ready.instances.len(), 1, "made with its plugin instantiated");
            let mut s = Session::with_ready(engine.engine().clone(), &r, ready);
            // The plugin allows only on its first call in an instance: a ready instance was
            // never called, and no store comes back to be used twice.
            let first = s.decide(prepared, &p.meta, p.limits, Hook::Authorize);
            assert!(matches!(first, Ok(Decision::Allow(_))), "{first:?}");
            let second = s.decide(prepared, &p.meta, p.limits, Hook::Authorize);
            assert!(matches!(second, Ok(Decision::Deny(_))), "{second:?}");
            pool.give_back(s.take_store().unwrap());
        }
    }

    #[test]
    fn stores_made_for_another_plugin_set_are_never_handed_out() {
        let engine = PolicyEngine::new(16 << 20).unwrap();
        let old = plugin_set(&engine);
        let new = plugin_set(&engine);
        let pool = WarmPool::new(engine.engine().clone());
        let current = Arc::new(Mutex::new(old.clone()));
        let seen = current.clone();
        pool.start(move || Some(seen.lock().clone())).unwrap();
        let ready = take_ready(&pool, &old);
        assert!(Arc::ptr_eq(&ready.plugins, &old));
        // Reloaded: stores for the old set may still be waiting; none is given for the new.
        *current.lock() = new.clone();
        pool.changed();
        for _ in 0..20 {
            let r = take_ready(&pool, &new);
            assert!(Arc::ptr_eq(&r.plugins, &new));
            pool.give_back(r.store);
        }
    }

    #[test]
    fn without_a_thread_nothing_is_ready() {
        let engine = PolicyEngine::new(16 << 20).unwrap();
        let set = plugin_set(&engine);
        let pool = WarmPool::new(engine.engine().clone());
        assert!(pool.take(&set).is_none());
    }
}
