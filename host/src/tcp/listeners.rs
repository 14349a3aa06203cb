//! Per-access listeners, generic over what is served on them: each live transient access of one
//! type gets a listener on its allocated port, opened when the access is created (or at start,
//! for accesses that were live when the gateway stopped) and closed when it ends. The store is
//! the truth: [`Listeners::sync`] makes the set of listeners match the live accesses, and the
//! issuer's lifecycle events say when to look.
//!
//! A port that cannot be bound (usually held by another socket: the transient range overlaps
//! the kernel's ephemeral ports unless `net.ipv4.ip_local_reserved_ports` excludes it) is
//! audited once and retried every second until the access ends.
//!
//! Each open listener (and each failed first attempt) is reported to the issuer's
//! [`crate::issuer::listening`], so the answer that created the access goes out once its port
//! accepts connections, and the gateway announces itself only after restoring listeners.
//!
//! Closing an access's listener also sets its `ended` signal ([`Ended`]), which every connection
//! accepted on it watches, so ending an access (or stopping the gateway) cuts its connections,
//! and says which of the two it was. The Winbox forwarder serves raw TCP
//! ([`super::winbox`]), the SSH forwarder SSH logins (`ssh::transient`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::audit::{self, now_ms};
use crate::issuer::{Issuer, Lifecycle};
use crate::lanes::Lanes;
use crate::store::{AuditEvent, TransientAccess, TransientKind};

/// How often listeners that could not bind are tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What a kind of access serves on its listener.
pub trait AccessHandler: Send + Sync + 'static {
    /// The accesses this handler serves.
    const KIND: TransientKind;

    /// Serves `listener` for `access` until the returned future is dropped. `ended` leaves
    /// [`Ended::No`] when the access ends or the gateway stops; every connection accepted must
    /// end then too.
    fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        access: Arc<TransientAccess>,
        ended: watch::Receiver<Ended>,
    ) -> impl Future<Output = ()> + Send + 'static;
}

struct Open {
    task: JoinHandle<()>,
    ended: watch::Sender<Ended>,
}

/// Why the connections of an access's listener are being cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ended {
    /// Not cut: the access is live.
    #[default]
    No,
    /// The access expired or was revoked.
    Access,
    /// The gateway is stopping; the access stays live and is restored at the next start.
    Shutdown,
}

/// The listeners of one kind of access, by access id.
pub struct Listeners<H> {
    issuer: Arc<Issuer>,
    handler: Arc<H>,
    bind_ip: IpAddr,
    /// Each listener, and every connection it accepts, runs on one lane.
    lanes: Arc<Lanes>,
    open: Mutex<HashMap<uuid::Uuid, Open>>,
    /// Serialises `sync` so two concurrent runs do not both bind one port.
    syncing: tokio::sync::Mutex<()>,
    /// A bind failed (usually the port is held by some other socket, e.g. an outgoing
    /// connection given it as its ephemeral port); `run` retries until it succeeds.
    failed: Mutex<HashSet<uuid::Uuid>>,
}

impl<H> std::fmt::Debug for Listeners<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("bind_ip", &self.bind_ip)
            .field("open", &self.open.lock().len())
            .finish_non_exhaustive()
    }
}

impl<H: AccessHandler> Listeners<H> {
    pub fn new(issuer: Arc<Issuer>, handler: Arc<H>, bind_ip: IpAddr, lanes: Arc<Lanes>) -> Self {
        Self {
            issuer,
            handler,
            bind_ip,
            lanes,
            open: Mutex::new(HashMap::new()),
            syncing: tokio::sync::Mutex::new(()),
            failed: Mutex::new(HashSet::new()),
        }
    }

    /// Number of listeners open now.
    pub fn open_count(&self) -> usize {
        self.open.lock().len()
    }

