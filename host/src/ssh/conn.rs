//! One user connection from accept to close: the accept loops (with the abuse limits), the
//! login grace timer, cutting on session end or gateway shutdown with a message to the user,
//! hanging up the device side, and the session-end audit row with bytes each way.

use std::sync::Arc;
use std::time::Duration;

use russh::Disconnect;
use russh::server;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::SshService;
use super::limits::Refusal;
use super::live::{Conn, LiveKey};
use super::server::{Entry, Gate};
use crate::audit::{self, now_ms};
use crate::store::AuditEvent;

/// How long a disconnected client gets to close its side before the task stops waiting.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long telling the user why the connection is cut may take before the device is hung up
/// regardless (cuts are due within a second).
const TELL_LIMIT: Duration = Duration::from_millis(300);

/// Accepts connections on `listener` until `stop` turns true.
pub async fn accept_loop(
    service: Arc<SshService>,
    listener: TcpListener,
    entry: Entry,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "SSH accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let guard = match service.limits.admit(peer.ip()) {
            Ok(g) => g,
            Err(why) => {
                // Rows bounded per source: a flood must not become a flood of writes.
                let (event, reason) = match why {
                    Refusal::Penalised { remaining } => (
                        "ssh.refused_penalised",
                        format!(
                            "source penalised for failed logins, {} s left",
                            remaining.as_secs()
                        ),
                    ),
                    Refusal::TooManyUnauthenticated => (
                        "ssh.refused_busy",
                        "too many unauthenticated connections".to_string(),
                    ),
                    Refusal::TooManyFromSource => (
                        "ssh.refused_busy",
                        "too many unauthenticated connections from this source".to_string(),
                    ),
                };
                service
                    .issuer
                    .refused_before_login(event, &peer.ip().to_string(), reason);
                drop(stream);
                continue;
            }
        };
        let conn = Arc::new(Conn::new(peer, guard));
        let token = service.live.task_token();
        let (svc, stop, entry) = (service.clone(), stop.clone(), entry.clone());
        let moved = service.lanes.spawn_connection(stream, move |stream| {
            run_conn(svc, stream, conn, entry, stop, token)
        });
        if let Err(e) = moved {
            tracing::warn!(peer = %peer, error = %e, "cannot hand an SSH connection to a lane");
        }
    }
}

