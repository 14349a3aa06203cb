//! Connection lanes: a few threads, each running its own single-threaded tokio runtime, that
//! carry the forwarded connections (SSH sessions, Winbox listeners and their connections).
//!
//! Why not the gateway's shared multi-threaded runtime: a forwarded connection is a chain of
//! tasks that wake each other for every packet — for SSH the user-side russh session, the
//! device-side russh session and the bridge between them; for Winbox the accept, the policy
//! decision, the device connect and the two copy directions. On the shared runtime those
//! wake-ups cross threads (a parked worker is woken with a futex and steals the task), and on
//! the 2-vCPU machines this runs on that costs more than the work. On a lane every task of one
//! connection stays on one thread, so a wake-up is a queue push: the gateway moved ~11 % more
//! SSH bulk data (BENCHMARKS.md, *SSH forwarder*, "connection lanes"). Each new connection (or Winbox listener) goes to the lane with the
//! fewest live tasks, so many connections still use every core.
//!
//! A lane runs until [`Lanes`] is dropped; tasks still running then are dropped with it.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The lanes of one gateway.
pub struct Lanes {
    lanes: Vec<Lane>,
}

struct Lane {
    handle: tokio::runtime::Handle,
    /// Tasks spawned on this lane and not yet finished.
    live: Arc<AtomicUsize>,
    /// Dropping it stops the lane's thread.
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.load()).finish()
    }
}

/// Counts a task out of its lane however it ends (finished, failed or aborted).
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lanes {
    /// Starts `n` lanes (at least one).
    pub fn new(n: usize) -> io::Result<Self> {
        let lanes = (0..n.max(1))
            .map(|i| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let handle = runtime.handle().clone();
                let (stop, stopped) = oneshot::channel::<()>();
                std::thread::Builder::new()
                    .name(format!("sallyport-lane-{i}"))
                    .spawn(move || {
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                    })?;
                Ok(Lane {
                    handle,
                    live: Arc::new(AtomicUsize::new(0)),
                    _stop: stop,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { lanes })
    }

    /// One lane per CPU the process may use.
    pub fn per_cpu() -> io::Result<Self> {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Live tasks per lane, in lane order.
    pub fn load(&self) -> Vec<usize> {
        self.lanes
            .iter()
            .map(|l| l.live.load(Ordering::Relaxed))
            .collect()
    }

    fn least_loaded(&self) -> Option<&Lane> {
        self.lanes
            .iter()
            .min_by_key(|l| l.live.load(Ordering::Relaxed))
    }

    /// Runs `task` on the least-loaded lane; what it spawns stays on that lane.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.least_loaded() {
            Some(lane) => {
                lane.live.fetch_add(1, Ordering::Relaxed);
                let guard = LiveGuard(lane.live.clone());
                lane.handle.spawn(async move {
                    let _guard = guard;
                    task.await
                })
            }
            // `new` makes at least one lane; the current runtime is the only other choice.
            None => tokio::spawn(task),
        }
    }

    /// Moves an accepted connection to the least-loaded lane and runs `serve` with it there.
    /// A tokio socket belongs to the runtime that registered it, so it is handed over as a
    /// std socket and registered again on the lane.
    pub fn spawn_connection<F, Fut>(&self, stream: TcpStream, serve: F) -> io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stream = stream.into_std()?;
        self.spawn(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::warn!(error = %e, "cannot move a connection to its lane"),
            }
        });
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_task_and_what_it_spawns_run_on_one_lane_thread() {
        let lanes = Lanes::new(2).unwrap();
        let names = lanes
            .spawn(async {
                let outer = std::thread::current().name().map(str::to_string);
                let inner =
                    tokio::spawn(async { std::thread::current().name().map(str::to_string) })
                        .await
                        .unwrap();
                (outer, inner)
            })
            .await
            .unwrap();
        let outer = names.0.unwrap();
        assert!(outer.starts_with("sallyport-lane-"), "{outer}");
        assert_eq!(Some(outer), names.1);
        // Finished tasks are counted out.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(lanes.load(), vec![0, 0]);
    }

    #[tokio::test]
    async fn new_tasks_go_to_the_least_loaded_lane_and_aborted_ones_are_counted_out() {
        let lanes = Lanes::new(2).unwrap();
        let first = lanes.spawn(std::future::pending::<()>());
        let second = lanes.spawn(std::future::pending::<()>());
        assert_eq!(lanes.load(), vec![1, 1]);
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(lanes.load(), vec![0, 1]);
        let third = lanes.spawn(std::future::pending::<()>());
        assert_eq!(lanes.load(), vec![1, 1]);
        second.abort();
        third.abort();
    }

    #[tokio::test]
    async fn a_connection_moved_to_a_lane_keeps_working() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lanes = Lanes::new(1).unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"ping").await.unwrap();
            let mut back = [0u8; 4];
            s.read_exact(&mut back).await.unwrap();
            back
        });
        let (stream, _) = listener.accept().await.unwrap();
        lanes
            .spawn_connection(stream, |mut s| async move {
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
            })
            .unwrap();
        assert_eq!(&client.await.unwrap(), b"ping");
    }
}
