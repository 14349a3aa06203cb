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
//! clock against a mark of that clock taken on this thread at most a millisecond before the
//! request ([`CallClock`], [`cpu_mark`]). A guest that has not used its budget (the thread was
//! descheduled on a busy machine) continues; one that has, traps. A call is also stopped after
//! 20 times its deadline in wall time, so a starved machine cannot hold a decision forever.
//!
//! Plugins see only the `host` interface (log, their own config). Components built by
//! componentize-py import WASI; they get a locked-down WASI context built on first use: no
//! preopened directories, no network, no environment, no arguments, a clock fixed at the
//! request's `now`.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreLimits,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, authorize, source, sudo};
use super::ticker::{Ticker, TickerHandle};
use super::{Decision, Request};
use crate::config::Hook;

/// Bytes of each pooled linear memory / table kept mapped between instances (reset in place).
const KEEP_RESIDENT_MEMORY: usize = 256 << 10;
const KEEP_RESIDENT_TABLE: usize = 16 << 10;
/// Wall-clock ceiling of a call, as a multiple of its CPU deadline.
const WALL_FACTOR: u32 = 20;

/// How old a thread's CPU mark may be before a new request reads the CPU clock again. The
/// clock is a system call (about 1 µs here, a twentieth of a request's decisions); an older
/// mark only loosens the bound by the time the thread slept since it, so at most this much.
const MARK_MAX_AGE: Duration = Duration::from_millis(1);

/// This thread's CPU clock and the wall clock, read together.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuMark {
    pub cpu: Duration,
    pub wall: Instant,
}

thread_local! {
    static MARK: Cell<Option<CpuMark>> = const { Cell::new(None) };
}

/// A mark of this thread's CPU clock no older than [`MARK_MAX_AGE`] at `now`.
pub(super) fn cpu_mark(now: Instant) -> CpuMark {
    MARK.with(|m| match m.get() {
        Some(mark) if now.saturating_duration_since(mark.wall) < MARK_MAX_AGE => mark,
        _ => {
            // Wall first: reading the CPU clock after it can only make the bound smaller.
            let wall = Instant::now();
            let mark = CpuMark {
                cpu: thread_cpu(),
                wall,
            };
            m.set(Some(mark));
            mark
        }
    })
}

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
    #[error(
        "{0}: its `{1}` export does not have the type of sallyport:policy@0.1.0 (built against another version of the WIT?): {2}"
    )]
    ExportType(String, &'static str, String),
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
    /// This thread's CPU and wall clocks, read together before the request's store was made.
    pub mark: CpuMark,
    /// Wall time when the current call (or instantiation) started.
    pub call_started: Instant,
    /// The current call's CPU budget.
    pub deadline: Duration,
}

impl CallClock {
    /// A lower bound of the CPU time the current call has used: the CPU this thread used since
    /// the mark, minus the wall time that passed from the mark until the call began (a thread
    /// cannot use more CPU than wall time, so that part covers every earlier call, the host
    /// work between them, and whatever the thread did before the request). The store never
    /// leaves its thread (`Session` is not `Send`), so the mark is of the same clock.
    fn used(&self) -> Duration {
        thread_cpu()
            .saturating_sub(self.mark.cpu)
            .saturating_sub(self.call_started.saturating_duration_since(self.mark.wall))
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
    /// Whether this component exports `hook` with the right types.
    pub fn serves(&self, hook: Hook) -> bool {
        match hook {
            Hook::Authorize => self.0.authorize.is_some(),
            Hook::Sudo => self.0.sudo.is_some(),
            Hook::Source => self.0.source.is_some(),
        }
    }

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
    ticker: TickerHandle,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyEngine")
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
        let ticker = Ticker::start(engine.clone())
            .map_err(|e| LoadError::Engine(format!("cannot start epoch ticker: {e}")))?;
        Ok(Self {
            engine,
            linker,
            ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn ticker(&self) -> &Arc<Ticker> {
        self.ticker.ticker()
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
        Hook::ALL
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

    /// Why a component that exports `hook` cannot serve it (the export has the wrong type):
    /// the error preparing it for that hook alone.
    pub fn unserved_cause(&self, name: &str, hook: Hook, component: &Component) -> String {
        match self.prepare(name, hook, component) {
            Err(e) => e.to_string(),
            Ok(_) => format!("{name}: cannot serve the {} hook", hook.as_str()),
        }
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
        .map_err(|e| LoadError::ExportType(name.into(), export_name(hook), format!("{e:#}")))?;
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
        let mut session = super::session::Session::new(self, r);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Spins until this thread has used `d` more CPU.
    fn burn(d: Duration) {
        let start = thread_cpu();
        while thread_cpu().saturating_sub(start) < d {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn a_recent_cpu_mark_is_reused_and_an_old_one_renewed() {
        let a = cpu_mark(Instant::now());
        let b = cpu_mark(Instant::now());
        assert_eq!(
            a.wall, b.wall,
            "a mark younger than {MARK_MAX_AGE:?} is reused"
        );
        std::thread::sleep(MARK_MAX_AGE * 2);
        let c = cpu_mark(Instant::now());
        assert!(c.wall > a.wall, "an older one is read again");
    }

    #[test]
    fn the_deadline_counts_the_cpu_a_call_burns_and_never_more() {
        let mark = cpu_mark(Instant::now());
        let clock = CallClock {
            mark,
            call_started: Instant::now(),
            deadline: Duration::from_millis(20),
        };
        burn(Duration::from_millis(5));
        let used = clock.used();
        let actual = thread_cpu().saturating_sub(mark.cpu);
        assert!(used >= Duration::from_millis(4), "{used:?}");
        assert!(used <= actual, "{used:?} > {actual:?}");
        assert!(clock.may_continue());
        burn(Duration::from_millis(20));
        assert!(!clock.may_continue(), "{:?}", clock.used());

        // Wall time before the call (sleeping here) is never counted against it.
        let mark = cpu_mark(Instant::now());
        std::thread::sleep(Duration::from_millis(5));
        let clock = CallClock {
            mark,
            call_started: Instant::now(),
            deadline: Duration::from_millis(20),
        };
        assert!(
            clock.used() < Duration::from_millis(1),
            "{:?}",
            clock.used()
        );
    }
}
