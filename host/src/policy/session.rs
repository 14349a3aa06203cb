//! One request's decisions in one store.
//!
//! Every hook of a request (issuance: `sudo` then `authorize`; a connection: `source` then
//! `authorize`) runs in the same [`wasmtime::Store`], created on the first decision and
//! dropped with the session, so nothing outlives the request: the next request gets a new
//! store and new instances. Within the request each plugin is instantiated once and that
//! instance answers every hook it serves (a built-in component serves three), so a request
//! costs one instantiation per plugin rather than one per call, and the request record is
//! lowered from one conversion.
//!
//! A fault poisons the store: it is dropped at once and any later decision of the request
//! starts from a fresh store, so a trapped or interrupted instance never runs again.
//!
//! A session is not `Send`: its deadline check reads this thread's CPU clock against a mark
//! of the same clock taken on this thread before the store was created.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Instance;
use wasmtime::{Engine, Store, StoreLimitsBuilder};

use super::bindings::{self, wit};
use super::engine::{
    CallClock, Ctx, Fault, Limits, PluginMeta, PolicyEngine, Prepared, classify, cpu_mark,
};
use super::ticker::Ticker;
use super::{Decision, Request};
use crate::config::Hook;

/// Instances one request may create (plugins it runs, plus a margin).
const MAX_INSTANCES: usize = 64;

/// The store of one request and the instances created in it.
pub struct Session {
    engine: Engine,
    ticker: Arc<Ticker>,
    request: wit::Request,
    request_id: String,
    now_ms: u64,
    store: Option<Store<Ctx>>,
    /// `(Prepared::id, config identity, instance)`: at most a handful, so a vector.
    instances: Vec<(usize, usize, Instance)>,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("request_id", &self.request_id)
            .field("instances", &self.instances.len())
            .finish()
    }
}

impl Session {
    pub fn new(engine: &PolicyEngine, r: &Request) -> Self {
        Self {
            engine: engine.engine().clone(),
            ticker: engine.ticker().clone(),
            request: bindings::request(r),
            request_id: r.request_id.clone(),
            now_ms: r.now_unix_ms,
            store: None,
            instances: Vec::new(),
            _not_send: PhantomData,
        }
    }

    fn new_store(
        engine: &Engine,
        request_id: &str,
        now_ms: u64,
        meta: &Arc<PluginMeta>,
    ) -> Store<Ctx> {
        {
            let now = Instant::now();
            let ctx = Ctx {
                plugin: meta.clone(),
                request_id: request_id.to_string(),
                now_ms,
                limits: StoreLimitsBuilder::new().build(),
                logs: 0,
                wasi: None,
                clock: CallClock {
                    mark: cpu_mark(now),
                    call_started: now,
                    deadline: Duration::ZERO,
                },
            };
            let mut store = Store::new(engine, ctx);
            store.limiter(|c| &mut c.limits);
            store.epoch_deadline_callback(|cx| {
                if cx.data().clock.may_continue() {
                    Ok(wasmtime::UpdateDeadline::Continue(1))
                } else {
                    Err(wasmtime::Trap::Interrupt.into())
                }
            });
            store
        }
    }

