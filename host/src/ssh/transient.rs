//! Per-access listeners for transient accesses of type `ssh`: each live access gets its own
//! listener on its allocated port, opened when the access is created (or at start, for
//! accesses that were live when the gateway stopped) and closed when it is revoked or expires.
//! The store is the truth: [`Transients::sync`] makes the set of listeners match it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::SshService;
use super::conn::accept_loop;
use super::server::Entry;
use crate::audit::{self, now_ms};
use crate::store::{AuditEvent, TransientAccess, TransientKind};

/// The listeners, by access id.
pub struct Transients {
    service: Arc<SshService>,
    stop: watch::Receiver<bool>,
    listeners: Mutex<HashMap<uuid::Uuid, JoinHandle<()>>>,
    /// Serialises `sync` so two concurrent runs do not both bind one port.
    syncing: tokio::sync::Mutex<()>,
}

impl Transients {
    pub fn new(service: Arc<SshService>, stop: watch::Receiver<bool>) -> Self {
        Self {
            service,
            stop,
            listeners: Mutex::new(HashMap::new()),
            syncing: tokio::sync::Mutex::new(()),
        }
    }

    /// Opens a listener for every live SSH access that has none, and closes listeners of
    /// accesses that are no longer live.
    pub async fn sync(&self) {
        let _one_at_a_time = self.syncing.lock().await;
        let live = match self.service.issuer.store().live_transients(now_ms()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot list live transient accesses");
                return;
            }
        };
        let live: Vec<TransientAccess> = live
            .into_iter()
            .filter(|a| a.kind == TransientKind::Ssh)
            .collect();
        {
            let mut listeners = self.listeners.lock();
            listeners.retain(|id, task| {
                let keep = live.iter().any(|a| &a.id == id) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
        }
        for access in live {
            if self.listeners.lock().contains_key(&access.id) {
                continue;
            }
            self.open(&access).await;
        }
    }

    async fn open(&self, access: &TransientAccess) {
        let addr = SocketAddr::new(self.service.settings.bind_ip, access.port);
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(access = %access.id, %addr, "transient SSH listener open");
                let task = tokio::spawn(accept_loop(
                    self.service.clone(),
                    listener,
                    Entry::Transient { port: access.port },
                    self.stop.clone(),
                ));
                self.listeners.lock().insert(access.id, task);
            }
            Err(e) => {
                let event = AuditEvent {
                    subject: Some(access.username.clone()),
                    device: Some(access.device.clone()),
                    object: Some(access.id.to_string()),
                    reason: Some(format!("cannot listen on {addr}: {e}")),
                    ..audit::event(now_ms(), "ssh.transient_listen_failed", None, "error")
                };
                if let Err(err) = self.service.issuer.audit_event(event).await {
                    tracing::error!(error = %err, "cannot audit a listener failure");
                }
            }
        }
    }

    /// Closes the listener of an access (its live connections are cut separately).
    pub fn close(&self, id: uuid::Uuid) {
        if let Some(task) = self.listeners.lock().remove(&id) {
            task.abort();
            tracing::info!(access = %id, "transient SSH listener closed");
        }
    }

    pub fn close_all(&self) {
        for (_, task) in self.listeners.lock().drain() {
            task.abort();
        }
    }
}
