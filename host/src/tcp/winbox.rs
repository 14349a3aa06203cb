//! The Winbox handler: every connection accepted on an access's port is checked by the policy
//! (`source` and `authorize`, action `connect`, protocol `winbox`, the peer's address) and, if
//! allowed, spliced to the device's `winbox` address until either side closes, the access
//! ends, or the policy's grant runs out (`max-ttl-seconds`, counted from the connection's
//! start). Winbox itself authenticates on the device, with the user the provisioner created,
//! so a grant that caps a full access to read-only is a refusal (decided in the issuer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::TcpError;
use super::listeners::{AccessHandler, Ended};
use super::splice::{self, BufferPool, Counters};
use crate::audit::{self, now_ms};
use crate::issuer::Issuer;
use crate::store::{AuditEvent, TransientAccess, TransientKind};

/// How long the device has to accept the gateway's connection.
const DEVICE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared by every Winbox listener.
#[derive(Debug)]
pub struct Winbox {
    issuer: Arc<Issuer>,
    pool: BufferPool,
}

impl Winbox {
    pub fn new(issuer: Arc<Issuer>) -> Self {
        Self {
            issuer,
            pool: BufferPool::default(),
        }
    }
}

impl AccessHandler for Winbox {
    const KIND: TransientKind = TransientKind::Winbox;

    async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        access: Arc<TransientAccess>,
        ended: watch::Receiver<Ended>,
    ) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Usually EMFILE under overload: back off instead of spinning.
                    tracing::warn!(error = %e, "winbox accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            tokio::spawn(
                self.clone()
                    .connection(stream, peer, access.clone(), ended.clone()),
            );
        }
    }
}

/// Resolves when the access has ended or the gateway stops (or its listener manager is gone).
async fn until_ended(ended: &mut watch::Receiver<Ended>) -> Ended {
    match ended.wait_for(|e| *e != Ended::No).await {
        Ok(why) => *why,
        Err(_) => Ended::Shutdown,
    }
}

impl Winbox {
    async fn connection(
        self: Arc<Self>,
        client: TcpStream,
        peer: SocketAddr,
        access: Arc<TransientAccess>,
        mut ended: watch::Receiver<Ended>,
    ) {
        // A refusal is audited by the issuer; dropping the stream closes it at once.
        let Ok(grant) = self.issuer.connect_winbox(&access, peer.ip()).await else {
            return;
        };
        let max_session = grant
            .max_session_seconds
            .map(|s| Duration::from_secs(s.into()));
        let device = tokio::select! {
            _ = until_ended(&mut ended) => return,
            d = self.connect_device(&access) => d,
        };
        let device = match device {
            Ok(d) => d,
            Err(e) => {
                self.audit(
                    &access,
                    peer,
                    "winbox.device_unreachable",
                    "error",
                    e.to_string(),
                )
                .await;
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = device.set_nodelay(true);
        let started = Instant::now();
        // The start and end rows join a batch: connecting never waits on a commit.
        self.issuer.audit_later(self.event(
            &access,
            peer,
            "winbox.connected",
            "allow",
            String::new(),
        ));
        let counters = Counters::default();
        let too_long = async {
            match max_session {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let (how, outcome) = tokio::select! {
            why = until_ended(&mut ended) => (
                match why {
                    Ended::Shutdown => "cut: the gateway is stopping (the access stays live)",
                    _ => "cut: the access ended",
                }
                .to_string(),
                "cut",
            ),
            _ = too_long => (
                "cut: the connection reached the longest time its policy allows".to_string(),
                "cut",
            ),
            r = splice::forward(client, device, &self.pool, &counters) => match r {
                Ok(()) => ("closed".to_string(), "ok"),
                Err(e) => (format!("closed: {e}"), "ok"),
            },
        };
        let reason = format!(
            "{how}; {} bytes up, {} bytes down, {:.1} s",
            counters.up.load(Ordering::Relaxed),
            counters.down.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
        self.issuer
            .audit_later(self.event(&access, peer, "winbox.closed", outcome, reason));
    }

    async fn connect_device(&self, access: &TransientAccess) -> Result<TcpStream, TcpError> {
        let addr = self
            .issuer
            .directory()
            .device(&access.device)
            .and_then(|d| d.winbox.clone())
            .ok_or_else(|| TcpError::NoWinboxAddress(access.device.clone()))?;
        match tokio::time::timeout(DEVICE_CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(source)) => Err(TcpError::Device { addr, source }),
            Err(_) => Err(TcpError::Device {
                addr,
                source: std::io::ErrorKind::TimedOut.into(),
            }),
        }
    }

    fn event(
        &self,
        access: &TransientAccess,
        peer: SocketAddr,
        name: &str,
        outcome: &str,
        reason: String,
    ) -> AuditEvent {
        AuditEvent {
            subject: Some(access.username.clone()),
            device: Some(access.device.clone()),
            object: Some(access.id.to_string()),
            source: Some(peer.ip().to_string()),
            reason: (!reason.is_empty()).then_some(reason),
            ..audit::event(now_ms(), name, Some(&access.username), outcome)
        }
    }

    async fn audit(
        &self,
        access: &TransientAccess,
        peer: SocketAddr,
        name: &str,
        outcome: &str,
        reason: String,
    ) {
        let e = self.event(access, peer, name, outcome, reason);
        if let Err(err) = self.issuer.audit_event(e).await {
            tracing::error!(error = %err, "cannot write an audit row");
        }
    }
}