    /// One plugin's decision on `hook`, in this request's store.
    pub fn decide(
        &mut self,
        prepared: &Prepared,
        meta: &Arc<PluginMeta>,
        limits: Limits,
        hook: Hook,
    ) -> Result<Decision, Fault> {
        let key = (prepared.id(), Arc::as_ptr(&meta.config) as usize);
        let cached = self
            .instances
            .iter()
            .find(|(p, c, _)| (*p, *c) == key)
            .map(|(_, _, i)| *i);
        let full = self.instances.len() >= MAX_INSTANCES;
        let store = match &mut self.store {
            Some(store) => store,
            slot => slot.insert(Self::new_store(
                &self.engine,
                &self.request_id,
                self.now_ms,
                meta,
            )),
        };
        let ctx = store.data_mut();
        ctx.plugin = meta.clone();
        ctx.logs = 0;
        // The cap applies to each memory as it grows, so setting it per call caps this
        // plugin's memories while it runs; instances are counted over the whole store.
        ctx.limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(MAX_INSTANCES)
            .trap_on_grow_failure(true)
            .build();
        ctx.clock.call_started = Instant::now();
        ctx.clock.deadline = limits.deadline;
        store.set_epoch_deadline((limits.deadline.as_millis() as u64).max(1) + 1);
        let _running = self.ticker.running();
        let outcome = match cached {
            Some(i) => Ok(i),
            None if full => Err(wasmtime::Error::msg(
                "too many plugin instances in one request",
            )),
            None => prepared.instantiate(store),
        }
        .and_then(|instance| {
            prepared
                .call(store, &instance, hook, &self.request)
                .map(|d| (instance, d))
        });
        match outcome {
            Ok((instance, d)) => {
                if cached.is_none() {
                    self.instances.push((key.0, key.1, instance));
                }
                Ok(bindings::decision(d))
            }
            Err(e) => {
                // Never enter a faulted store again.
                self.store = None;
                self.instances.clear();
                Err(classify(&e))
            }
        }
    }
}

/// The test suite's hand-written components (`tests/common/hostile.rs`).
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
#[path = "../../../tests/common/hostile.rs"]
mod hostile;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::hostile;
    use super::*;
    use crate::config::AccessLevel;
    use crate::policy::engine::PolicyEngine;
    use crate::policy::{Action, DeviceRef, Principal, Protocol};

    /// Allows on its first call in an instance, and denies on any later call (it remembers
    /// having been called in a byte of its memory).
    fn stateful() -> Vec<u8> {
        let reason = b"state from an earlier call";
        let mut d = vec![0u8; 40]; // allow (24 bytes), then deny at +24, reason at +40
        d[24] = 1;
        d[28..32].copy_from_slice(&(2048u32 + 40).to_le_bytes());
        d[32..36].copy_from_slice(&(reason.len() as u32).to_le_bytes());
        d.extend_from_slice(reason);
        hostile::component(
            "authorize",
            "(if (result i32) (i32.load8_u (i32.const 3000))
               (then (i32.const 2072))
               (else (i32.store8 (i32.const 3000) (i32.const 1)) (i32.const 2048)))",
            &d,
            "",
        )
    }

    fn request() -> Request {
        let user = Principal {
            name: "alice".into(),
            groups: vec!["ops".into()],
            sudo: false,
        };
        Request {
            action: Action::IssueSession,
            requester: user.clone(),
            subject: user,
            device: DeviceRef {
                name: "edge-1".into(),
                id: "d1".into(),
                tags: vec![],
            },
            protocol: Protocol::Ssh,
            access: AccessLevel::Full,
            ttl_seconds: 60,
            source: None,
            allow_only_cidr: None,
            allow_rfc1918: true,
            now_unix_ms: 0,
            request_id: "r".into(),
        }
    }

    #[test]
    fn no_state_survives_from_one_request_to_the_next() {
        let engine = PolicyEngine::new(16 << 20).unwrap();
        let component = wasmtime::component::Component::new(engine.engine(), stateful()).unwrap();
        let prepared = engine
            .prepare("stateful", Hook::Authorize, &component)
            .unwrap();
        let meta = Arc::new(PluginMeta {
            name: "stateful".into(),
            config: Arc::default(),
        });
        let limits = Limits {
            deadline: Duration::from_millis(100),
            memory_bytes: 16 << 20,
        };
        let r = request();
        // Many requests, so pooled slots are reused: each one starts from a pristine instance.
        for _ in 0..50 {
            let mut s = Session::new(&engine, &r);
            let first = s.decide(&prepared, &meta, limits, Hook::Authorize);
            assert!(matches!(first, Ok(Decision::Allow(_))), "{first:?}");
            // Within one request the instance is shared, so the plugin sees its own state.
            let second = s.decide(&prepared, &meta, limits, Hook::Authorize);
            assert!(matches!(second, Ok(Decision::Deny(_))), "{second:?}");
        }
    }
}
