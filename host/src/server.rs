//! Assembling and running the gateway: open the data directory, build every component from the
//! configuration, then serve the API on a listener until shutdown.
//!
//! [`Gateway::open`] does everything that can fail at start (so errors surface before any port
//! is bound); [`run`] serves a listener the caller bound, which is what tests drive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use cap_std::fs::Dir;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::directory::{Directory, GeneratedPassword};
use crate::http_conn::{self, Watched};
use crate::issuer::seal::Sealer;
use crate::issuer::{self, Issuer, IssuerConfig};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::slots::Slots;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot open data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Seal(#[from] crate::issuer::seal::SealError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),
    #[error(transparent)]
    Provision(#[from] crate::provision::ProvisionError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("cannot start the connection threads: {0}")]
    Lanes(std::io::Error),
}

/// A gateway ready to serve.
pub struct Gateway {
    pub config: Config,
    pub policy: Arc<Policy>,
    pub issuer: Arc<Issuer>,
    pub metrics: Arc<Metrics>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The data directory handle every later file access goes through.
    pub data: Arc<Dir>,
    /// The SSH forwarder; serve it with [`crate::ssh::serve`].
    pub ssh: Arc<crate::ssh::SshService>,
    /// The threads forwarded connections run on (see [`crate::lanes`]).
    pub lanes: Arc<crate::lanes::Lanes>,
    store: Arc<SqliteStore>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// Opens the data directory and builds every component. Returns the passwords generated on
    /// this first start, for the caller to print once.
    pub fn open(config: Config) -> Result<(Self, Vec<GeneratedPassword>), StartError> {
        config.validate()?;
        let path = config.server.data_dir.clone();
        let data_err = |source| StartError::DataDir {
            path: path.display().to_string(),
            source,
        };
        // Owner-only when the gateway creates it: it holds the store (token hashes, the audit
        // trail), the sealing key and the host keys. An existing directory is left as it is.
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .map_err(data_err)?;
        }
        // The only ambient file-system access: from here on, everything goes through `data`.
        let data = Dir::open_ambient_dir(&path, cap_std::ambient_authority()).map_err(data_err)?;
        let (directory, generated) = Directory::build(&config, &data)?;
        let store = Arc::new(SqliteStore::open(&data)?);
        let sealer = Sealer::open(&data)?;
        let tls = if config.server.tls {
            Some(crate::tls::server_config(
                &data,
                &config.server.public_host,
            )?)
        } else {
            None
        };
        let metrics = Arc::new(Metrics::default());
        let provisioner = Arc::new(crate::provision::Provisioner::new(
            &config.devices,
            store.clone(),
        )?);
        let policy = Arc::new(Policy::load(&config, &data, metrics.clone())?);
        let ports = config.server.port_range();
        crate::tcp::ephemeral::warn_if_exposed(&ports);
        let issuer = Arc::new(
            Issuer::new(
                store.clone() as Arc<dyn Store>,
                Arc::new(directory),
                policy.clone(),
                sealer,
                metrics.clone(),
                IssuerConfig {
                    ports: crate::store::PortPool::listening_on(
                        ports,
                        config.server.transient_listen_ip,
                    ),
                    public_host: config.server.public_host.clone(),
                    max_otk_duration_secs: config.server.max_otk_duration_secs,
                    ticket_ttl_secs: config.server.ticket_ttl_secs,
                },
            )
            .with_provisioner(provisioner.clone()),
        );
        let data = Arc::new(data);
        let lanes = Arc::new(crate::lanes::Lanes::per_cpu().map_err(StartError::Lanes)?);
        let ssh = Arc::new(crate::ssh::SshService::new(
            issuer.clone(),
            data.clone(),
            &config.server,
            lanes.clone(),
        )?);
        Ok((
            Self {
                config,
                policy,
                issuer,
                metrics,
                tls,
                data,
                ssh,
                lanes,
                store,
            },
            generated,
        ))
    }

    pub fn app_state(&self) -> AppState {
        AppState {
            issuer: self.issuer.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Flushes and closes the store; call after serving has stopped.
    pub fn close(&self) {
        self.store.close();
    }
}

/// Serves the API on `listener` (HTTPS when the gateway has TLS) and runs the expiry sweeper,
/// until `shutdown` resolves; then stops accepting and gives open connections 5 s to finish.
pub async fn run(
    gateway: &Gateway,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let web = crate::web::WebState::new(gateway.issuer.clone(), gateway.ssh.clone());
    let app = api::router(gateway.app_state()).merge(crate::web::router(web.clone()));
    // Policy decisions and connection starts and ends are audited without making anything
    // wait: the rows are collected for a moment and join one group commit.
    let (audit_tx, audit_rx) = tokio::sync::mpsc::unbounded_channel();
    gateway.policy.set_audit_sink(audit_tx.clone());
    gateway.issuer.set_audit_sink(audit_tx);
    let (audit_stop_tx, audit_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let audit_drain = tokio::spawn(crate::audit::drain(
        audit_rx,
        gateway.issuer.store().clone(),
        async move {
            let _ = audit_stop_rx.await;
        },
    ));
    let acceptor = gateway.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(http_conn::HEADER_TIMEOUT);
    let api_slots = Slots::default();
    let max_per_source = gateway.config.server.api_max_connections_per_source;
    let graceful = GracefulShutdown::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let sweeper = tokio::spawn(issuer::run_sweeper(
        gateway.issuer.clone(),
        Duration::from_millis(gateway.config.server.sweep_interval_ms),
        async move {
            let mut rx = stop_rx;
            let _ = rx.changed().await;
        },
    ));
    let winbox = tokio::spawn(crate::tcp::serve_winbox(
        gateway.issuer.clone(),
        gateway.lanes.clone(),
        gateway.config.server.transient_listen_ip,
        stopped(stop_tx.subscribe()),
    ));
    let consoles = tokio::spawn(crate::web::watch_lifecycle(
        web,
        stopped(stop_tx.subscribe()),
    ));
    let removals = gateway.issuer.provisioner().cloned().map(|p| {
        tokio::spawn(crate::provision::run(
            p,
            gateway.issuer.subscribe(),
            stopped(stop_tx.subscribe()),
        ))
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Usually EMFILE under overload: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (slot, taken) = api_slots.take(peer.ip());
        if taken.before_from_source >= max_per_source {
            tracing::debug!(%peer, "API connection refused: too many open from this source");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let service =
            app.clone()
                .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    req
                });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let (stream, activity) = Watched::new(stream);
            let serve = async {
                match acceptor {
                    Some(acceptor) => {
                        let tls = match tokio::time::timeout(
                            Duration::from_secs(10),
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return Ok(());
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return Ok(());
                            }
                        };
                        watcher
                            .watch(
                                builder
                                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                                    .into_owned(),
                            )
                            .await
                    }
                    None => {
                        watcher
                            .watch(
                                builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .into_owned(),
                            )
                            .await
                    }
                }
            };
            let result = tokio::select! {
                r = serve => r,
                () = activity.idle(http_conn::IDLE_TIMEOUT) => {
                    tracing::debug!(%peer, "API connection closed: idle");
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(());
    let _ = sweeper.await;
    let _ = winbox.await;
    let _ = consoles.await;
    if let Some(r) = removals {
        let _ = r.await;
    }
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 5 s; closing them");
    }
    // Last: the rows of everything that ended above.
    let _ = audit_stop_tx.send(());
    let _ = audit_drain.await;
}

/// Resolves when the gateway's stop signal is sent (or its sender is gone).
async fn stopped(mut rx: tokio::sync::watch::Receiver<()>) {
    let _ = rx.changed().await;
}
