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
///
/// Each test passes its own `ports`, all below Linux's ephemeral range (32768-60999): a range
/// inside it fails at random when another test's outgoing socket holds one of its ports.
pub fn config(data_dir: &Path, ports: &str) -> String {
    format!(
        r#"
[server]
data_dir = "{data}"
api_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"
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
# Nothing listens on either port; SSH accesses need a credential of their level to be made.
credentials.full = {{ user = "admin", password = "device-full-pw" }}
credentials.read_only = {{ user = "viewer", password = "device-ro-pw" }}

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

    /// `start` with extra environment variables for the gateway process.
    pub fn start_env(config_path: &Path, env: &[(&str, &str)]) -> Gateway {
        Self::spawn(
            &["serve", "--config", config_path.to_str().unwrap()],
            config_path,
            None,
            env,
        )
    }

    pub fn start_args(args: &[&str], config_path: &Path, cwd: Option<&Path>) -> Gateway {
        Self::spawn(args, config_path, cwd, &[])
    }

    fn spawn(
        args: &[&str],
        config_path: &Path,
        cwd: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Gateway {
        let log = std::fs::File::create(config_path.with_extension("log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sallyport"));
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
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
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(line) = rx.recv_timeout(wait) else {
                let _ = child.kill();
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(config_path.with_extension("log")).unwrap_or_default();
                panic!(
                    "gateway did not report its address; stdout so far: {stdout_lines:?}\nlog:\n{log}"
                )
            };
            stdout_lines.push(line.clone());
            // The ssh line comes last, when every listener is up.
            if line.contains("ssh listening on ") {
                let base = stdout_lines
                    .iter()
                    .find_map(|l| l.split("api listening on ").nth(1))
                    .unwrap_or_else(|| panic!("no api line in {stdout_lines:?}"))
                    .trim()
                    .to_string();
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

// ---- SSH: a real OpenSSH sshd as the managed device, and the real OpenSSH clients ----

/// Device user the `full` credential logs in as (by password).
pub const FULL_USER: &str = "sp-full";
/// Device user the `read_only` credential logs in as (by key file).
pub const RO_USER: &str = "sp-ro";
pub const FULL_PASSWORD: &str = "sp-full-Pw-4711";
/// A fingerprint no key has; devices pinned to it must be refused.
pub const WRONG_PIN: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn must(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Creates the two device users (the tests run as root) and sshd's privilege-separation dir.
pub fn ensure_device_users() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for user in [FULL_USER, RO_USER] {
            let exists = Command::new("id")
                .arg("-u")
                .arg(user)
                .output()
                .unwrap()
                .status
                .success();
            if !exists {
                must(Command::new("useradd").args(["-m", "-s", "/bin/bash", user]));
            }
            // A password also unlocks the account, which sshd requires even for key logins.
            let pw = if user == FULL_USER {
                FULL_PASSWORD
            } else {
                "sp-ro-unused-Pw-0815"
            };
            let mut child = Command::new("chpasswd")
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            writeln!(child.stdin.take().unwrap(), "{user}:{pw}").unwrap();
            assert!(child.wait().unwrap().success(), "chpasswd {user}");
        }
        std::fs::create_dir_all("/run/sshd").unwrap();
    });
}

/// Generates an Ed25519 key pair at `path` (+ `.pub`); returns the public key line.
pub fn keygen(path: &Path) -> String {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    must(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "sp-test", "-f"])
            .arg(path),
    );
    std::fs::read_to_string(format!("{}.pub", path.display())).unwrap()
}

/// The `SHA256:…` fingerprint of a public key file.
pub fn fingerprint(pub_path: &Path) -> String {
    let out = must(Command::new("ssh-keygen").arg("-lf").arg(pub_path));
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// A real sshd on 127.0.0.1, with its own host key and config in `dir`.
pub struct Sshd {
    pub port: u16,
    pub dir: PathBuf,
    /// Fingerprint of its host key.
    pub fingerprint: String,
    child: Child,
}

impl Sshd {
    /// Starts sshd on `port` (a free one if `None`) with a freshly generated host key; the
    /// read-only device user accepts `ro_pubkey`.
    pub fn start(dir: &Path, port: Option<u16>, ro_pubkey: &str) -> Sshd {
        ensure_device_users();
        std::fs::create_dir_all(dir.join("authorized_keys")).unwrap();
        std::fs::write(dir.join("authorized_keys").join(RO_USER), ro_pubkey).unwrap();
        let host_key = dir.join("host_ed25519_key");
        keygen(&host_key);
        let fingerprint = fingerprint(&host_key.with_extension("pub"));
        let port = port.unwrap_or_else(free_port);
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys/%u\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin no\nAcceptEnv SP_*\nSubsystem sftp internal-sftp\nMaxStartups 200\n\
                 MaxSessions 100\nX11Forwarding yes\nLogLevel ERROR\n",
                hk = host_key.display(),
                d = dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sshd did not start: {}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd {
            port,
            dir: dir.to_owned(),
            fingerprint,
            child,
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Gateway {
    /// The port of the main SSH listener, from the `ssh listening on` line.
    pub fn ssh_port(&self) -> u16 {
        self.stdout_lines
            .iter()
            .find_map(|l| l.split("ssh listening on ").nth(1))
            .and_then(|a| a.trim().rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no ssh line in {:?}", self.stdout_lines))
    }
}

/// A gateway config for SSH tests: `edge-1` pinned to the sshd's key (full by password,
/// read-only by key file), `core-1` without `host_key` (trust on first use), `bad-1` pinned
/// to a key the sshd does not have, `down-1` where nothing listens. Users as in [`config`]. `extra` is appended to `[server]`.
pub fn ssh_config(data: &Path, ports: &str, sshd: &Sshd, extra: &str) -> String {
    let device = |name: &str, id: &str, pin: Option<&str>| {
        format!(
            "[[devices]]\nname = \"{name}\"\nid = \"{id}\"\nssh = \"127.0.0.1:{port}\"\n{pin}\
             credentials.full = {{ user = \"{FULL_USER}\", password = \"{FULL_PASSWORD}\" }}\n\
             credentials.read_only = {{ user = \"{RO_USER}\", key_file = \"keys/sp-ro\" }}\n\n",
            port = sshd.port,
            pin = pin
                .map(|p| format!("host_key = \"{p}\"\n"))
                .unwrap_or_default()
        )
    };
    format!(
        r#"
[server]
data_dir = "{data}"
api_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"
public_host = "127.0.0.1"
transient_ports = "{ports}"
sweep_interval_ms = 100
{extra}

[[groups]]
name = "admins"
sudo = true
devices = ["*"]
access = "full"

[[groups]]
name = "ops"
devices = ["edge-*"]
access = "read-only"

[[users]]
name = "admin"
password = "admin-pw"
groups = ["admins"]
api_keys = ["{ADMIN_KEY}"]

[[users]]
name = "alice"
password = "alice-pw"
groups = ["ops"]

{edge}{core}{bad}[[devices]]
name = "down-1"
id = "4a1e2c3b-5d6f-4a7b-8c9d-0e1f2a3b4c5d"
# Nothing listens on port 1: the device is unreachable.
ssh = "127.0.0.1:1"
credentials.full = {{ user = "{FULL_USER}", password = "{FULL_PASSWORD}" }}
"#,
        data = data.display(),
        edge = device("edge-1", EDGE_ID, Some(&sshd.fingerprint)),
        core = device("core-1", CORE_ID, None),
        bad = device(
            "bad-1",
            "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            Some(WRONG_PIN)
        ),
    )
}

/// A real sshd as the device plus the real gateway in front of it.
pub struct SshFixture {
    pub tmp: tempfile::TempDir,
    pub sshd: Sshd,
    pub gw: Gateway,
    pub ssh_port: u16,
    pub ro_pubkey: String,
}

impl SshFixture {
    pub fn start(ports: &str, extra: &str) -> SshFixture {
        Self::start_env(ports, extra, &[])
    }

    /// `start` with extra environment variables for the gateway process.
    pub fn start_env(ports: &str, extra: &str, env: &[(&str, &str)]) -> SshFixture {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("keys")).unwrap();
        let ro_pubkey = keygen(&data.join("keys").join("sp-ro"));
        let sshd = Sshd::start(&tmp.path().join("sshd"), None, &ro_pubkey);
        let path = tmp.path().join("sallyport.toml");
        std::fs::write(&path, ssh_config(&data, ports, &sshd, extra)).unwrap();
        let gw = Gateway::start_env(&path, env);
        let ssh_port = gw.ssh_port();
        SshFixture {
            tmp,
            sshd,
            gw,
            ssh_port,
            ro_pubkey,
        }
    }

    /// A fresh one-time key for `user` on `device`, issued by admin.
    pub async fn otk(&self, user: &str, device: &str) -> String {
        let c = client();
        let ticket = login(&c, &self.gw, "admin", "admin-pw").await;
        let (status, body) = post(
            &c,
            &self.gw,
            &ticket,
            "/api/v1/opensession",
            serde_json::json!({"target_device": device, "user": user, "duration": 120}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["session_token"].as_str().unwrap().to_string()
    }
}

/// Options every client command gets: no host-key prompts or files, no local keys tried.
pub const SSH_OPTS: [&str; 8] = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "PubkeyAuthentication=no",
];

/// `sshpass -p PASSWORD ssh -p PORT … LOGIN@127.0.0.1 ARGS…`.
pub fn ssh(port: u16, login: &str, password: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sshpass");
    cmd.args(["-p", password, "ssh", "-p", &port.to_string()])
        .args(SSH_OPTS)
        .arg(format!("{login}@127.0.0.1"))
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs a command with a time limit; returns (exit code, stdout, stderr).
pub fn run_for(mut cmd: Command, limit: Duration) -> (i32, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status.code().unwrap_or(-1),
        o.join().unwrap(),
        e.join().unwrap(),
    )
}

impl Gateway {
    /// Whether `needle` shows up in the plain log within `limit`. The log reaches the test
    /// through a pipe and a reader thread, so a line the gateway wrote just before answering
    /// a client can still be on its way when the client returns.
    pub fn log_shows(&self, needle: &str, limit: Duration) -> bool {
        let until = std::time::Instant::now() + limit;
        loop {
            if self.plain_log().contains(needle) {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits, without blocking the runtime, until the plain log satisfies `pred`; after
    /// `limit` the test fails with `what` and the log.
    pub async fn await_log(&self, limit: Duration, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let log = self.plain_log();
            if pred(&log) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{what}:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log without ANSI colour codes, for matching `key=value` pairs.
    pub fn plain_log(&self) -> String {
        let log = self.log();
        let mut out = String::with_capacity(log.len());
        let mut chars = log.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Writes `name` into the plugins directory `dir` whole (as an admin's `cp` to a hidden name
/// and `mv` into place would), so the gateway never sees it half-written.
pub async fn drop_in(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// A time field (`created_at`, `expires_at`) of a session in the tracking list.
pub fn session_time(s: &serde_json::Value, key: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        s[key].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// `expires_at - created_at` of a session in the tracking list, in seconds.
pub fn lifetime_secs(s: &serde_json::Value) -> i64 {
    (session_time(s, "expires_at") - session_time(s, "created_at")).whole_seconds()
}

/// Whether a process matching `pattern` runs as the device's full-access user.
pub fn device_process_running(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-u", FULL_USER, "-f", pattern])
        .output()
        .unwrap()
        .status
        .success()
}

/// Whether no process matching `pattern` runs on the device within `limit` (the device's
/// sshd ends the command once the gateway hangs up its side).
pub fn device_process_gone(pattern: &str, limit: Duration) -> bool {
    device_process_becomes(pattern, false, limit)
}

/// Whether a process matching `pattern` runs on the device within `limit`.
pub fn device_process_started(pattern: &str, limit: Duration) -> bool {
    device_process_becomes(pattern, true, limit)
}

fn device_process_becomes(pattern: &str, running: bool, limit: Duration) -> bool {
    let until = std::time::Instant::now() + limit;
    loop {
        if device_process_running(pattern) == running {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