    /// Opens a listener for every live access of this kind that has none, and closes those of
    /// accesses that are no longer live.
    pub async fn sync(&self) {
        let _one_at_a_time = self.syncing.lock().await;
        let live = match self.issuer.store().live_transients(now_ms()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot list live transient accesses");
                return;
            }
        };
        let live: Vec<TransientAccess> = live.into_iter().filter(|a| a.kind == H::KIND).collect();
        self.failed
            .lock()
            .retain(|id| live.iter().any(|a| &a.id == id));
        let stale: Vec<uuid::Uuid> = self
            .open
            .lock()
            .iter()
            .filter(|(id, o)| !live.iter().any(|a| &a.id == *id) || o.task.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.close(id).await;
        }
        for access in live {
            if self.open.lock().contains_key(&access.id) {
                // Opened by an earlier pass, maybe before its creator began to wait for it.
                self.issuer.listening().opened(access.id);
            } else {
                self.open_one(access).await;
            }
        }
    }

    async fn open_one(&self, access: TransientAccess) {
        let addr = SocketAddr::new(self.bind_ip, access.port);
        // Bound here and registered on the lane that serves it (a tokio socket belongs to the
        // runtime that registered it). std sets SO_REUSEADDR as tokio does, so a port is
        // free again as soon as the listener that had it closes.
        let bound = std::net::TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        });
        match bound {
            Ok(listener) => {
                tracing::info!(access = %access.id, kind = H::KIND.as_str(), %addr, "transient listener open");
                self.failed.lock().remove(&access.id);
                let (ended, ended_rx) = watch::channel(Ended::No);
                let (handler, access_arc) = (self.handler.clone(), Arc::new(access.clone()));
                let task = self.lanes.spawn(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => handler.serve(listener, access_arc, ended_rx).await,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot register a transient listener")
                        }
                    }
                });
                self.open.lock().insert(access.id, Open { task, ended });
                self.issuer.listening().opened(access.id);
            }
            Err(e) => {
                // The answer creating the access need not wait for the retries.
                self.issuer.listening().opened(access.id);
                // Logged and audited once per access, not once per retry.
                if !self.failed.lock().insert(access.id) {
                    tracing::debug!(access = %access.id, %addr, error = %e, "still cannot listen");
                    return;
                }
                tracing::warn!(access = %access.id, %addr, error = %e, "cannot listen; retrying every second until it can or the access ends");
                let event = AuditEvent {
                    subject: Some(access.username.clone()),
                    device: Some(access.device.clone()),
                    object: Some(access.id.to_string()),
                    reason: Some(format!("cannot listen on {addr}: {e}")),
                    ..audit::event(now_ms(), "transient.listen_failed", None, "error")
                };
                if let Err(err) = self.issuer.audit_event(event).await {
                    tracing::error!(error = %err, "cannot audit a listener failure");
                }
            }
        }
    }

    /// Closes the listener of an access and cuts its connections. Returns once the port is
    /// released, so a new access may bind it right away.
    pub async fn close(&self, id: uuid::Uuid) {
        self.close_as(id, Ended::Access).await;
    }

    async fn close_as(&self, id: uuid::Uuid, why: Ended) {
        let Some(open) = self.open.lock().remove(&id) else {
            return;
        };
        open.task.abort();
        // The listener is dropped with the task; wait for that (a task mid-poll finishes it)
        // before cutting the connections, so that once a client sees its connection cut, the
        // port no longer accepts.
        if tokio::time::timeout(Duration::from_secs(1), open.task)
            .await
            .is_err()
        {
            tracing::warn!(access = %id, "listener task slow to stop");
        }
        open.ended.send_replace(why);
        tracing::info!(access = %id, kind = H::KIND.as_str(), "transient listener closed");
    }

    pub async fn close_all(&self) {
        let ids: Vec<uuid::Uuid> = self.open.lock().keys().copied().collect();
        for id in ids {
            self.close_as(id, Ended::Shutdown).await;
        }
    }

    /// Restores the listeners of live accesses, then follows the issuer's lifecycle events
    /// until `shutdown` resolves, when every listener closes and every connection is cut.
    /// Subscribe `events` before calling, so an access created meanwhile is not missed.
    pub async fn run(
        self: Arc<Self>,
        mut events: broadcast::Receiver<Lifecycle>,
        shutdown: impl Future<Output = ()>,
    ) {
        let issuer = self.issuer.clone();
        let _serving = issuer.listening().serve(H::KIND);
        self.sync().await;
        issuer.listening().mark_restored(H::KIND);
        tokio::pin!(shutdown);
        let mut retry = tokio::time::interval(RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                _ = &mut shutdown => break,
                e = events.recv() => e,
                _ = retry.tick() => {
                    if !self.failed.lock().is_empty() {
                        self.sync().await;
                    }
                    continue;
                }
            };
            match event {
                Ok(Lifecycle::TransientEnded { id }) => self.close(id).await,
                Ok(Lifecycle::TransientCreated { .. }) => self.sync().await,
                Ok(Lifecycle::SessionEnded { .. }) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // Events were lost: rebuild from the store, which is the truth.
                    tracing::warn!(missed = n, "lifecycle events lagged; resynchronising");
                    self.sync().await;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        self.close_all().await;
    }
}
