//! End-to-end tests of the SSH forwarder: a real OpenSSH `sshd` plays the managed device, the
//! real `sallyport` binary sits in front of it, and the real `ssh`, `sshpass`, `scp`, `sftp`
//! and `rsync` clients connect through it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn exec_output_exit_codes_and_single_use() {
    let f = SshFixture::start("47000-47009", "");
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
    let f = SshFixture::start("47010-47019", "");
    let otk = f.otk("alice", "edge-1").await;
    let (code, out, err) = run_for(ssh(f.ssh_port, "alice:edge-1", &otk, &["whoami"]), T);
    assert_eq!((code, out.trim()), (0, RO_USER), "{err}\n{}", f.gw.log());
    let otk = f.otk("admin", "edge-1").await;
    let (code, out, _) = run_for(ssh(f.ssh_port, "admin:edge-1", &otk, &["whoami"]), T);
    assert_eq!((code, out.trim()), (0, FULL_USER));
}

#[tokio::test(flavor = "multi_thread")]
async fn host_keys_pinned_and_trusted_on_first_use() {
    let mut f = SshFixture::start("47020-47029", "");
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
