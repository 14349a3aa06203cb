//! The wasmtime engine behind every policy hook.
//!
//! One [`wasmtime::Engine`] (component model, pooling allocator, epoch interruption) and one
//! `Linker` serve every plugin. A plugin is compiled once (see `cache`) and pre-instantiated
//! (`InstancePre`); each request gets a fresh `Store` (`session`) in which each plugin is
//! instantiated once, with a memory cap (`StoreLimits`) and an epoch deadline per call, so no
//! state survives from one request to the next and a runaway plugin is stopped. Pooled slots
//! stay resident and are restored in place, so a fresh instance costs no page faults.
//! Every fault — trap, guest panic, deadline, memory cap, bad return — becomes a [`Fault`],
//! which the caller turns into a deny naming the plugin.
//!
//! The deadline bounds the CPU time a decision uses, not wall time: the epoch ticker interrupts
//! the guest every millisecond past the deadline, and the interrupt checks this thread's CPU
//! clock (against a base read once per request: [`CallClock`]). A guest that has not used its budget (the thread was descheduled on a busy machine)
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

use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreLimits,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, authorize, source, sudo};
use super::{Decision, Request};
use crate::config::Hook;

/// Epoch ticks per millisecond of deadline: the ticker increments the epoch every millisecond.
const TICK: Duration = Duration::from_millis(1);
/// Bytes of each pooled linear memory / table kept mapped between instances (reset in place).
const KEEP_RESIDENT_MEMORY: usize = 256 << 10;
const KEEP_RESIDENT_TABLE: usize = 16 << 10;
/// Wall-clock ceiling of a call, as a multiple of its CPU deadline.
const WALL_FACTOR: u32 = 20;

