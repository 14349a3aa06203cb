//! End-to-end tests of the SSH forwarder: a real OpenSSH `sshd` plays the managed device, the
//! real `sallyport` binary sits in front of it, and the real `ssh`, `sshpass`, `scp`, `sftp`
//! and `rsync` clients connect through it.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn exec_output_exit_codes_and_single_use() {
    let f = SshFixture::start("27000-27009", "");
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, err) = run_for(
        ssh(
            f.ssh_port,
            "admin:edge-1",
            &otk,
            &["echo hello; whoami; echo oops >&2; exit 3"],
        ),
        T,
    );
    assert_eq!(code, 3, "stdout {out:?} stderr {err:?}\n{}", f.gw.log());
    assert_eq!(out, format!("hello\n{FULL_USER}\n"));
    assert!(err.contains("oops"), "{err:?}");

    // The key is single use: the same key again is refused (sshpass: 5 = wrong password).
    let (code, out, _) = run_for(ssh(f.ssh_port, "admin:edge-1", &otk, &["echo again"]), T);
    assert_eq!(code, 5, "{out}");
    assert!(out.is_empty());

    // `#` works like `:`, stdin reaches the command and EOF ends it.
    let otk = f.otk("admin", "edge-1").await;
    let mut cmd = ssh(f.ssh_port, "admin#edge-1", &otk, &["wc -c"]);
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), vec![b'x'; 100_000]).unwrap();
    cmd.stdin(std::fs::File::open(input.path()).unwrap());
    let (code, out, _) = run_for(cmd, T);
    assert_eq!((code, out.trim()), (0, "100000"));

    // A key for another device, a garbage key and a login without a device: refused alike.
    let other = f.otk("admin", "core-1").await;
    for (login, key) in [
        ("admin:edge-1", other.as_str()),
        ("admin:edge-1", "nope"),
        ("admin", other.as_str()),
    ] {
        let (code, _, _) = run_for(ssh(f.ssh_port, login, key, &["true"]), T);
        assert_eq!(code, 5, "{login}");
    }
    // The other device's key still works: refusals did not consume it.
    let (code, out, _) = run_for(ssh(f.ssh_port, "admin:core-1", &other, &["echo core"]), T);
    assert_eq!((code, out.as_str()), (0, "core\n"));

    // Each method on its own: OpenSSH tries keyboard-interactive before password, so the
    // password method is only reached when it is the one asked for.
    for method in ["password", "keyboard-interactive"] {
        let otk = f.otk("admin", "edge-1").await;
        let mut cmd = Command::new("sshpass");
        cmd.args(["-p", &otk, "ssh", "-p", &f.ssh_port.to_string(), "-o"])
            .arg(format!("PreferredAuthentications={method}"))
            .args(SSH_OPTS)
            .args(["admin:edge-1@127.0.0.1", "echo via-method"])
            .stdin(Stdio::null());
        let (code, out, err) = run_for(cmd, T);
        assert_eq!((code, out.as_str()), (0, "via-method\n"), "{method}: {err}");
    }

    let log = f.gw.plain_log();
    for needle in [
        "event=ssh.login",
        "event=session.redeem_refused",
        "event=connect.refused",
        "event=ssh.session.end",
        "bytes user->device 100000",
    ] {
        assert!(log.contains(needle), "log lacks {needle}:\n{log}");
    }
    assert!(!log.contains(&otk), "a key reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_and_full_land_as_different_device_users() {
    let f = SshFixture::start("27010-27019", "");
    let otk = f.otk("alice", "edge-1").await;
    let (code, out, err) = run_for(ssh(f.ssh_port, "alice:edge-1", &otk, &["whoami"]), T);
    assert_eq!((code, out.trim()), (0, RO_USER), "{err}\n{}", f.gw.log());
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, _) = run_for(ssh(f.ssh_port, "admin:edge-1", &otk, &["whoami"]), T);
    assert_eq!((code, out.trim()), (0, FULL_USER));

    // TCP forwarding needs a policy obligation the built-in policies never give.
    let otk = f.otk("admin", "edge-1").await;
    let mut cmd = ssh(f.ssh_port, "admin:edge-1", &otk, &[]);
    cmd.args(["-W", &format!("127.0.0.1:{}", f.sshd.port)]);
    let (code, out, err) = run_for(cmd, T);
    assert_ne!(code, 0);
    assert!(!out.contains("SSH-2.0"), "forwarded: {out:?}");
    assert!(
        err.contains("forwarding failed") || err.contains("prohibited"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_keys_pinned_and_trusted_on_first_use() {
    let mut f = SshFixture::start("27020-27029", "");
    // Pinned to a key the device does not have: refused with a message, nothing runs.
    let otk = f.otk("admin", "bad-1").await;
    let (code, out, err) = run_for(ssh(f.ssh_port, "admin:bad-1", &otk, &["echo ran"]), T);
    assert_ne!(code, 0);
    assert!(!out.contains("ran"));
    assert!(err.contains("host key"), "{err:?}");

    // No pin: the first key is trusted and recorded...
    let otk = f.otk("admin", "core-1").await;
    let (code, out, _) = run_for(ssh(f.ssh_port, "admin:core-1", &otk, &["echo first"]), T);
    assert_eq!((code, out.as_str()), (0, "first\n"));
    // ...and a device that comes back with another key is refused.
    let port = f.sshd.port;
    f.sshd.stop();
    let dir = f.sshd.dir.clone();
    f.sshd = Sshd::start(&dir, Some(port), &f.ro_pubkey);
    let otk = f.otk("admin", "core-1").await;
    let (code, out, err) = run_for(ssh(f.ssh_port, "admin:core-1", &otk, &["echo second"]), T);
    assert_ne!(code, 0);
    assert!(!out.contains("second"));
    assert!(err.contains("host key"), "{err:?}");
    let log = f.gw.plain_log();
    assert_eq!(
        log.matches("event=ssh.host_key_trusted").count(),
        1,
        "{log}"
    );
    assert!(
        log.matches("event=ssh.host_key_mismatch").count() >= 2,
        "{log}"
    );
}

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `sshpass -p KEY <tool> …` with the common options and the gateway's port flag.
fn tool(password: &str, program: &str, port_flag: &str, port: u16) -> Command {
    let mut cmd = Command::new("sshpass");
    cmd.args(["-p", password, program, port_flag, &port.to_string()])
        .args(SSH_OPTS)
        .stdin(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn scp_sftp_and_rsync_through_the_gateway() {
    let f = SshFixture::start("27030-27039", "");
    let local = f.tmp.path().join("big.bin");
    let mut data = vec![0u8; 50 * 1024 * 1024];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&local, &data).unwrap();
    let remote = format!("sp-test-{}.bin", std::process::id());

    // scp up and back down: 50 MB, equal checksums.
    let started = Instant::now();
    let mut up = tool(&f.otk("admin", "edge-1").await, "scp", "-P", f.ssh_port);
    up.arg(&local)
        .arg(format!("admin#edge-1@127.0.0.1:{remote}"));
    let (code, _, err) = run_for(up, T);
    assert_eq!(code, 0, "scp up: {err}");
    let back = f.tmp.path().join("back.bin");
    let mut down = tool(&f.otk("admin", "edge-1").await, "scp", "-P", f.ssh_port);
    // scp checks user names in the source argument and rejects `#`; `-o User=` passes it.
    down.args(["-o", "User=admin#edge-1"])
        .arg(format!("127.0.0.1:{remote}"))
        .arg(&back);
    let (code, _, err) = run_for(down, T);
    assert_eq!(code, 0, "scp down: {err}");
    assert_eq!(sha256(&back), sha256(&local));
    eprintln!("scp 2 x 50 MB round trip: {:?}", started.elapsed());
    // OpenSSH 9's scp speaks SFTP; `-O` is the legacy protocol (an `scp -f` exec on the
    // device), which older clients and scripts still use.
    let legacy = f.tmp.path().join("legacy.bin");
    let mut old = tool(&f.otk("admin", "edge-1").await, "scp", "-P", f.ssh_port);
    old.args(["-O", "-o", "User=admin#edge-1"])
        .arg(format!("127.0.0.1:{remote}"))
        .arg(&legacy);
    let (code, _, err) = run_for(old, T);
    assert_eq!(code, 0, "scp -O down: {err}");
    assert_eq!(sha256(&legacy), sha256(&local));

    // sftp put and get in one batch.
    let batch = f.tmp.path().join("batch");
    let got = f.tmp.path().join("sftp-got.bin");
    std::fs::write(
        &batch,
        format!(
            "put {} {remote}.sftp\nget {remote}.sftp {}\nrm {remote}.sftp\n",
            back.display(),
            got.display()
        ),
    )
    .unwrap();
    let mut sftp = tool(&f.otk("admin", "edge-1").await, "sftp", "-P", f.ssh_port);
    // Commands on stdin rather than `-b`, which would forbid password prompts (BatchMode).
    sftp.arg("admin#edge-1@127.0.0.1")
        .stdin(std::fs::File::open(&batch).unwrap());
    let (code, _, err) = run_for(sftp, T);
    assert_eq!(code, 0, "sftp: {err}");
    assert_eq!(sha256(&got), sha256(&local));

    // rsync -e ssh: a tree with a changed file syncs to the device and back.
    let tree = f.tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(tree.join("sub/b.txt"), "beta\n").unwrap();
    let e = format!("ssh -p {} {}", f.ssh_port, SSH_OPTS.join(" "));
    let mut rsync = Command::new("sshpass");
    rsync
        .args([
            "-p",
            &f.otk("admin", "edge-1").await,
            "rsync",
            "-a",
            "-e",
            &e,
        ])
        .arg(format!("{}/", tree.display()))
        .arg(format!("admin#edge-1@127.0.0.1:{remote}.tree/"))
        .stdin(Stdio::null());
    let (code, _, err) = run_for(rsync, T);
    assert_eq!(code, 0, "rsync up: {err}");
    let (code, out, _) = run_for(
        ssh(
            f.ssh_port,
            "admin:edge-1",
            &f.otk("admin", "edge-1").await,
            &[&format!(
                "cat {remote}.tree/sub/b.txt; echo changed on the device > {remote}.tree/a.txt"
            )],
        ),
        T,
    );
    assert_eq!((code, out.as_str()), (0, "beta\n"));
    // The file changed on the device syncs back down.
    let mut rsync = Command::new("sshpass");
    rsync
        .args([
            "-p",
            &f.otk("admin", "edge-1").await,
            "rsync",
            "-a",
            "-e",
            &e,
        ])
        .arg(format!("admin#edge-1@127.0.0.1:{remote}.tree/"))
        .arg(format!("{}/", tree.display()))
        .stdin(Stdio::null());
    let (code, _, err) = run_for(rsync, T);
    assert_eq!(code, 0, "rsync down: {err}");
    assert_eq!(
        std::fs::read_to_string(tree.join("a.txt")).unwrap(),
        "changed on the device\n"
    );
    assert_eq!(
        std::fs::read_to_string(tree.join("sub/b.txt")).unwrap(),
        "beta\n"
    );
    let (code, _, _) = run_for(
        ssh(
            f.ssh_port,
            "admin:edge-1",
            &f.otk("admin", "edge-1").await,
            &[&format!("rm -rf {remote} {remote}.tree")],
        ),
        T,
    );
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_shell_with_pty_env_and_window_size() {
    let f = SshFixture::start("27040-27049", "");
    let otk = f.otk("admin", "edge-1").await;
    let mut cmd = Command::new("sshpass");
    cmd.args(["-p", &otk, "ssh", "-tt", "-p", &f.ssh_port.to_string()])
        .args(SSH_OPTS)
        .args(["-o", "SendEnv=SP_*"])
        .env("SP_GREETING", "hola")
        .arg("admin:edge-1@127.0.0.1")
        .stdin(Stdio::piped());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "tty; echo \"env=$SP_GREETING\"; stty size; exit 7").unwrap();
    }
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "shell did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert_eq!(status.code(), Some(7), "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("env=hola"), "{out}");
}

/// Terminates session `id` through the REST API.
async fn terminate(f: &SshFixture, ticket: &str, id: &str) {
    let (status, body) = post(
        &client(),
        &f.gw,
        ticket,
        "/api/v1/tracking/opensessions/terminate",
        json!({"sessions": id}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Waits until `cmd` (already spawned) has been running on the device, i.e. the session shows
/// `initiated`, and returns its session id.
async fn initiated_session(f: &SshFixture, ticket: &str) -> String {
    let c = client();
    for _ in 0..200 {
        let (_, list) = get(&c, &f.gw, ticket, "/api/v1/tracking/opensessions").await;
        if let Some(s) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["state"] == "initiated")
        {
            return s["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no session was initiated");
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_cuts_a_running_command_within_a_second() {
    let f = SshFixture::start("27050-27059", "");
    let c = client();
    let ticket = login(&c, &f.gw, "admin", "admin-pw").await;
    let otk = f.otk("admin", "edge-1").await;
    let mut child = ssh(
        f.ssh_port,
        "admin:edge-1",
        &otk,
        &["echo started; exec sleep 61"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let id = initiated_session(&f, &ticket).await;
    // Let the command start on the device.
    assert!(
        device_process_started("^sleep 61", Duration::from_secs(5)),
        "sleep never started on the device"
    );
    terminate(&f, &ticket, &id).await;
    let cut_at = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(cut_at.elapsed() < Duration::from_secs(5), "not cut");
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = cut_at.elapsed();
    assert!(elapsed <= Duration::from_secs(1), "cut after {elapsed:?}");
    assert_ne!(code, Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("terminated"), "{err:?}");
    // The device side is gone too.
    assert!(
        device_process_gone("^sleep 61", Duration::from_secs(2)),
        "sleep still running on the device"
    );
    assert!(f.gw.log_shows("the session was terminated", Duration::from_secs(5)));
}

async fn create_transient(f: &SshFixture, ticket: &str, cidr: &str) -> serde_json::Value {
    let (status, body) = post(
        &client(),
        &f.gw,
        ticket,
        &format!("/control-plane/{EDGE_ID}/transient-accesses"),
        json!({"expire_after_minutes": 15, "type": "ssh", "full_access": true, "allow_rfc1918": true, "allow_only_cidr": cidr}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_ssh_access_on_its_own_port_source_limited_and_revocable() {
    let f = SshFixture::start("27060-27069", "");
    let c = client();
    let ticket = login(&c, &f.gw, "admin", "admin-pw").await;
    let a = create_transient(&f, &ticket, "127.0.0.1/32").await;
    let (user, pass, port) = (
        a["username"].as_str().unwrap(),
        a["password"].as_str().unwrap(),
        a["port"].as_u64().unwrap() as u16,
    );

    let (code, out, err) = run_for(ssh(port, user, pass, &["whoami"]), T);
    assert_eq!(
        (code, out.trim()),
        (0, FULL_USER),
        "{err}\n{}",
        f.gw.plain_log()
    );
    // Reusable until it ends, unlike a one-time key.
    let (code, _, _) = run_for(ssh(port, user, pass, &["true"]), T);
    assert_eq!(code, 0);
    // Wrong password, and the right one from outside allow_only_cidr: refused.
    let (code, _, _) = run_for(ssh(port, user, "wrong", &["true"]), T);
    assert_eq!(code, 5);
    let outside = |command: &str| {
        let mut c = Command::new("sshpass");
        c.args([
            "-p",
            pass,
            "ssh",
            "-b",
            "127.0.0.2",
            "-p",
            &port.to_string(),
        ])
        .args(SSH_OPTS)
        .arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .stdin(Stdio::null());
        c
    };
    // From outside, the connection is closed before the SSH handshake: no password prompt
    // (sshpass would say 5), ssh's own failure (255), and no failed login counted.
    let (code, out, err) = run_for(outside("echo inside"), T);
    assert_eq!(code, 255, "{out} {err}");
    assert!(!out.contains("inside"));
    assert!(
        err.contains("kex_exchange_identification") || err.contains("Connection closed"),
        "{err}"
    );
    // More than the penalty's 5 failures: none counts, so the source is not penalised.
    for _ in 0..5 {
        assert_eq!(run_for(outside("true"), T).0, 255);
    }
    let log = f.gw.plain_log();
    assert!(log.contains("source 127.0.0.2 is outside"), "{log}");
    assert!(!log.contains("event=ssh.source_penalised"), "{log}");
    // The access's credentials do not work on the main port.
    let (code, _, _) = run_for(ssh(f.ssh_port, user, pass, &["true"]), T);
    assert_eq!(code, 5);
    // An access without full_access logs in to the device with the read-only credentials.
    let (status, ro) = post(
        &c,
        &f.gw,
        &ticket,
        &format!("/control-plane/{EDGE_ID}/transient-accesses"),
        json!({"expire_after_minutes": 15, "type": "ssh", "full_access": false}),
    )
    .await;
    assert_eq!(status, 201, "{ro}");
    let (code, out, err) = run_for(
        ssh(
            ro["port"].as_u64().unwrap() as u16,
            ro["username"].as_str().unwrap(),
            ro["password"].as_str().unwrap(),
            &["whoami"],
        ),
        T,
    );
    assert_eq!((code, out.trim()), (0, RO_USER), "{err}");

    // Revoke cuts a running command within a second and closes the port.
    let mut child = ssh(port, user, pass, &["exec sleep 62"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(device_process_started("^sleep 62", Duration::from_secs(5)));
    let r = c
        .delete(f.gw.url(&format!(
            "/sites/{EDGE_ID}/transient-accesses/{}",
            a["id"].as_str().unwrap()
        )))
        .header("ticket", &ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cut_at = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(cut_at.elapsed() < Duration::from_secs(5), "not cut");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        cut_at.elapsed() <= Duration::from_secs(1),
        "cut after {:?}",
        cut_at.elapsed()
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("revoked"), "{err:?}");
    assert!(
        device_process_gone("^sleep 62", Duration::from_secs(2)),
        "sleep still running on the device"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_listeners_come_back_after_restart() {
    let f = SshFixture::start("27070-27079", "");
    let c = client();
    let ticket = login(&c, &f.gw, "admin", "admin-pw").await;
    let a = create_transient(&f, &ticket, "127.0.0.0/8").await;
    let (user, pass, port) = (
        a["username"].as_str().unwrap(),
        a["password"].as_str().unwrap(),
        a["port"].as_u64().unwrap() as u16,
    );
    let SshFixture {
        tmp: _tmp,
        sshd: _sshd,
        gw,
        ..
    } = f;
    let path = gw.config_path.clone();
    gw.stop();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port open while stopped"
    );
    let _gw = Gateway::start(&path);
    let (code, out, err) = run_for(ssh(port, user, pass, &["whoami"]), T);
    assert_eq!((code, out.trim()), (0, FULL_USER), "{err}");
}

/// A blocking TCP connection to 127.0.0.1:`port` from source address `src`.
async fn tcp_from(src: &str, port: u16) -> std::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((
            src.parse::<std::net::Ipv4Addr>().unwrap(),
            0,
        )))
        .unwrap();
    let s = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap()
        .into_std()
        .unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_penalise_the_source_and_idle_logins_time_out() {
    let f = SshFixture::start(
        "27080-27089",
        "ssh_penalty_failures = 3\nssh_penalty_secs = 30\nssh_login_grace_secs = 2\n\
         ssh_max_unauthenticated_per_source = 3",
    );
    // Reads until the gateway closes the connection; how long that took.
    let until_closed = |mut s: std::net::TcpStream| {
        let t = Instant::now();
        let mut buf = [0u8; 4096];
        while let Ok(1..) = std::io::Read::read(&mut s, &mut buf) {}
        t.elapsed()
    };
    // Three idle connections from one source fill its unauthenticated slots: a fourth from it
    // is closed at once, while another source still gets the SSH banner.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tcp_from("127.0.0.5", f.ssh_port).await);
    }
    std::thread::sleep(Duration::from_millis(200));
    let fourth = until_closed(tcp_from("127.0.0.5", f.ssh_port).await);
    assert!(fourth < Duration::from_secs(1), "{fourth:?}");
    let mut banner = [0u8; 8];
    std::io::Read::read_exact(&mut tcp_from("127.0.0.6", f.ssh_port).await, &mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    // Connections that never log in are dropped after the grace time...
    let waits: Vec<Duration> = idle
        .into_iter()
        .map(|s| std::thread::spawn(move || until_closed(s)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    for waited in waits {
        assert!(
            waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
            "{waited:?}"
        );
    }
    // ...and each counts as a failed login: after three, the source is penalised.
    assert!(f.gw.log_shows("login grace time exceeded", Duration::from_secs(5)));
    let otk = f.otk("admin", "edge-1").await;
    let mut late = Command::new("sshpass");
    late.args([
        "-p",
        &otk,
        "ssh",
        "-b",
        "127.0.0.5",
        "-p",
        &f.ssh_port.to_string(),
    ])
    .args(SSH_OPTS)
    .args(["admin:edge-1@127.0.0.1", "echo no"])
    .stdin(Stdio::null());
    let (code, out, _) = run_for(late, T);
    assert_eq!(code, 255, "{out}");

    for _ in 0..3 {
        let (code, _, _) = run_for(
            ssh(
                f.ssh_port,
                "admin:edge-1",
                "0123456789abcdef0123456789abcdef",
                &["true"],
            ),
            T,
        );
        assert_eq!(code, 5);
    }
    // Now even a valid key is turned away before the handshake, from this source only.
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, _) = run_for(ssh(f.ssh_port, "admin:edge-1", &otk, &["echo no"]), T);
    assert_eq!(code, 255, "{out}");
    let mut other = Command::new("sshpass");
    other
        .args([
            "-p",
            &otk,
            "ssh",
            "-b",
            "127.0.0.3",
            "-p",
            &f.ssh_port.to_string(),
        ])
        .args(SSH_OPTS)
        .arg("admin:edge-1@127.0.0.1")
        .arg("echo yes")
        .stdin(Stdio::null());
    let (code, out, _) = run_for(other, T);
    assert_eq!((code, out.as_str()), (0, "yes\n"));
    assert!(f.gw.log_shows("event=ssh.source_penalised", Duration::from_secs(5)));
    // Connections turned away before the handshake are audit rows too, per source.
    let db = rusqlite::Connection::open(f.tmp.path().join("data/sallyport.db")).unwrap();
    let rows = |event: &str, source: &str| -> i64 {
        db.query_row(
            "SELECT count(*) FROM audit WHERE event = ?1 AND source = ?2",
            [event, source],
            |r| r.get(0),
        )
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while rows("ssh.refused_penalised", "127.0.0.1") == 0 {
        assert!(Instant::now() < deadline, "no ssh.refused_penalised row");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rows("ssh.refused_busy", "127.0.0.5") >= 1);
    assert!(rows("ssh.refused_penalised", "127.0.0.5") >= 1);

    // The grace time bounds the login only: a logged-in session outlives it. (Regression: the
    // timer armed before login used to cut every session after the grace time.)
    let otk = f.otk("admin", "edge-1").await;
    let mut late = Command::new("sshpass");
    late.args([
        "-p",
        &otk,
        "ssh",
        "-b",
        "127.0.0.4",
        "-p",
        &f.ssh_port.to_string(),
    ])
    .args(SSH_OPTS)
    .arg("admin:edge-1@127.0.0.1")
    .arg("sleep 3; echo survived")
    .stdin(Stdio::null());
    let (code, out, err) = run_for(late, T);
    assert_eq!((code, out.as_str()), (0, "survived\n"), "{err}");
}

// Regression: russh blocks its session loop on a full channel buffer, and a bridge that awaited
// a send while the other direction was saturated deadlocked (seen in 2 of 5 runs before the
// read-ahead in ssh/bridge.rs). `cat` echoes everything back, so both directions are saturated
// at once; several rounds make a stall near-certain to show, and a watchdog turns a stall into
// a failure instead of a hung CI job.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_both_ways_at_once_does_not_stall() {
    let f = SshFixture::start("27090-27099", "");
    let input = f.tmp.path().join("in.bin");
    let content: Vec<u8> = (0..32u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&input, &content).unwrap();
    for round in 0..4 {
        let mut cmd = ssh(
            f.ssh_port,
            "admin:edge-1",
            &f.otk("admin", "edge-1").await,
            &["cat"],
        );
        cmd.stdin(std::fs::File::open(&input).unwrap());
        let output = f.tmp.path().join("out.bin");
        cmd.stdout(std::fs::File::create(&output).unwrap());
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("round {round}: echo of 32 MiB stalled for 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "round {round}: {status}");
        assert!(
            std::fs::read(&output).unwrap() == content,
            "round {round}: echo differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_shutdown_closes_sessions_with_a_message() {
    let f = SshFixture::start("27100-27109", "");
    let otk = f.otk("admin", "edge-1").await;
    let mut child = ssh(f.ssh_port, "admin:edge-1", &otk, &["exec sleep 63"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if device_process_running("^sleep 63") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let SshFixture {
        tmp: _tmp,
        sshd: _sshd,
        gw,
        ..
    } = f;
    let stopping = Instant::now();
    gw.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    let status = child.wait().unwrap();
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("shutting down"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_ssh_listeners_use_transient_listen_ip_and_pass_over_a_held_port() {
    // Another socket holds the only port of the range on the transient address.
    let blocker = std::net::TcpListener::bind("127.0.0.3:27140").unwrap();
    let f = SshFixture::start("27140-27140", "transient_listen_ip = \"127.0.0.3\"");
    let c = client();
    let ticket = login(&c, &f.gw, "admin", "admin-pw").await;
    let body = json!({"expire_after_minutes": 15, "type": "ssh", "full_access": true, "allow_only_cidr": "127.0.0.0/8"});
    let path = format!("/control-plane/{EDGE_ID}/transient-accesses");
    let held = post(&c, &f.gw, &ticket, &path, body.clone()).await;
    assert_error(&held, 503, "no free port");
    // An SSH access that could never log in (no read-only credential on the device) is
    // refused when asked for, not at its first login.
    let refused = post(
        &c,
        &f.gw,
        &ticket,
        "/control-plane/4a1e2c3b-5d6f-4a7b-8c9d-0e1f2a3b4c5d/transient-accesses",
        json!({"expire_after_minutes": 15, "type": "ssh", "full_access": false}),
    )
    .await;
    assert_error(&refused, 400, "no read_only credential");
    drop(blocker);
    let (status, a) = post(&c, &f.gw, &ticket, &path, body).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["port"], 27140);
    let (user, pass) = (
        a["username"].as_str().unwrap(),
        a["password"].as_str().unwrap(),
    );
    let mut cmd = Command::new("sshpass");
    cmd.args(["-p", pass, "ssh", "-p", "27140"])
        .args(SSH_OPTS)
        .arg(format!("{user}@127.0.0.3"))
        .arg("whoami")
        .stdin(Stdio::null());
    let (code, out, err) = run_for(cmd, T);
    assert_eq!((code, out.trim()), (0, FULL_USER), "{err}");
    // Only there: not on the IP of `ssh_listen`.
    assert!(std::net::TcpStream::connect("127.0.0.1:27140").is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_killed_by_a_signal_reports_exit_signal() {
    let f = SshFixture::start("27150-27159", "");
    let otk = f.otk("admin", "edge-1").await;
    // OpenSSH's client has no exit code for a signal (it exits 255), but says at debug level
    // which channel request arrived: the device's exit-signal must come through as one.
    let mut cmd = Command::new("sshpass");
    cmd.args(["-p", &otk, "ssh", "-p", &f.ssh_port.to_string()])
        .args(["-o", "LogLevel=DEBUG1"])
        .args(SSH_OPTS)
        .args(["admin:edge-1@127.0.0.1", "kill -TERM $$"])
        .stdin(Stdio::null());
    let (code, _, err) = run_for(cmd, T);
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("rtype exit-signal"), "{err}");
    assert!(!err.contains("rtype exit-status"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_cuts_the_device_side_within_a_second_even_when_the_user_reads_nothing() {
    let f = SshFixture::start("27170-27179", "");
    let c = client();
    let ticket = login(&c, &f.gw, "admin", "admin-pw").await;
    let otk = f.otk("admin", "edge-1").await;
    // The device pours out data; the client's stdout is a pipe nobody reads, so every window
    // and buffer on the way fills and stays full.
    let mut child = ssh(
        f.ssh_port,
        "admin:edge-1",
        &otk,
        &["exec head -c 987654321987 /dev/zero"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let id = initiated_session(&f, &ticket).await;
    assert!(
        device_process_started("^head -c 987654321987", Duration::from_secs(10)),
        "the flood never started"
    );
    // Long enough for the buffers to fill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminate(&f, &ticket, &id).await;
    assert!(
        device_process_gone("^head -c 987654321987", Duration::from_secs(1)),
        "the device side still runs 1 s after terminate"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_resize_reaches_the_device() {
    let f = SshFixture::start("27190-27199", "");
    let otk = f.otk("admin", "edge-1").await;
    // ssh on a terminal of its own (`script`), answering the password through SSH_ASKPASS, so
    // resizing that terminal makes ssh send window-change like an interactive user's would.
    let askpass = f.tmp.path().join("askpass.sh");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{otk}'\n")).unwrap();
    std::fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let tty_file = f.tmp.path().join("tty");
    let inner = format!(
        "stty rows 24 cols 80; tty > {tty}; exec ssh -tt -p {port} {opts} admin:edge-1@127.0.0.1 \
         'stty size; sleep 2; stty size'",
        tty = tty_file.display(),
        port = f.ssh_port,
        opts = SSH_OPTS.join(" "),
    );
    let child = Command::new("script")
        .args(["-qfec", &inner, "/dev/null"])
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first size is printed on the device, resize the client's terminal.
    assert!(
        device_process_started("^sleep 2", Duration::from_secs(20)),
        "the command never started on the device"
    );
    let tty = std::fs::read_to_string(&tty_file).unwrap();
    let resized = Command::new("stty")
        .args(["-F", tty.trim(), "rows", "40", "cols", "100"])
        .status()
        .unwrap();
    assert!(resized.success());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("24 80"), "{text:?}");
    assert!(text.contains("40 100"), "{text:?}\n{}", f.gw.plain_log());
}
