//! The direct console: `/direct/<device>/console` (a static page) and its WebSocket
//! `/direct/<device>/console/ws`.
//!
//! The WebSocket protocol is small. The browser's first message is a text frame
//! `{"type":"auth","user","session_token","cols","rows"}` — the key travels in the socket,
//! never in a URL. After that, binary frames are terminal bytes both ways, and text frames are
//! JSON control messages: `{"type":"resize","cols","rows"}` from the browser;
//! `{"type":"status"|"ready"|"error"|"exit", "message"?}` from the gateway, which closes the
//! socket after `error` and `exit`.
//!
//! Redemption is the SSH forwarder's: the `source` and `authorize` hooks first (protocol
//! `web-console`, the browser's address), then the key is consumed once; the grant caps the
//! session's access level, which picks the device credential, and bounds the console's life.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{Html, IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use russh::{ChannelMsg, ChannelWriteHalf, client};
use serde::Deserialize;

use super::live::Console;
use super::{Peer, WebError, WebState, assets, same_origin};
use crate::audit::{self, now_ms};
use crate::issuer::{ConnectGrant, IssuerError};
use crate::policy::Protocol;
use crate::secret::Secret;
use crate::store::{AuditEvent, OpenSession};

/// How long the browser has to send its first (auth) message.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest WebSocket message accepted from the browser (keystrokes and pastes).
const MAX_MESSAGE: usize = 256 * 1024;

type Sink = SplitSink<WebSocket, Message>;

/// `GET /direct/<device>/console`: the page; it reads the fragment itself.
pub async fn page() -> Html<&'static str> {
    Html(assets::CONSOLE_HTML)
}

/// `GET /direct/<device>/console/ws`.
pub async fn upgrade(
    State(state): State<WebState>,
    Path(device): Path<String>,
    peer: Peer,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !same_origin(&uri, &headers) {
        return WebError::CrossOrigin.into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(peer) = peer.0 else {
        return WebError::BadRequest("the peer address is unknown".into()).into_response();
    };
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            let (mut sink, stream) = socket.split();
            let outcome = run(&state, &device, peer, &mut sink, stream).await;
            let (kind, message) = match outcome {
                Ok(m) => ("exit", m),
                Err(m) => ("error", m),
            };
            let _ = send_control(&mut sink, kind, Some(&message)).await;
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "".into(),
                })))
                .await;
        })
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum FromBrowser {
    Auth {
        user: String,
        session_token: Secret<String>,
        #[serde(default)]
        cols: u32,
        #[serde(default)]
        rows: u32,
    },
    Resize {
        cols: u32,
        rows: u32,
    },
}

/// Terminal sizes are clamped to something a pty accepts.
fn size(cols: u32, rows: u32) -> (u32, u32) {
    let fix = |v: u32, default: u32| if v == 0 { default } else { v.min(1000) };
    (fix(cols, 80), fix(rows, 24))
}

async fn send_control(sink: &mut Sink, kind: &str, message: Option<&str>) -> Result<(), ()> {
    let body = match message {
        Some(m) => serde_json::json!({ "type": kind, "message": m }),
        None => serde_json::json!({ "type": kind }),
    };
    sink.send(Message::Text(body.to_string().into()))
        .await
        .map_err(|_| ())
}

/// Reads the first message: it must be the auth message, within [`HELLO_TIMEOUT`].
async fn hello(
    stream: &mut SplitStream<WebSocket>,
) -> Result<(String, Secret<String>, (u32, u32)), String> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, stream.next())
        .await
        .map_err(|_| "sallyport: no session token was sent in time".to_string())?;
    let text = match first {
        Some(Ok(Message::Text(t))) => t,
        _ => return Err("sallyport: the console expects the session token first".into()),
    };
    match serde_json::from_str::<FromBrowser>(text.as_str()) {
        Ok(FromBrowser::Auth {
            user,
            session_token,
            cols,
            rows,
        }) => Ok((user, session_token, size(cols, rows))),
        _ => Err("sallyport: the console expects the session token first".into()),
    }
}

