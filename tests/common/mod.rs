//! Shared end-to-end helpers: write a config into a temp dir, start the real `sallyport` binary
//! on port 0, read the bound address from its stdout, and talk to it over HTTPS.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const EDGE_ID: &str = "d290f1ee-6c54-4b01-90e6-d701748f0851";
pub const CORE_ID: &str = "0b6f6a52-3f0e-4c7e-9a52-1d0c6c7b8e01";
pub const ADMIN_KEY: &str = "admin-api-key-0123456789abcdef";

/// A config with users of every kind: `admin` (sudo, all devices, full), `alice` (read-only on
/// `edge-*`), `bob` (full on `edge-*` and `core-*`, no sudo), `carol` (no groups).
pub fn config(data_dir: &Path, ports: &str) -> String {
    format!(
        r#"
[server]
data_dir = "{data}"
api_listen = "127.0.0.1:0"
public_host = "gw.example.test"
transient_ports = "{ports}"
sweep_interval_ms = 100

[[groups]]
name = "admins"
sudo = true
devices = ["*"]
access = "full"

[[groups]]
name = "ops"
devices = ["edge-*"]
access = "read-only"

[[groups]]
name = "netops"
devices = ["edge-*", "core-*"]
access = "full"

[[users]]
name = "admin"
password = "admin-pw"
groups = ["admins"]
api_keys = ["{ADMIN_KEY}"]

[[users]]
name = "alice"
password = "alice-pw"
groups = ["ops"]

[[users]]
name = "bob"
password = "bob-pw"
groups = ["netops"]

[[users]]
name = "carol"
password = "carol-pw"

[[devices]]
name = "edge-1"
id = "{EDGE_ID}"
ssh = "127.0.0.1:1"
winbox = "127.0.0.1:2"

[[devices]]
name = "core-1"
id = "{CORE_ID}"
ssh = "127.0.0.1:1"
"#,
        data = data_dir.display()
    )
}

/// A running gateway process.
pub struct Gateway {
    pub child: Child,
    pub base: String,
    pub config_path: PathBuf,
    pub stdout_lines: Vec<String>,
}

impl Gateway {
    /// Starts `sallyport serve --config <path>` and waits for its listening line.
    pub fn start(config_path: &Path) -> Gateway {
        Self::start_args(
            &["serve", "--config", config_path.to_str().unwrap()],
            config_path,
            None,
        )
    }

    pub fn start_args(args: &[&str], config_path: &Path, cwd: Option<&Path>) -> Gateway {
        let log = std::fs::File::create(config_path.with_extension("log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sallyport"));
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .env("RUST_LOG", "info");
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stdout_lines = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or_else(|_| {
                    let log = std::fs::read_to_string(config_path.with_extension("log")).unwrap_or_default();
                    panic!("gateway did not report its address; stdout so far: {stdout_lines:?}\nlog:\n{log}")
                });
            stdout_lines.push(line.clone());
            if let Some(rest) = line.split("api listening on ").nth(1) {
                let base = rest.trim().to_string();
                return Gateway {
                    child,
                    base,
                    config_path: config_path.to_owned(),
                    stdout_lines,
                };
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(mut self) {
        let pid = self.child.id() as i32;
        unsafe_kill(pid, "TERM");
        let _ = self.child.wait();
    }

    /// SIGKILL: a crash.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config_path.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// An HTTPS client that accepts the gateway's self-signed certificate.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A temp dir with a config written for the given port range.
pub fn setup(ports: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sallyport.toml");
    std::fs::write(&path, config(&tmp.path().join("data"), ports)).unwrap();
    (tmp, path)
}

pub async fn login(c: &reqwest::Client, gw: &Gateway, user: &str, password: &str) -> String {
    let r = c
        .post(gw.url("/api/v1/Session"))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login {user}");
    r.json::<serde_json::Value>().await.unwrap()["session"]
        .as_str()
        .unwrap()
        .to_string()
}

/// POST JSON with a ticket; returns status and body.
pub async fn post(
    c: &reqwest::Client,
    gw: &Gateway,
    ticket: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = c
        .post(gw.url(path))
        .header("ticket", ticket)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

pub async fn get(
    c: &reqwest::Client,
    gw: &Gateway,
    ticket: &str,
    path: &str,
) -> (u16, serde_json::Value) {
    let r = c
        .get(gw.url(path))
        .header("ticket", ticket)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Asserts an error response: status, JSON `error` code, and a message containing `needle`.
pub fn assert_error(got: &(u16, serde_json::Value), status: u16, needle: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert!(got.1["error"].is_string(), "no error code: {}", got.1);
    let msg = got.1["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
}
