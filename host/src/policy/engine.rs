//! The wasmtime engine behind every policy hook.
//!
//! One [`wasmtime::Engine`] (component model, pooling allocator, epoch interruption) and one
//! `Linker` serve every plugin. A plugin is compiled once (see `cache`) and pre-instantiated
//! (`InstancePre`); each decision gets a fresh `Store` with a memory cap (`StoreLimits`) and an
//! epoch deadline, so no state survives from one request to the next and a runaway plugin is
//! stopped. Every fault — trap, guest panic, deadline, memory cap, bad return — becomes a
//! [`Fault`], which the caller turns into a deny naming the plugin.
//!
//! The deadline bounds the CPU time a decision uses, not wall time: the epoch ticker interrupts
//! the guest every millisecond past the deadline, and the interrupt checks this thread's CPU
//! clock. A guest that has not used its budget (the thread was descheduled on a busy machine)
//! continues; one that has, traps. A call is also stopped after 20 times its deadline in wall
//! time, so a starved machine cannot hold a decision forever.
//!
//! Plugins see only the `host` interface (log, their own config). Components built by
//! componentize-py import WASI; they get a locked-down WASI context built on first use: no
//! preopened directories, no network, no environment, no arguments, a clock fixed at the
//! request's `now`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, authorize, source, sudo};
use super::{Decision, Request};
use crate::config::Hook;

/// Epoch ticks per millisecond of deadline: the ticker increments the epoch every millisecond.
const TICK: Duration = Duration::from_millis(1);
/// Wall-clock ceiling of a call, as a multiple of its CPU deadline.
const WALL_FACTOR: u32 = 20;

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}
/// Longest log line a plugin may write, and lines per decision.
const MAX_LOG_LINE: usize = 1024;
const MAX_LOG_LINES: u32 = 16;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}: not a valid WebAssembly component: {1}")]
    Compile(String, String),
    #[error("{plugin}: exports {found}, which is not the {hook:?} hook's `{expected}`")]
    WrongWorld {
        plugin: String,
        hook: Hook,
        expected: &'static str,
        found: String,
    },
    #[error(
        "{0}: exports none of `authorize`, `sudo`, `check-source`; it is not a sallyport policy component"
    )]
    NoWorld(String),
    #[error("{0}: cannot be linked (it imports something the host does not provide): {1}")]
    Link(String, String),
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}

/// Why one decision failed; always a deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Deadline,
    Memory,
    Trap(String),
    Instantiate(String),
    /// The plugin's file could not be loaded (bad component, wrong world, missing import).
    Unloadable(String),
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deadline => "deadline",
            Self::Memory => "memory",
            Self::Trap(_) => "trap",
            Self::Instantiate(_) => "instantiate",
            Self::Unloadable(_) => "load",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deadline => f.write_str("exceeded its deadline"),
            Self::Memory => f.write_str("exceeded its memory cap"),
            Self::Trap(m) => write!(f, "trapped: {m}"),
            Self::Instantiate(m) => write!(f, "could not be instantiated: {m}"),
            Self::Unloadable(m) => write!(f, "cannot run: {m}"),
        }
    }
}

/// What a decision's store carries.
pub struct Ctx {
    plugin: Arc<PluginMeta>,
    request_id: String,
    now_ms: u64,
    limits: StoreLimits,
    logs: u32,
    wasi: Option<Box<(WasiCtx, ResourceTable)>>,
}

/// The parts of a plugin its host calls need.
#[derive(Debug)]
pub struct PluginMeta {
    pub name: String,
    pub config: HashMap<String, String>,
}

impl bindings::Host for Ctx {
    fn log(&mut self, level: u8, message: String) {
        if self.logs >= MAX_LOG_LINES {
            return;
        }
        self.logs += 1;
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (plugin, rid) = (self.plugin.name.as_str(), self.request_id.as_str());
        match level {
            0 | 1 => tracing::error!(target: "plugin", plugin, request_id = rid, "{message}"),
            2 => tracing::warn!(target: "plugin", plugin, request_id = rid, "{message}"),
            3 => tracing::info!(target: "plugin", plugin, request_id = rid, "{message}"),
            4 => tracing::debug!(target: "plugin", plugin, request_id = rid, "{message}"),
            _ => tracing::trace!(target: "plugin", plugin, request_id = rid, "{message}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.plugin.config.get(&key).cloned()
    }
}

/// A clock that always reads the request's `now`: plugins have no clock of their own.
struct FixedClock(u64);

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl wasmtime_wasi::HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.saturating_mul(1_000_000)
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let now = self.now_ms;
        let parts = self.wasi.get_or_insert_with(|| {
            let mut b = WasiCtx::builder();
            b.wall_clock(FixedClock(now))
                .monotonic_clock(FixedClock(now))
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false);
            Box::new((b.build(), ResourceTable::new()))
        });
        WasiCtxView {
            ctx: &mut parts.0,
            table: &mut parts.1,
        }
    }
}

/// A plugin ready to decide: its pre-instantiated component for one hook.
#[derive(Clone)]
pub enum Prepared {
    Authorize(authorize::AuthorizePolicyPre<Ctx>),
    Sudo(sudo::SudoPolicyPre<Ctx>),
    Source(source::SourcePolicyPre<Ctx>),
}

