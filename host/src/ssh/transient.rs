//! Per-access listeners for transient accesses of type `ssh`: the generic per-access listeners
//! of [`crate::tcp::listeners`] (opened when the access is created, restored at start, retried
//! while the port is held by another socket, closed when the access is revoked or expires),
//! each serving SSH logins with the access's username and password. Live connections of an
//! access that ended are cut by the SSH service's lifecycle watcher, with a message.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::SshService;
use super::conn::accept_loop;
use super::server::Entry;
use crate::store::{TransientAccess, TransientKind};
use crate::tcp::listeners::{AccessHandler, Ended};

/// Serves SSH on the port of each live SSH access.
pub struct SshAccesses {
    service: Arc<SshService>,
    /// The gateway is stopping: accept loops end.
    stop: watch::Receiver<bool>,
}

impl SshAccesses {
    pub fn new(service: Arc<SshService>, stop: watch::Receiver<bool>) -> Self {
        Self { service, stop }
    }
}

impl AccessHandler for SshAccesses {
    const KIND: TransientKind = TransientKind::Ssh;

    fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        access: Arc<TransientAccess>,
        _ended: watch::Receiver<Ended>,
    ) -> impl Future<Output = ()> + Send + 'static {
        accept_loop(
            self.service.clone(),
            listener,
            Entry::Transient(access),
            self.stop.clone(),
        )
    }
}