pub(super) fn thread_cpu() -> Duration {
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

/// What a request's store carries. One store serves every decision of one request
/// ([`super::session::Session`]); the fields naming the plugin and its limits are set before
/// each call.
pub struct Ctx {
    pub(super) plugin: Arc<PluginMeta>,
    pub(super) request_id: String,
    pub(super) now_ms: u64,
    pub(super) limits: StoreLimits,
    pub(super) logs: u32,
    pub(super) wasi: Option<Box<(WasiCtx, ResourceTable)>>,
    pub(super) clock: CallClock,
}

/// What the deadline check needs to know about the call in progress.
#[derive(Debug, Clone, Copy)]
pub(super) struct CallClock {
    /// This thread's CPU time when the request's store was created.
    pub cpu_base: Duration,
    /// Wall time when the request's store was created.
    pub store_started: std::time::Instant,
    /// Wall time when the current call (or instantiation) started.
    pub call_started: std::time::Instant,
    /// The current call's CPU budget.
    pub deadline: Duration,
}

impl CallClock {
    /// A lower bound of the CPU time the current call has used: the CPU this thread used since
    /// the store was created, minus the wall time that passed before the call began (a thread
    /// cannot use more CPU than wall time, so that part covers every earlier call and the host
    /// work between them). The store never leaves its thread (`Session` is not `Send`).
    fn used(&self) -> Duration {
        thread_cpu()
            .saturating_sub(self.cpu_base)
            .saturating_sub(self.call_started.duration_since(self.store_started))
    }

    /// Whether the call may go on: under its CPU budget and under the wall-clock ceiling.
    pub fn may_continue(&self) -> bool {
        self.used() < self.deadline && self.call_started.elapsed() < self.deadline * WALL_FACTOR
    }
}

/// The parts of a plugin its host calls need.
#[derive(Debug)]
pub struct PluginMeta {
    pub name: String,
    /// Shared by the entries of one multi-hook component, so they share one instance.
    pub config: Arc<HashMap<String, String>>,
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

/// A plugin ready to decide: its pre-instantiated component and the export of each hook it
/// serves. Cloning is cheap and keeps the identity a request's store caches instances by.
#[derive(Clone)]
pub struct Prepared(Arc<PreparedInner>);

struct PreparedInner {
    pre: InstancePre<Ctx>,
    authorize: Option<authorize::AuthorizePolicyIndices>,
    sudo: Option<sudo::SudoPolicyIndices>,
    source: Option<source::SourcePolicyIndices>,
}

impl Prepared {
    /// Identity of the compiled component behind this plugin version.
    pub(super) fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    pub(super) fn instantiate(&self, store: &mut Store<Ctx>) -> wasmtime::Result<Instance> {
        self.0.pre.instantiate(store)
    }

    /// Calls `hook` on `instance` (an instance of this component).
    pub(super) fn call(
        &self,
        store: &mut Store<Ctx>,
        instance: &Instance,
        hook: Hook,
        request: &bindings::wit::Request,
    ) -> wasmtime::Result<bindings::wit::Decision> {
        let missing = || wasmtime::Error::msg(format!("no `{}` export", export_name(hook)));
        match hook {
            Hook::Authorize => self
                .0
                .authorize
                .as_ref()
                .ok_or_else(missing)?
                .load(&mut *store, instance)?
                .call_authorize(store, request),
            Hook::Sudo => self
                .0
                .sudo
                .as_ref()
                .ok_or_else(missing)?
                .load(&mut *store, instance)?
                .call_sudo(store, request),
            Hook::Source => self
                .0
                .source
                .as_ref()
                .ok_or_else(missing)?
                .load(&mut *store, instance)?
                .call_check_source(store, request),
        }
    }
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
        // Isolation between requests without fresh page faults: a freed memory or table
        // slot stays mapped, and only the pages the last instance dirtied are restored
        // (found with PAGEMAP_SCAN where the kernel has it, else the first bytes are reset
        // by memset), instead of madvise on free and a fault per page on next use.
        pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            // With resident slots the image is restored page by page on free, so keep it.
            .memory_init_cow(true)
            // Explicit bounds checks instead of guard pages: a memory that grew can be reused
            // as it is, where a guarded one needs an mprotect (and a TLB shootdown across the
            // process's threads) on every instantiation. The checks cost the guest little;
            // a policy does little memory work.
            .signals_based_traps(false)
            .memory_guard_size(0)
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

    fn exports(&self, component: &Component) -> Vec<String> {
        component
            .component_type()
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// The hooks a component serves, from its exports (a built-in component serves several).
    pub fn hooks_of(&self, component: &Component) -> Vec<Hook> {
        let exports = self.exports(component);
        [Hook::Authorize, Hook::Sudo, Hook::Source]
            .into_iter()
            .filter(|h| exports.iter().any(|e| e == export_name(*h)))
            .collect()
    }

    /// Which hook a component serves, from its exports (the first, if it serves several).
    pub fn world_of(&self, name: &str, component: &Component) -> Result<Hook, LoadError> {
        self.hooks_of(component)
            .first()
            .copied()
            .ok_or_else(|| LoadError::NoWorld(name.to_string()))
    }

    /// Links and pre-instantiates a component for `hook`.
    pub fn prepare(
        &self,
        name: &str,
        hook: Hook,
        component: &Component,
    ) -> Result<Prepared, LoadError> {
        if !self
            .exports(component)
            .iter()
            .any(|e| e == export_name(hook))
        {
            let found = self.world_of(name, component)?;
            return Err(LoadError::WrongWorld {
                plugin: name.into(),
                hook,
                expected: export_name(hook),
                found: format!("`{}`", export_name(found)),
            });
        }
        let link = |e: wasmtime::Error| LoadError::Link(name.into(), format!("{e:#}"));
        let pre = self.linker.instantiate_pre(component).map_err(link)?;
        // The hook asked for must type-check; any other hook the component exports is served
        // too (one instance then answers every hook of a request) if its types are right.
        let authorize = authorize::AuthorizePolicyIndices::new(&pre);
        let sudo = sudo::SudoPolicyIndices::new(&pre);
        let source = source::SourcePolicyIndices::new(&pre);
        match hook {
            Hook::Authorize => authorize.as_ref().map(|_| ()),
            Hook::Sudo => sudo.as_ref().map(|_| ()),
            Hook::Source => source.as_ref().map(|_| ()),
        }
        .map_err(|e| LoadError::Link(name.into(), format!("{e:#}")))?;
        let inner = PreparedInner {
            authorize: authorize.ok(),
            sudo: sudo.ok(),
            source: source.ok(),
            pre,
        };
        Ok(Prepared(Arc::new(inner)))
    }

    /// One decision in a store of its own (`sallyport plugin test`).
    pub fn decide(
        &self,
        prepared: &Prepared,
        meta: &Arc<PluginMeta>,
        limits: Limits,
        hook: Hook,
        r: &Request,
    ) -> Result<Decision, Fault> {
        let mut session = super::session::Session::new(self.engine.clone(), r);
        session.decide(prepared, meta, limits, hook)
    }
}

pub(super) fn classify(e: &wasmtime::Error) -> Fault {
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
