//! End-to-end tests of what policy grants do to SSH sessions, and of a transient SSH access
//! reaching its expiry: a real OpenSSH `sshd` plays the device, the real `sallyport` binary
//! sits in front of it, and real `ssh`/`sshpass` clients connect. The policies are components
//! the test suite writes itself in WAT (tests/common/hostile.rs), so the grant is exact.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// A TCP service reachable from the device: echoes until EOF, then closes its side.
fn echo_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// Config lines loading `wasm` as an extra `authorize` plugin (after the built-in one).
fn authorize_plugin(dir: &Path, wasm: &[u8]) -> String {
    let path = dir.join("grant.wasm");
    std::fs::write(&path, wasm).unwrap();
    format!(
        "\n[[plugins]]\nhook = \"authorize\"\npath = \"{}\"\n",
        path.display()
    )
}

/// `ssh -W 127.0.0.1:<port>` through the gateway, sending `input` and returning what came back.
fn forward(f: &SshFixture, otk: &str, port: u16, input: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new("sshpass")
        .args(["-p", otk, "ssh", "-p", &f.ssh_port.to_string()])
        .args(SSH_OPTS)
        .args(["-W", &format!("127.0.0.1:{port}"), "admin:edge-1@127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = wait_for(child, T);
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `ssh -R <device_port>:127.0.0.1:<port>` through the gateway: a command on the device
/// connects to its end of the forwarding and says hello to the service behind `port`, which
/// echoes it back.
fn remote_forward(f: &SshFixture, otk: &str, port: u16, device_port: u16) -> (i32, String, String) {
    let mut cmd = Command::new("sshpass");
    cmd.args(["-p", otk, "ssh", "-p", &f.ssh_port.to_string()])
        .args(["-o", "ExitOnForwardFailure=yes"])
        .args(SSH_OPTS)
        .args(["-R", &format!("{device_port}:127.0.0.1:{port}")])
        .arg("admin:edge-1@127.0.0.1")
        .arg(format!(
            "exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/{device_port}; printf hello >&3; head -c 5 <&3'"
        ))
        .stdin(Stdio::null());
    run_for(cmd, T)
}

/// Waits for `child` while reading its output (a full pipe would stall it); kills it and
/// fails after `limit`.
fn wait_for(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("client still running after {limit:?}");
        }
    }
}

/// Waits until `pattern` runs on the device; returns when it was first seen.
async fn running(pattern: &str) -> Instant {
    assert!(
        device_process_started(pattern, Duration::from_secs(10)),
        "{pattern} never started on the device"
    );
    Instant::now()
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_forwarding_needs_the_policy_obligation() {
    let echo = echo_service();
    // The built-in policies grant no obligations: `ssh -W` is refused, the session is not.
    let f = SshFixture::start("27110-27119", "");
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, err) = forward(&f, &otk, echo, b"hello\n");
    assert_ne!(code, 0, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("stdio forwarding failed"), "{err}");
    assert!(f.gw.log_shows("ssh.forwarding_refused", Duration::from_secs(5)));
    // Nor may the device listen for the user (`ssh -R`).
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, err) = remote_forward(&f, &otk, echo, 27196);
    assert_eq!(code, 255, "{out} {err}");
    assert!(err.contains("remote port forwarding failed"), "{err}");
    assert!(
        f.gw.log_shows(
            "tcpip-forward: no policy obligation",
            Duration::from_secs(5)
        ),
        "{}",
        f.gw.plain_log()
    );
    drop(f);

    let dir = tempfile::tempdir().unwrap();
    let grant = hostile::allow_with("authorize", None, &["allow-tcp-forwarding"]);
    let f = SshFixture::start("27110-27119", &authorize_plugin(dir.path(), &grant));
    let otk = f.otk("admin", "edge-1").await;
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (code, out, err) = forward(&f, &otk, echo, &input);
    assert_eq!(code, 0, "{err}\n{}", f.gw.plain_log());
    assert!(
        out == input,
        "echo through the device differs ({} bytes)",
        out.len()
    );
    assert!(f.gw.log_shows("ssh.forwarding", Duration::from_secs(5)));
    // With the obligation the device listens, and its connections come back to the user side.
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, err) = remote_forward(&f, &otk, echo, 27197);
    assert_eq!(
        (code, out.as_str()),
        (0, "hello"),
        "{err}\n{}",
        f.gw.plain_log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_forwarding_needs_the_policy_obligation() {
    // A real ssh-agent holding one key, on the user's side.
    let dir = tempfile::tempdir().unwrap();
    let (key, sock) = (dir.path().join("k"), dir.path().join("agent.sock"));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "sp-agent-test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "ssh-agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let list_keys = |f: &SshFixture, otk: &str| {
        let mut cmd = Command::new("sshpass");
        cmd.args(["-p", otk, "ssh", "-A", "-p", &f.ssh_port.to_string()])
            .args(SSH_OPTS)
            .args(["admin:edge-1@127.0.0.1", "ssh-add -l"])
            .env("SSH_AUTH_SOCK", &sock)
            .stdin(Stdio::null());
        run_for(cmd, T)
    };

    // Without the obligation the device gets no agent (ssh-add: 2 = no agent to talk to).
    let f = SshFixture::start("27160-27169", "");
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, err) = list_keys(&f, &otk);
    assert_eq!(code, 2, "{out} {err}");
    assert!(f.gw.log_shows("agent: no policy obligation", Duration::from_secs(5)));
    // A row in the audit table, not just a log line.
    let db = rusqlite::Connection::open(f.tmp.path().join("data/sallyport.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (subject, reason): (String, String) = match db.query_row(
            "SELECT subject, reason FROM audit WHERE event = 'ssh.forwarding_refused'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ) {
            Ok(row) => row,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => panic!("no audit row: {e}"),
        };
        assert_eq!(subject, "admin");
        assert!(reason.starts_with("agent:"), "{reason}");
        break;
    }
    drop(f);

    let grant = hostile::allow_with("authorize", None, &["allow-agent-forwarding"]);
    let f = SshFixture::start("27160-27169", &authorize_plugin(dir.path(), &grant));
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, err) = list_keys(&f, &otk);
    assert_eq!(code, 0, "{err}\n{}", f.gw.plain_log());
    assert!(
        out.contains("sp-agent-test") && out.contains("ED25519"),
        "{out}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_max_ttl_grant_cuts_the_session_when_it_is_reached() {
    const TTL: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let grant = hostile::allow_with("authorize", Some(TTL as u32), &[]);
    let f = SshFixture::start("27120-27129", &authorize_plugin(dir.path(), &grant));
    let otk = f.otk("admin", "edge-1").await;
    let spawned = Instant::now();
    let child = ssh(f.ssh_port, "admin:edge-1", &otk, &["exec sleep 64"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Login happened between `spawned` and `seen`, so the cut is due in that window + TTL.
    let seen = running("^sleep 64").await;
    let out = wait_for(child, T);
    let ended = Instant::now();
    assert!(!out.status.success());
    assert!(
        ended >= spawned + Duration::from_secs(TTL),
        "cut after {:?}, before the grant's {TTL} s",
        ended - spawned
    );
    assert!(
        ended <= seen + Duration::from_secs(TTL + 1),
        "cut {:?} after the command started; the grant allows {TTL} s",
        ended - seen
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("longest time its policy allows"), "{err}");
    assert!(
        !device_process_running("^sleep 64"),
        "device side left running"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_ssh_access_expiry_cuts_within_a_second() {
    let f = SshFixture::start("27130-27139", "");
    let c = client();
    let ticket = login(&c, &f.gw, "admin", "admin-pw").await;
    let (status, a) = post(
        &c,
        &f.gw,
        &ticket,
        &format!("/control-plane/{EDGE_ID}/transient-accesses"),
        json!({"expire_after_minutes": 15, "type": "ssh", "full_access": true}),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    let (user, pass, port) = (
        a["username"].as_str().unwrap(),
        a["password"].as_str().unwrap(),
        a["port"].as_u64().unwrap() as u16,
    );
    let child = ssh(port, user, pass, &["exec sleep 65"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    running("^sleep 65").await;
    // Fifteen minutes is the shortest access: move its end near instead (WAL mode admits a
    // second writer), and let the gateway's own sweeper find it.
    let db = rusqlite::Connection::open(f.tmp.path().join("data/sallyport.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let expires_at = now_unix_ms() + 400;
    let n = db
        .execute(
            "UPDATE transient_accesses SET expires_at = ?1 WHERE id = ?2",
            rusqlite::params![expires_at, a["id"].as_str().unwrap()],
        )
        .unwrap();
    assert_eq!(n, 1);
    let out = wait_for(child, T);
    let late = now_unix_ms() - expires_at;
    assert!(late <= 1000, "cut {late} ms after expires_at");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has expired"), "{err}");
    assert!(
        device_process_gone("^sleep 65", Duration::from_secs(2)),
        "sleep still running on the device"
    );
    let (_, shown) = get(
        &c,
        &f.gw,
        &ticket,
        &format!(
            "/sites/{EDGE_ID}/transient-accesses/{}",
            a["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(shown["expired"], true, "{shown}");
    assert_eq!(shown["revoked_early"], false, "{shown}");
    let (code, _, _) = run_for(ssh(port, user, pass, &["true"]), T);
    assert_ne!(code, 0, "the expired access still logs in");
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn x11_forwarding_needs_the_policy_obligation() {
    // A real X server (Xvfb) as the user's display; the device runs a real X client through
    // the forwarding, which asks the server for its vendor.
    const DISPLAY: &str = ":93";
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _xvfb = KillOnDrop(
        Command::new("Xvfb")
            .args([DISPLAY, "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let socket = std::path::Path::new("/tmp/.X11-unix/X93");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "Xvfb did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ask_vendor = |f: &SshFixture, otk: &str| {
        let mut cmd = Command::new("sshpass");
        cmd.args(["-p", otk, "ssh", "-Y", "-p", &f.ssh_port.to_string()])
            .args(SSH_OPTS)
            .args(["admin:edge-1@127.0.0.1", "xdpyinfo | grep 'vendor string'"])
            .env("DISPLAY", DISPLAY)
            .stdin(Stdio::null());
        run_for(cmd, T)
    };

    // Without the obligation the device gets no display.
    let f = SshFixture::start("27180-27189", "");
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, err) = ask_vendor(&f, &otk);
    assert_ne!(code, 0, "{out} {err}");
    assert!(!out.contains("vendor string"), "{out}");
    assert!(f.gw.log_shows("x11: no policy obligation", Duration::from_secs(5)));
    drop(f);

    let dir = tempfile::tempdir().unwrap();
    let grant = hostile::allow_with("authorize", None, &["allow-x11-forwarding"]);
    let f = SshFixture::start("27180-27189", &authorize_plugin(dir.path(), &grant));
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, err) = ask_vendor(&f, &otk);
    assert_eq!(code, 0, "{err}\n{}", f.gw.plain_log());
    assert!(out.contains("vendor string:"), "{out}");
}
