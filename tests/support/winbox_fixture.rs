//! Shared pieces of the Winbox end-to-end tests: the echo server that plays the device's winbox
//! service, the gateway configuration and fixture, and client helpers (connecting from a chosen
//! loopback source, waiting for a listener, round trips, timing a cut).

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::common::{Gateway, client, get, login, post};
use crate::routeros_double::RouterOsDouble;

pub const EDGE_ID: &str = "d290f1ee-6c54-4b01-90e6-d701748f0851";
pub const MT_ID: &str = "5b2c1d4e-8f3a-4b6c-9d7e-0a1b2c3d4e5f";
pub const ROUTER_USER: &str = "api-admin";
pub const ROUTER_PW: &str = "router-Pw-1337";

/// The device's winbox service: echoes every byte back and reports, per connection, how many
/// bytes it received and their SHA-256.
pub struct Echo {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub received: tokio::sync::mpsc::UnboundedReceiver<(u64, [u8; 32])>,
}

pub async fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, received) = tokio::sync::mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let mut buf = vec![0u8; 256 * 1024];
                let mut hash = Sha256::new();
                let mut total = 0u64;
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            hash.update(&buf[..n]);
                            total += n as u64;
                            if w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = w.shutdown().await;
                let _ = tx.send((total, hash.finalize().into()));
            });
        }
    });
    Echo {
        addr,
        accepted,
        received,
    }
}

pub fn config(
    data: &Path,
    ports: &str,
    echo: SocketAddr,
    router: Option<&RouterOsDouble>,
) -> String {
    let mt = router.map_or_else(String::new, |r| {
        format!(
            r#"
[[devices]]
name = "mt-1"
id = "{MT_ID}"
winbox = "{echo}"
provision = "routeros"
routeros_url = "{url}"
routeros_cert_sha256 = "{pin}"
credentials.full = {{ user = "{ROUTER_USER}", password = "{ROUTER_PW}" }}
"#,
            url = r.url(),
            pin = r.cert_sha256
        )
    });
    format!(
        r#"
[server]
data_dir = "{data}"
api_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"
public_host = "127.0.0.1"
transient_ports = "{ports}"
transient_listen_ip = "127.0.0.1"
sweep_interval_ms = 100

[[groups]]
name = "admins"
sudo = true
devices = ["*"]
access = "full"

[[users]]
name = "admin"
password = "admin-pw"
groups = ["admins"]

[[devices]]
name = "edge-1"
id = "{EDGE_ID}"
winbox = "{echo}"
provision = "none"
{mt}"#,
        data = data.display(),
    )
}

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub gw: Gateway,
    pub ticket: String,
    pub http: reqwest::Client,
}

impl Fixture {
    pub async fn start(ports: &str, echo: SocketAddr, router: Option<&RouterOsDouble>) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sallyport.toml");
        std::fs::write(&path, config(&tmp.path().join("data"), ports, echo, router)).unwrap();
        let gw = Gateway::start(&path);
        let http = client();
        let ticket = login(&http, &gw, "admin", "admin-pw").await;
        Fixture {
            tmp,
            gw,
            ticket,
            http,
        }
    }

    /// Stops the gateway (SIGTERM) and starts it again on the same data directory.
    pub async fn restarted(self) -> Fixture {
        let Fixture { tmp, gw, http, .. } = self;
        let path = gw.config_path.clone();
        gw.stop();
        let gw = Gateway::start(&path);
        let ticket = login(&http, &gw, "admin", "admin-pw").await;
        Fixture {
            tmp,
            gw,
            ticket,
            http,
        }
    }

    pub async fn create(&self, site: &str, body: Value) -> (u16, Value) {
        post(
            &self.http,
            &self.gw,
            &self.ticket,
            &format!("/control-plane/{site}/transient-accesses"),
            body,
        )
        .await
    }

    pub async fn winbox(&self, cidr: &str) -> Value {
        let (status, a) = self
            .create(
                EDGE_ID,
                json!({"expire_after_minutes": 15, "type": "winbox", "full_access": true,
                       "allow_rfc1918": false, "allow_only_cidr": cidr}),
            )
            .await;
        assert_eq!(status, 201, "{a}");
        a
    }

    pub async fn get(&self, site: &str, id: &str) -> Value {
        let (status, a) = get(
            &self.http,
            &self.gw,
            &self.ticket,
            &format!("/sites/{site}/transient-accesses/{id}"),
        )
        .await;
        assert_eq!(status, 200, "{a}");
        a
    }

    pub async fn revoke(&self, site: &str, id: &str) -> Value {
        let r = self
            .http
            .delete(
                self.gw
                    .url(&format!("/sites/{site}/transient-accesses/{id}")),
            )
            .header("ticket", &self.ticket)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Moves an access's `expires_at` to `at` (Unix ms) in the gateway's database.
    pub fn set_expires_at(&self, id: &str, at: i64) {
        let db = rusqlite::Connection::open(self.tmp.path().join("data/sallyport.db")).unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        let n = db
            .execute(
                "UPDATE transient_accesses SET expires_at = ?1 WHERE id = ?2",
                rusqlite::params![at, id],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
}

pub fn port_of(a: &Value) -> u16 {
    a["port"].as_u64().unwrap() as u16
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A TCP connection to the gateway's `port` from source address `from`.
pub async fn connect_from(from: &str, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
}

/// Waits until the access's listener accepts connections: it is open when the API answers,
/// unless its port was held by another socket (then it is retried every second).
pub async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            // Nothing listening, and the kernel gave this connection `port` as its own source
            // port (possible whenever a transient range lies in the ephemeral one; the tests'
            // ranges sit below it for that reason): TCP's simultaneous open connects the socket
            // to itself. That is not the listener.
            Ok(s) if s.local_addr().ok() == s.peer_addr().ok() => {
                drop(s);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!(
                "port {port} never opened: {e}; listeners: {}",
                std::process::Command::new("ss")
                    .args(["-tanp"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .filter(|l| l.contains(&format!(":{port} ")))
                        .collect::<Vec<_>>()
                        .join("\n"))
                    .unwrap_or_default()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Sends `msg` and reads the echo; false if the connection was closed instead.
pub async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await {
        Ok(Ok(_)) => got == msg,
        Ok(Err(_)) => false,
        Err(_) => panic!("no answer and no close within 5 s"),
    }
}

/// How long until the gateway closes `s` (end of stream or reset), at most `limit`.
pub async fn time_to_close(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

pub async fn pending(f: &Fixture, site: &str) -> Vec<Value> {
    let (status, body) = get(
        &f.http,
        &f.gw,
        &f.ticket,
        &format!("/sites/{site}/pending-removals"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}
