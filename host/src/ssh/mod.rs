//! The SSH forwarder: users log in to the gateway (`ssh <user>:<device>@gateway` with a
//! one-time key, or `ssh -p <port> <username>@gateway` for a transient access), and the gateway
//! logs in to the device with the device's stored credentials and bridges the two.
//!
//! - [`server`]: the user-facing half (russh server handler): login, device login, requests.
//! - [`conn`]: one connection from accept to close: limits, grace time, cutting, audit.
//! - [`client`]: the device-facing half (russh client): host-key verification and credential
//!   injection.
//! - [`bridge`]: one user channel ↔ one device channel, requests and data.
//! - [`live`]: live connections by session or access, so endings cut them.
//! - [`relay`]: channels the device opens back towards the user (agent, remote forwarding).
//! - [`transient`]: what a transient access of type `ssh` serves on its own port.
//! - [`limits`]: per-source penalties and the unauthenticated-connection cap.
//!
//! Every access decision goes through the issuer, which asks `policy`; nothing here decides.

mod bridge;
mod client;
mod conn;
mod hostkey;
mod limits;
mod live;
mod relay;
mod server;
mod transient;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cap_std::fs::Dir;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::config::ServerConfig;
use crate::issuer::{Issuer, Lifecycle};
use crate::lanes::Lanes;
use crate::tcp::listeners::Listeners;

pub(crate) use client::{DeviceError, DeviceLink};
pub use hostkey::HOST_KEY_FILE;

/// What can go wrong in the SSH forwarder.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("SSH protocol error: {0}")]
    Protocol(#[from] russh::Error),
    #[error("SSH key error: {0}")]
    Key(#[from] russh::keys::Error),
    #[error("SSH host key {HOST_KEY_FILE} in the data directory: {0}")]
    HostKey(String),
    #[error(transparent)]
    Issuer(#[from] crate::issuer::IssuerError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Settings taken from `[server]`.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Address the per-access listeners bind to (`transient_listen_ip`, as for Winbox).
    pub transient_ip: IpAddr,
    pub login_grace: Duration,
}

/// The SSH forwarder's shared state: one per gateway.
pub struct SshService {
    issuer: Arc<Issuer>,
    data: Arc<Dir>,
    server_config: Arc<russh::server::Config>,
    client_config: Arc<russh::client::Config>,
    limits: limits::Limits,
    live: live::Live,
    settings: Settings,
    /// Where accepted connections run (every task of one connection on one thread).
    lanes: Arc<Lanes>,
}

impl std::fmt::Debug for SshService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SshService {
    /// Loads (or generates, on first start) the gateway's host key from the data directory.
    pub fn new(
        issuer: Arc<Issuer>,
        data: Arc<Dir>,
        cfg: &ServerConfig,
        lanes: Arc<Lanes>,
    ) -> Result<Self, SshError> {
        let key = hostkey::load_or_generate(&data)?;
        let server_config = server::config(key);
        let client_config = client::config();
        Ok(Self {
            issuer,
            data,
            server_config: Arc::new(server_config),
            client_config: Arc::new(client_config),
            limits: limits::Limits::new(limits::LimitConfig {
                max_unauthenticated: cfg.ssh_max_unauthenticated,
                max_unauthenticated_per_source: cfg.ssh_max_unauthenticated_per_source,
                penalty_failures: cfg.ssh_penalty_failures,
                penalty: Duration::from_secs(cfg.ssh_penalty_secs),
            }),
            live: live::Live::default(),
            settings: Settings {
                transient_ip: cfg.transient_listen_ip,
                login_grace: Duration::from_secs(cfg.ssh_login_grace_secs),
            },
            lanes,
        })
    }

    /// Logs in to `device` with its credential for `level` (host key verified as for SSH
    /// logins); the web console's device half. `actor` and `source` are for audit rows.
    pub(crate) async fn connect_device(
        &self,
        device: &crate::directory::Device,
        level: crate::config::AccessLevel,
        actor: &str,
        source: &str,
    ) -> Result<DeviceLink, DeviceError> {
        // The web console has no client to forward agents or ports to.
        client::connect(self, device, level, actor, source, relay::Relay::default()).await
    }

    /// The SHA256 fingerprint of the gateway's host key, as OpenSSH prints it.
    pub fn host_key_fingerprint(&self) -> String {
        self.server_config
            .keys
            .first()
            .map(|k| {
                k.public_key()
                    .fingerprint(russh::keys::HashAlg::Sha256)
                    .to_string()
            })
            .unwrap_or_default()
    }
}

/// Serves SSH on `listener` and on the per-access ports of live transient accesses, cuts
/// connections whose session or access ends, until `shutdown` resolves; then disconnects every
/// connection with a message and waits up to 5 s for them to close.
pub async fn serve(
    service: Arc<SshService>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Subscribe before restoring listeners, so an access created meanwhile is not missed.
    let events = service.issuer.subscribe();
    let listener_events = service.issuer.subscribe();
    let transients = Arc::new(Listeners::new(
        service.issuer.clone(),
        Arc::new(transient::SshAccesses::new(
            service.clone(),
            stop_rx.clone(),
        )),
        service.settings.transient_ip,
        service.lanes.clone(),
    ));
    let listening = tokio::spawn(transients.run(listener_events, {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }));
    let watcher = tokio::spawn(watch_lifecycle(service.clone(), events, stop_rx.clone()));
    let accepting = conn::accept_loop(
        service.clone(),
        listener,
        server::Entry::OpenSession,
        stop_rx.clone(),
    );
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        _ = accepting => {}
    }
    let _ = stop_tx.send(true);
    let _ = listening.await;
    let _ = watcher.await;
    service.live.wait_idle(Duration::from_secs(5)).await;
}

/// Reacts to the issuer's lifecycle events: cut connections of ended sessions and accesses,
/// start and stop per-access listeners.
async fn watch_lifecycle(
    service: Arc<SshService>,
    mut events: broadcast::Receiver<Lifecycle>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(Lifecycle::SessionEnded { id }) => service.live.cut(
                &live::LiveKey::Session(id),
                "sallyport: the session was terminated",
            ),
            Ok(Lifecycle::TransientEnded { id }) => {
                service.live.cut(
                    &live::LiveKey::Transient(id),
                    "sallyport: the transient access was revoked or has expired",
                );
            }
            // The listeners follow the same events themselves.
            Ok(Lifecycle::TransientCreated { .. }) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // Events were lost: rebuild from the store, which is the truth.
                tracing::warn!(missed = n, "lifecycle events lagged; resynchronising");
                service.live.recheck(&service.issuer).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
