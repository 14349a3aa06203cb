//! The command line: `serve` with no configuration (embedded defaults, a generated admin
//! password printed once), `check-config` on good and bad files, `hash-password`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn sallyport(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_the_example_and_names_bad_keys() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sallyport.toml");
    let out = sallyport(&["check-config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 groups, 2 users, 2 devices"));

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\napi_listen = \"127.0.0.1:1\"\n\n[[groups]]\nname = \"x\"\nsudoo = true\n",
    )
    .unwrap();
    let out = sallyport(&["check-config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sudoo") && err.contains("line 6"), "{err}");

    std::fs::write(&bad, "[[users]]\nname = \"a\"\ngroups = [\"missing\"]\n").unwrap();
    let err = String::from_utf8_lossy(&sallyport(&["check-config", bad.to_str().unwrap()]).stderr)
        .to_string();
    assert!(err.contains("unknown group \"missing\""), "{err}");
    let err = String::from_utf8_lossy(&sallyport(&["check-config", "/nonexistent.toml"]).stderr)
        .to_string();
    assert!(err.contains("cannot read /nonexistent.toml"), "{err}");
}

#[test]
fn hash_password_prints_an_argon2id_hash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("s3cret"));
}

#[tokio::test]
async fn serve_without_config_uses_embedded_defaults() {
    // The defaults listen on 127.0.0.1:8443; skip rather than fail if something else holds it.
    if std::net::TcpListener::bind("127.0.0.1:8443").is_err() {
        eprintln!("port 8443 busy; skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("defaults.toml");
    let gw = Gateway::start_args(&["serve"], &marker, Some(tmp.path()));
    assert_eq!(gw.base, "https://127.0.0.1:8443");
    let line = gw
        .stdout_lines
        .iter()
        .find(|l| l.contains("generated password for user \"admin\""))
        .unwrap();
    let password = line
        .split(": ")
        .nth(2)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let data = tmp.path().join("sallyport-data");
    assert!(data.join("sallyport.db").exists() && data.join("tls/cert.pem").exists());
    let c = client();
    let ticket = login(&c, &gw, "admin", &password).await;
    assert!(!ticket.is_empty());
    assert!(
        !gw.log().contains(&password),
        "the password is printed on stdout only, never logged"
    );
    gw.stop();

    let gw = Gateway::start_args(&["serve"], &marker, Some(tmp.path()));
    assert!(
        !gw.stdout_lines
            .iter()
            .any(|l| l.contains("generated password")),
        "printed only once"
    );
    // A fresh client: the old one pools a connection to the previous process on this port.
    login(&client(), &gw, "admin", &password).await;
    gw.stop();
}
