//! The epoch ticker behind plugin deadlines, awake only while a plugin runs.
//!
//! wasmtime interrupts a guest when the engine's epoch passes the store's deadline, so the
//! epoch must advance while a call is in progress, once per [`TICK`]. A thread that ticked
//! forever would wake the machine a thousand times a second even when the gateway is idle,
//! which on a VM means a trip through the hypervisor each time and noise for everything else
//! the gateway does (bulk forwarding, connect latency). So the ticker parks whenever no call
//! is running, and the first call to start unparks it: [`Ticker::running`] counts calls in
//! progress.
//!
//! Unparking a thread that is not parked is one atomic swap, no system call, so under load
//! (the ticker never gets to park) a call pays only the two counter updates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// Epoch ticks per millisecond of deadline: the epoch advances every millisecond.
pub const TICK: Duration = Duration::from_millis(1);

/// The ticker thread and the count of calls it serves.
#[derive(Debug)]
pub struct Ticker {
    running: AtomicUsize,
    stop: AtomicBool,
    ticks: AtomicU64,
    thread: Thread,
}

impl Ticker {
    /// Starts the ticker thread for `engine`; it stops when the returned handle is dropped.
    pub fn start(engine: Engine) -> std::io::Result<TickerHandle> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Ticker>>(1);
        let handle = std::thread::Builder::new()
            .name("sallyport-epoch".into())
            .spawn(move || {
                if let Ok(ticker) = rx.recv() {
                    ticker.serve(&engine);
                }
            })?;
        let ticker = Arc::new(Ticker {
            running: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            thread: handle.thread().clone(),
        });
        tx.send(ticker.clone())
            .map_err(|_| std::io::Error::other("the epoch ticker thread ended at start"))?;
        Ok(TickerHandle(ticker))
    }

    fn serve(&self, engine: &Engine) {
        while !self.stop.load(Ordering::SeqCst) {
            if self.running.load(Ordering::SeqCst) == 0 {
                // A call that starts after the check above unparks us (a token is kept if
                // it does so before we park), so no wake-up is lost.
                std::thread::park();
                continue;
            }
            std::thread::sleep(TICK);
            engine.increment_epoch();
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks a plugin call as running until the guard is dropped.
    pub fn running(&self) -> Running<'_> {
        if self.running.fetch_add(1, Ordering::SeqCst) == 0 {
            self.thread.unpark();
        }
        Running(self)
    }

    /// Epochs this ticker has advanced.
    #[cfg(test)]
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
}

/// A call in progress; the ticker may park once none is left.
#[derive(Debug)]
pub struct Running<'t>(&'t Ticker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Owner of the ticker: dropping it stops the thread.
#[derive(Debug)]
pub struct TickerHandle(Arc<Ticker>);

impl TickerHandle {
    pub fn ticker(&self) -> &Arc<Ticker> {
        &self.0
    }
}

impl Drop for TickerHandle {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.thread.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_only_while_a_call_runs() {
        let engine = Engine::default();
        let handle = Ticker::start(engine).unwrap();
        let t = handle.ticker();
        std::thread::sleep(TICK * 30);
        assert_eq!(t.ticks(), 0, "no call ran, so the ticker stayed parked");

        let running = t.running();
        std::thread::sleep(TICK * 30);
        let during = t.ticks();
        assert!(during >= 5, "a running call is ticked for: {during}");
        drop(running);

        // The tick in progress when the call ended may still land; none after it.
        std::thread::sleep(TICK * 10);
        let after = t.ticks();
        std::thread::sleep(TICK * 30);
        assert_eq!(t.ticks(), after, "parked again once no call runs");

        // Nested and overlapping calls keep it awake until the last one ends.
        let a = t.running();
        let b = t.running();
        drop(a);
        std::thread::sleep(TICK * 20);
        assert!(t.ticks() > after, "still one call running");
        drop(b);
    }
}