/// One console from the auth message to the end. `Ok` is a normal end, `Err` an error; both
/// carry the message shown in the terminal.
async fn run(
    state: &WebState,
    device: &str,
    peer: SocketAddr,
    sink: &mut Sink,
    mut stream: SplitStream<WebSocket>,
) -> Result<String, String> {
    let (user, token, (cols, rows)) = hello(&mut stream).await?;
    let issuer = &state.issuer;
    let ip = peer.ip();
    let refused = |e: IssuerError| match e {
        IssuerError::Refused => format!("sallyport: {e}"),
        other => {
            tracing::error!(error = %other, "web console login failed internally");
            "sallyport: internal error; the gateway log has the details".to_string()
        }
    };
    let grant = issuer
        .authorize_connect(&user, device, Protocol::WebConsole, ip)
        .await
        .map_err(refused)?;
    let session = issuer
        .redeem(&token, &user, device, Some(ip.to_string()))
        .await
        .map_err(refused)?;
    drop(token);
    // Whichever way the console ends from here, the session it opened is over.
    let ended = serve(state, ip, sink, stream, &session, &grant, (cols, rows)).await;
    issuer.session_closed(&session.id).await;
    ended
}

/// The console of a redeemed `session`, from connecting to the device to the end.
async fn serve(
    state: &WebState,
    ip: std::net::IpAddr,
    sink: &mut Sink,
    stream: SplitStream<WebSocket>,
    session: &OpenSession,
    grant: &ConnectGrant,
    (cols, rows): (u32, u32),
) -> Result<String, String> {
    let issuer = &state.issuer;
    let device = session.device.as_str();
    let level = grant.cap(session.access);
    let console = Arc::new(Console::new(session.id.clone()));
    state.consoles.register(&console, issuer).await;
    let mut cut = console.subscribe();
    let audit_row = |name: &str, outcome: &str, reason: Option<String>| AuditEvent {
        subject: Some(session.user.clone()),
        device: Some(session.device.clone()),
        object: Some(session.id.clone()),
        source: Some(ip.to_string()),
        reason,
        ..audit::event(now_ms(), name, Some(&session.user), outcome)
    };
    audit_later(
        state,
        audit_row("web.login", "allow", Some(format!("access {level:?}"))),
    );
    let _ = send_control(sink, "status", Some("connecting to the device…")).await;

    let Some(dev) = issuer.directory().device(device).cloned() else {
        return Err(format!("sallyport: device {device:?} is not configured"));
    };
    let source = ip.to_string();
    let connect = state
        .ssh
        .connect_device(&dev, level, &session.user, &source);
    let link = tokio::select! {
        l = connect => l.map_err(|e| {
            audit_later(state, audit_row("web.device_refused", "deny", Some(e.to_string())));
            format!("sallyport: {e}")
        })?,
        m = cut_message(&mut cut) => return Err(m),
    };
    let channel = link
        .channel_open_session()
        .await
        .map_err(|e| format!("sallyport: the device refused a session: {e}"))?;
    let (mut device_rx, device_tx) = channel.split();
    let device_tx = Arc::new(device_tx);
    let opened = async {
        device_tx
            .request_pty(true, "xterm-256color", cols, rows, 0, 0, &[])
            .await?;
        device_tx.request_shell(true).await
    };
    opened
        .await
        .map_err(|e| format!("sallyport: cannot open a terminal on the device: {e}"))?;
    let _ = send_control(sink, "ready", None).await;
    audit_later(state, audit_row("web.session.start", "ok", None));

    let up_bytes = Arc::new(AtomicU64::new(0));
    let mut down_bytes = 0u64;
    let mut up = tokio::spawn(pump_up(stream, device_tx.clone(), up_bytes.clone()));
    let limit = grant
        .max_session_seconds
        .map(|s| Duration::from_secs(s.into()));
    let deadline = tokio::time::sleep(limit.unwrap_or(Duration::from_secs(u64::from(u32::MAX))));
    tokio::pin!(deadline);
    let mut exit_status = None;
    let outcome = loop {
        tokio::select! {
            msg = device_rx.wait() => match msg {
                Some(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
                    down_bytes += data.len() as u64;
                    if sink.send(Message::Binary(data)).await.is_err() {
                        break Ok("browser went away".to_string());
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status: s }) => exit_status = Some(s),
                Some(ChannelMsg::Failure) => {
                    break Err("sallyport: the device refused to open a terminal".to_string());
                }
                Some(ChannelMsg::Close) | None => break Ok(match exit_status {
                    Some(s) => format!("sallyport: the shell on the device exited (status {s})"),
                    None => "sallyport: the device closed the session".to_string(),
                }),
                Some(_) => {}
            },
            m = cut_message(&mut cut) => break Err(m),
            _ = &mut up => break Ok("browser went away".to_string()),
            () = &mut deadline, if limit.is_some() => {
                break Err("sallyport: the session reached the longest time its policy allows".to_string());
            }
        }
    };
    up.abort();
    if outcome.is_err() {
        // Hang up the shell: sshd only signals processes with a pty when the link drops.
        let _ = device_tx.signal(russh::Sig::HUP).await;
    }
    let _ = device_tx.close().await;
    let _ = link
        .disconnect(russh::Disconnect::ByApplication, "session ended", "en")
        .await;
    let reason = format!(
        "{}; bytes browser->device {}, device->browser {down_bytes}",
        match &outcome {
            Ok(m) | Err(m) => m.as_str(),
        },
        up_bytes.load(Ordering::Relaxed),
    );
    audit_later(state, audit_row("web.session.end", "ok", Some(reason)));
    outcome
}

