//! TEST DOUBLE of the MikroTik RouterOS v7 REST API (`/rest/user` only) — not a RouterOS.
//!
//! It serves HTTPS with a freshly generated self-signed certificate (so the gateway's pinning is
//! exercised), checks HTTP basic auth, keeps users in memory, and records every request exactly
//! as received (method, path with query, JSON body, basic-auth user and password) for the tests
//! to assert on. It mimics RouterOS's answers: `PUT /rest/user` returns the created object with
//! its `.id` (`*1`, `*2`, …), `GET /rest/user?name=N` a JSON array, `DELETE /rest/user/*ID` 204,
//! errors as `{"error": CODE, "message": …, "detail": …}`. It can be told to reject the next
//! creations (or make the user and then fail), and stopped and restarted on the same port (keeping its users) to play an
//! unreachable device.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::Digest;

/// One request as the double received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/rest/user?name=transient-x`.
    pub path: String,
    pub body: Option<Value>,
    /// Basic-auth user and password, decoded.
    pub auth: Option<(String, String)>,
}

#[derive(Debug, Default)]
pub struct State {
    /// Users as RouterOS would list them (`.id`, `name`, `group`, `password`, `comment`).
    pub users: Vec<Value>,
    pub requests: Vec<Recorded>,
    next_id: u32,
    /// Detail of the `failure:` answer given to the next creations, while set; `{body}` in it
    /// is replaced by the request body, as a device that echoes what it was sent.
    pub reject_put: Option<String>,
    /// While set, a creation makes the user and then answers 500, as a device whose answer
    /// was lost after it acted.
    pub fail_after_put: bool,
}

pub struct RouterOsDouble {
    pub addr: SocketAddr,
    /// SHA-256 of the certificate (DER), hex: what `routeros_cert_sha256` must say.
    pub cert_sha256: String,
    pub state: Arc<Mutex<State>>,
    acceptor: tokio_rustls::TlsAcceptor,
    user: String,
    password: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RouterOsDouble {
    /// Starts on a free port of 127.0.0.1, accepting basic auth `user:password`.
    pub async fn start(user: &str, password: &str) -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let der = cert.cert.der().clone();
        let cert_sha256 = hex::encode(sha2::Sha256::digest(der.as_ref()));
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut double = Self {
            addr: listener.local_addr().unwrap(),
            cert_sha256,
            state: Arc::default(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            user: user.into(),
            password: password.into(),
            task: None,
        };
        double.serve(listener);
        double
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops answering: the port refuses connections, as an unreachable device would.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Answers again on the same port, with the users it had.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn users(&self) -> Vec<Value> {
        self.state.lock().unwrap().users.clone()
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let acceptor = self.acceptor.clone();
        let state = self.state.clone();
        let creds = (self.user.clone(), self.password.clone());
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let state = state.clone();
                let creds = creds.clone();
                // In the set, so stopping the double also drops its open connections.
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        let creds = creds.clone();
                        async move { Ok::<_, Infallible>(handle(req, &state, &creds).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        }));
    }
}

impl Drop for RouterOsDouble {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn reply(status: u16, body: Option<Value>) -> Response<Full<Bytes>> {
    let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(bytes))
        .unwrap()
}

fn error(status: u16, message: &str, detail: Option<&str>) -> Response<Full<Bytes>> {
    let mut body = json!({"error": status, "message": message});
    if let Some(d) = detail {
        body["detail"] = json!(d);
    }
    reply(status, Some(body))
}

async fn handle(
    req: Request<Incoming>,
    state: &Mutex<State>,
    creds: &(String, String),
) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.to_string());
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(decode_base64)
        .and_then(|raw| {
            let (u, p) = raw.split_once(':')?;
            Some((u.to_string(), p.to_string()))
        });
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    let mut st = state.lock().unwrap();
    st.requests.push(Recorded {
        method: method.clone(),
        path: path.clone(),
        body: body.clone(),
        auth: auth.clone(),
    });
    if auth.as_ref() != Some(creds) {
        return error(401, "Unauthorized", None);
    }
    let (route, query) = path.split_once('?').unwrap_or((&path, ""));
    match (method.as_str(), route) {
        ("PUT", "/rest/user") => {
            if let Some(detail) = st.reject_put.clone() {
                let sent = String::from_utf8_lossy(&bytes);
                return error(400, "Bad Request", Some(&detail.replace("{body}", &sent)));
            }
            let Some(Value::Object(fields)) = body else {
                return error(400, "Bad Request", Some("expected a JSON object"));
            };
            let name = fields.get("name").and_then(Value::as_str).unwrap_or("");
            let group = fields.get("group").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() || !["full", "read", "write"].contains(&group) {
                return error(400, "Bad Request", Some("failure: bad name or group"));
            }
            if st.users.iter().any(|u| u["name"] == name) {
                return error(
                    400,
                    "Bad Request",
                    Some("failure: user with the same name already exists"),
                );
            }
            st.next_id += 1;
            let mut user = Value::Object(fields);
            user[".id"] = json!(format!("*{:X}", st.next_id));
            st.users.push(user.clone());
            if st.fail_after_put {
                return error(
                    500,
                    "Internal Server Error",
                    Some("lost after the user was made"),
                );
            }
            reply(200, Some(user))
        }
        ("GET", "/rest/user") => {
            let wanted = query.strip_prefix("name=");
            let found: Vec<Value> = st
                .users
                .iter()
                .filter(|u| wanted.is_none_or(|w| u["name"] == w))
                .cloned()
                .collect();
            reply(200, Some(Value::Array(found)))
        }
        ("DELETE", r) if r.starts_with("/rest/user/") => {
            let id = &r["/rest/user/".len()..];
            let before = st.users.len();
            st.users.retain(|u| u[".id"] != id);
            if st.users.len() == before {
                error(404, "Not Found", Some("no such item"))
            } else {
                reply(204, None)
            }
        }
        _ => error(400, "Bad Request", Some("no such command")),
    }
}

fn decode_base64(s: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).ok()
}