/// Limits applied to each decision of a plugin.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub deadline: Duration,
    pub memory_bytes: usize,
}

/// The shared engine, linker and epoch ticker.
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<Ctx>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyEngine")
    }
}

impl Drop for PolicyEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl PolicyEngine {
    /// Builds the engine. `max_memory_bytes` is the largest per-plugin memory cap configured:
    /// pooled memory slots are sized for it.
    pub fn new(max_memory_bytes: usize) -> Result<Self, LoadError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(1000)
            .total_core_instances(2000)
            .total_memories(2000)
            .total_tables(2000)
            .total_stacks(1000)
            .max_memory_size(max_memory_bytes.max(1 << 20))
            .decommit_batch_size(32);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            // Small data segments: copying beats copy-on-write mappings (measured, see notes).
            .memory_init_cow(false)
            .memory_guard_size(64 << 10)
            .memory_reservation((max_memory_bytes.max(1 << 20) as u64).next_power_of_two());
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut linker = Linker::<Ctx>::new(&engine);
        bindings::add_host_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("sallyport-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Engine(format!("cannot start epoch ticker: {e}")))?;
        Ok(Self {
            engine,
            linker,
            stop,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Which hook a component serves, from its exports.
    pub fn world_of(&self, name: &str, component: &Component) -> Result<Hook, LoadError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        for (export, hook) in [
            ("authorize", Hook::Authorize),
            ("sudo", Hook::Sudo),
            ("check-source", Hook::Source),
        ] {
            if exports.iter().any(|e| e == export) {
                return Ok(hook);
            }
        }
        Err(LoadError::NoWorld(name.to_string()))
    }

    /// Links and pre-instantiates a component for `hook`.
    pub fn prepare(
        &self,
        name: &str,
        hook: Hook,
        component: &Component,
    ) -> Result<Prepared, LoadError> {
        let found = self.world_of(name, component)?;
        if found != hook {
            return Err(LoadError::WrongWorld {
                plugin: name.into(),
                hook,
                expected: export_name(hook),
                found: format!("`{}`", export_name(found)),
            });
        }
        let link = |e: wasmtime::Error| LoadError::Link(name.into(), format!("{e:#}"));
        let pre = self.linker.instantiate_pre(component).map_err(link)?;
        Ok(match hook {
            Hook::Authorize => {
                Prepared::Authorize(authorize::AuthorizePolicyPre::new(pre).map_err(link)?)
            }
            Hook::Sudo => Prepared::Sudo(sudo::SudoPolicyPre::new(pre).map_err(link)?),
            Hook::Source => Prepared::Source(source::SourcePolicyPre::new(pre).map_err(link)?),
        })
    }

    /// One decision in a fresh store.
    pub fn decide(
        &self,
        prepared: &Prepared,
        meta: &Arc<PluginMeta>,
        limits: Limits,
        r: &Request,
    ) -> Result<Decision, Fault> {
        let ctx = Ctx {
            plugin: meta.clone(),
            request_id: r.request_id.clone(),
            now_ms: r.now_unix_ms,
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(16)
                .trap_on_grow_failure(true)
                .build(),
            logs: 0,
            wasi: None,
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|c| &mut c.limits);
        let ticks = (limits.deadline.as_millis() as u64).max(1) + 1;
        store.set_epoch_deadline(ticks);
        let (cpu_start, wall_start) = (thread_cpu(), std::time::Instant::now());
        let deadline = limits.deadline;
        store.epoch_deadline_callback(move |_| {
            let used = thread_cpu().saturating_sub(cpu_start);
            if used < deadline && wall_start.elapsed() < deadline * WALL_FACTOR {
                Ok(wasmtime::UpdateDeadline::Continue(1))
            } else {
                Err(wasmtime::Trap::Interrupt.into())
            }
        });
        let request = bindings::request(r);
        let result = match prepared {
            Prepared::Authorize(pre) => pre
                .instantiate(&mut store)
                .and_then(|i| i.call_authorize(&mut store, &request)),
            Prepared::Sudo(pre) => pre
                .instantiate(&mut store)
                .and_then(|i| i.call_sudo(&mut store, &request)),
            Prepared::Source(pre) => pre
                .instantiate(&mut store)
                .and_then(|i| i.call_check_source(&mut store, &request)),
        };
        result.map(bindings::decision).map_err(|e| classify(&e))
    }
}

fn classify(e: &wasmtime::Error) -> Fault {
    let text = format!("{e:#}");
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => Fault::Deadline,
        Some(wasmtime::Trap::AllocationTooLarge) => Fault::Memory,
        // `StoreLimits::trap_on_grow_failure` reports the cap with this message.
        _ if text.contains("forcing trap when growing memory") => Fault::Memory,
        Some(trap) => Fault::Trap(trap.to_string()),
        None => Fault::Trap(text),
    }
}

pub fn export_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Authorize => "authorize",
        Hook::Sudo => "sudo",
        Hook::Source => "check-source",
    }
}