/// Resolves with the message once the console is cut.
async fn cut_message(cut: &mut tokio::sync::watch::Receiver<Option<String>>) -> String {
    loop {
        if let Some(m) = cut.borrow_and_update().clone() {
            return m;
        }
        if cut.changed().await.is_err() {
            // The console itself is gone; nothing will cut it any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Browser → device: terminal bytes and resizes, until the browser closes.
async fn pump_up(
    mut stream: SplitStream<WebSocket>,
    device: Arc<ChannelWriteHalf<client::Msg>>,
    bytes: Arc<AtomicU64>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        let sent = match msg {
            Message::Binary(data) => {
                bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                device.data_bytes(data).await
            }
            Message::Text(text) => match serde_json::from_str::<FromBrowser>(text.as_str()) {
                Ok(FromBrowser::Resize { cols, rows }) => {
                    let (cols, rows) = size(cols, rows);
                    device.window_change(cols, rows, 0, 0).await
                }
                _ => Ok(()),
            },
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
}

/// Writes an audit row without making the console wait for its commit.
fn audit_later(state: &WebState, e: AuditEvent) {
    let issuer = state.issuer.clone();
    tokio::spawn(async move {
        if let Err(err) = issuer.audit_event(e).await {
            tracing::error!(error = %err, "cannot write a web console audit row");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_clamped_and_defaulted() {
        assert_eq!(size(0, 0), (80, 24));
        assert_eq!(size(5000, 40), (1000, 40));
    }

    #[test]
    fn the_auth_message_parses_and_hides_the_token() {
        let m = serde_json::from_str::<FromBrowser>(
            r#"{"type":"auth","user":"u","session_token":"0123","cols":100,"rows":30}"#,
        );
        assert!(matches!(
            &m,
            Ok(FromBrowser::Auth {
                cols: 100,
                rows: 30,
                ..
            })
        ));
        let printed = format!("{m:?}");
        assert!(!printed.contains("0123"), "{printed}");
    }
}