/// One connection from accept to close.
async fn run_conn(
    service: Arc<SshService>,
    stream: TcpStream,
    conn: Arc<Conn>,
    entry: Entry,
    mut stop: watch::Receiver<bool>,
    _token: Arc<()>,
) {
    // A transient access's port serves only the sources its policy allows: others are closed
    // before the SSH handshake, as Winbox ports do (the refusal is audited, bounded per source,
    // and is not a failed login). The login asks the policy again.
    if let Entry::Transient(access) = &entry
        && service
            .issuer
            .admit_transient(access, conn.peer.ip())
            .await
            .is_err()
    {
        return;
    }
    let grace = tokio::time::sleep(service.settings.login_grace);
    tokio::pin!(grace);
    let handler = Gate::new(service.clone(), conn.clone(), entry);
    let config = service.server_config.clone();
    let mut session = tokio::select! {
        s = server::run_stream(config, stream, handler) => match s {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "SSH handshake failed");
                return;
            }
        },
        _ = &mut grace => {
            grace_exceeded(&service, &conn);
            return;
        }
    };
    let handle = session.handle();
    let mut cut = conn.subscribe_cut();
    // A select! precondition is read only when the select! starts, so a login that completes
    // while waiting would not disarm the timer by itself: the branch checks again when it fires
    // (and from then on the precondition keeps it disabled).
    let reason = loop {
        tokio::select! {
            r = &mut session => {
                if let Err(e) = r {
                    tracing::debug!(peer = %conn.peer, error = %e, "SSH connection ended with an error");
                }
                break None;
            }
            _ = &mut grace, if !conn.is_authenticated() => {
                if conn.is_authenticated() {
                    continue;
                }
                grace_exceeded(&service, &conn);
                break Some("sallyport: login grace time exceeded".to_string());
            }
            changed = cut.changed() => {
                let message = cut.borrow_and_update().clone();
                if changed.is_err() || message.is_some() {
                    break message;
                }
            }
            _ = stop.changed() => break Some("sallyport: the gateway is shutting down".to_string()),
        }
    };
    if reason.is_some() {
        conn.stop_pumps();
    }
    if let Some(message) = &reason {
        // Tell the user on every open channel's stderr, then at the protocol level. Bounded:
        // a user session stalled on a full window must not delay hanging up the device.
        let line = format!("\r\n{message}\r\n");
        let tell = async {
            for id in conn.channels() {
                let _ = handle.extended_data(id, 1, line.clone().into_bytes()).await;
            }
            let _ = handle
                .disconnect(Disconnect::ByApplication, message.clone(), "en".into())
                .await;
        };
        if tokio::time::timeout(TELL_LIMIT, tell).await.is_err() {
            tracing::info!(peer = %conn.peer, "user session did not take the cut message in time");
        }
    }
    // Also bounded: a device session stalled on a full window is dropped instead, which ends
    // it just as surely.
    // Taken out first, so the link goes with this task even if the hang-up times out.
    let device = conn.take_device();
    let hang_up = async {
        if reason.is_some() {
            conn.hang_up_device().await;
        }
        if let Some(device) = &device {
            let _ = device
                .disconnect(Disconnect::ByApplication, "session ended", "en")
                .await;
        }
    };
    if tokio::time::timeout(TELL_LIMIT, hang_up).await.is_err() {
        tracing::info!(peer = %conn.peer, "device session did not take the hang-up in time; dropped");
    }
    drop(device);
    if reason.is_some() {
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut session).await;
    }
    // Whatever still pumps (channels the device opened back, see `relay`) ends with the
    // connection.
    conn.stop_pumps();
    if let Some(id) = conn.identity() {
        let e = AuditEvent {
            subject: Some(id.user.clone()),
            device: Some(id.device.clone()),
            object: Some(id.object()),
            source: Some(conn.peer.ip().to_string()),
            reason: Some(format!(
                "{}bytes user->device {}, device->user {}",
                reason.map(|r| format!("{r}; ")).unwrap_or_default(),
                conn.up.load(std::sync::atomic::Ordering::Relaxed),
                conn.down.load(std::sync::atomic::Ordering::Relaxed)
            )),
            ..audit::event(now_ms(), "ssh.session.end", Some(&id.user), "ok")
        };
        if let Err(err) = service.issuer.audit_event(e).await {
            tracing::error!(error = %err, "cannot write the SSH session-end audit row");
        }
        if let LiveKey::Session(session) = &id.key {
            service.issuer.session_closed(session).await;
        }
    }
}

/// Holding a connection without logging in counts as a failed login, as OpenSSH's
/// `PerSourcePenalties` counts `grace-exceeded`: idle connections cannot be renewed forever.
fn grace_exceeded(service: &Arc<SshService>, conn: &Conn) {
    tracing::info!(peer = %conn.peer, "login grace time exceeded");
    if let Some(e) = failed_login(service, conn.peer.ip(), "login grace time exceeded") {
        audit_later(service, e);
    }
}

/// Counts a failed login from `ip`; if that starts a penalty, the audit row saying so.
pub(super) fn failed_login(
    service: &SshService,
    ip: std::net::IpAddr,
    what: &str,
) -> Option<AuditEvent> {
    let penalty = service.limits.failure(ip)?;
    Some(AuditEvent {
        source: Some(ip.to_string()),
        reason: Some(format!(
            "refused for {} s after failed logins (the last: {what})",
            penalty.as_secs()
        )),
        ..audit::event(now_ms(), "ssh.source_penalised", None, "deny")
    })
}

/// Writes an audit row without making the user wait for its commit: rows that record an
/// allowed step (login, session start) must not add an fsync to the login path.
pub(super) fn audit_later(service: &Arc<SshService>, e: AuditEvent) {
    let service = service.clone();
    tokio::spawn(async move {
        if let Err(err) = service.issuer.audit_event(e).await {
            tracing::error!(error = %err, "cannot write an SSH audit row");
        }
    });
}
