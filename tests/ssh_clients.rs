//! End-to-end tests of the SSH forwarder as automation sees it, against the real binary and a
//! real `sshd` as the device: paramiko (Debian's `python3-paramiko`, behind Netmiko and
//! Ansible's paramiko connection) instead of OpenSSH, OpenSSH with each cipher the gateway
//! implements, and the session's state in tracking once its connection has ended.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Debian's interpreter, which has `python3-paramiko` (a `python3` earlier on `PATH`, such as
/// a pyenv shim, may not).
const PYTHON: &str = "/usr/bin/python3";

/// Logs in with paramiko's `Transport`: first with each of `wrong` (every one must be refused),
/// then with `key`, then runs `command` and prints its output. Paramiko asks for the
/// `ssh-userauth` service again before every attempt.
const PARAMIKO: &str = r#"
import socket, sys, time, paramiko
port, user, key, command = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
wrong = sys.argv[5:]
t = paramiko.Transport(socket.create_connection(("127.0.0.1", port)))
t.start_client(timeout=10)
t.auth_timeout = 20
for w in wrong:
    started = time.time()
    try:
        t.auth_password(user, w, fallback=False)
        sys.exit("a wrong key was accepted")
    except paramiko.AuthenticationException:
        print("refused in %.1f s" % (time.time() - started), file=sys.stderr)
t.auth_password(user, key, fallback=False)
chan = t.open_session()
chan.exec_command(command)
out = b""
while True:
    data = chan.recv(65536)
    if not data:
        break
    out += data
print(out.decode(), end="")
print("exit", chan.recv_exit_status())
t.close()
"#;

fn paramiko(port: u16, user: &str, key: &str, command: &str, wrong: &[&str]) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-c", PARAMIKO, &port.to_string(), user, key, command])
        .args(wrong);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn paramiko_logs_in_after_wrong_attempts_on_the_same_connection() {
    let f = SshFixture::start("24400-24409", "");
    let otk = f.otk("admin", "edge-1").await;
    let started = Instant::now();
    let (code, out, err) = run_for(
        paramiko(
            f.ssh_port,
            "admin:edge-1",
            &otk,
            "whoami; exit 4",
            &["nope", "still-wrong"],
        ),
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    assert_eq!(code, 0, "stdout {out:?} stderr {err:?}\n{}", f.gw.log());
    assert_eq!(out, format!("{FULL_USER}\nexit 4\n"), "stderr {err:?}");
    assert_eq!(err.matches("refused in").count(), 2, "{err}");
    // Two refusals cost the rejection delay (0.5 s) each, not the 30 s login grace time.
    assert!(took < Duration::from_secs(10), "took {took:?}: {err}");
    // The key was used once, by the successful attempt.
    let (code, _, _) = run_for(
        paramiko(f.ssh_port, "admin:edge-1", &otk, "true", &[]),
        Duration::from_secs(60),
    );
    assert_ne!(code, 0);
}

/// The gateway seals and opens ChaCha20-Poly1305 with OpenSSL's libcrypto
/// (`vendor/chachapoly`) and AES-GCM and AES-CTR with aws-lc: OpenSSH must read what each of
/// them writes and the other way round, so 1 MB goes to the device and back under each, with
/// a rekey every 256 KiB (each one makes new keys, and a new libcrypto context, mid-stream).
#[tokio::test(flavor = "multi_thread")]
async fn each_cipher_openssh_picks_carries_data_both_ways() {
    let f = SshFixture::start("24420-24429", "");
    each_cipher_carries_data(&f).await;
    assert!(!f.gw.plain_log().contains("using aws-lc"));
}

/// Where libcrypto offers no ChaCha20 (here: an OpenSSL configuration that asks for FIPS
/// implementations, which Debian does not ship), the gateway falls back to aws-lc's.
#[tokio::test(flavor = "multi_thread")]
async fn chacha20_poly1305_falls_back_to_aws_lc_when_libcrypto_lacks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("openssl.cnf");
    std::fs::write(
        &conf,
        "openssl_conf = openssl_init\n[openssl_init]\nalg_section = evp_properties\n\
         [evp_properties]\ndefault_properties = \"fips=yes\"\n",
    )
    .unwrap();
    let env = [("OPENSSL_CONF", conf.to_str().unwrap())];
    let f = SshFixture::start_env("24430-24439", "", &env);
    each_cipher_carries_data(&f).await;
    let log = f.gw.plain_log();
    assert_eq!(log.matches("using aws-lc").count(), 1, "{log}");
}

async fn each_cipher_carries_data(f: &SshFixture) {
    let input = f.tmp.path().join("in.bin");
    let content: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&input, &content).unwrap();
    for cipher in [
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-ctr",
    ] {
        let otk = f.otk("admin", "edge-1").await;
        let mut cmd = ssh(
            f.ssh_port,
            "admin:edge-1",
            &otk,
            &["-o", "RekeyLimit=256K", "-c", cipher, "cat"],
        );
        cmd.stdin(std::fs::File::open(&input).unwrap());
        let output = cmd.output().unwrap();
        assert!(
            output.status.success(),
            "{cipher}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            f.gw.log()
        );
        assert!(output.stdout == content, "{cipher}: the echo differs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tracking_shows_a_session_over_once_its_connection_ends() {
    let f = SshFixture::start("24410-24419", "");
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, _) = run_for(
        ssh(f.ssh_port, "admin:edge-1", &otk, &["echo done"]),
        Duration::from_secs(60),
    );
    assert_eq!((code, out.as_str()), (0, "done\n"));
    let c = client();
    let ticket = login(&c, &f.gw, "admin", "admin-pw").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let session = loop {
        let (_, list) = get(&c, &f.gw, &ticket, "/api/v1/tracking/opensessions").await;
        let s = list[0].clone();
        if s["state"] != "initiated" {
            break s;
        }
        assert!(Instant::now() < deadline, "still initiated: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(session["state"], "expired", "{session}");
    assert!(session["ended_at"].is_string(), "{session}");
    assert!(f.gw.plain_log().contains("event=session.closed"));
}
