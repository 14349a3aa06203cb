//! End-to-end tests of the web console and the tracking page in a real browser: a real OpenSSH
//! `sshd` plays the device, the real `sallyport` binary serves HTTPS with its self-signed
//! certificate, and Debian's `chromium` (headless, driven by `playwright-core` from
//! `tests/web/driver.mjs`) opens the pages. Screenshots land in `target/web-artifacts/`.
//!
//! Tooling: `node`, `chromium` (`.ci/apt-packages`) and `npm ci` in `tests/web`
//! (`.ci/before-tests`). Without them the tests are skipped locally, and fail when `CI` is set.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Where the browser tooling is; `None` (skip) only outside CI.
fn tooling() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/web");
    let chromium =
        std::env::var("SALLYPORT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut missing = Vec::new();
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node (apt-get install nodejs)".to_string());
    }
    if !Path::new(&chromium).exists() {
        missing.push(format!("{chromium} (apt-get install chromium)"));
    }
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push("tests/web/node_modules (npm ci in tests/web)".to_string());
    }
    if missing.is_empty() {
        return Some(dir);
    }
    let message = format!("browser tests need: {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("{message}; .ci/before-tests installs them");
    }
    eprintln!("skipping: {message}");
    None
}

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web-artifacts")
}

/// Runs one scenario of the driver against the fixture's gateway; returns what it saw.
async fn drive(dir: &Path, scenario: &str, f: &SshFixture) -> Value {
    let ticket = login(&client(), &f.gw, "admin", "admin-pw").await;
    let mut cmd = Command::new("node");
    cmd.current_dir(dir)
        .arg("driver.mjs")
        .args([scenario, &f.gw.base, &ticket])
        .arg(artifacts());
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run_for(cmd, Duration::from_secs(240)))
            .await
            .unwrap();
    let result: Value = out
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("driver printed no result (exit {code}):\n{out}\n{err}"));
    assert!(
        code == 0 && result["ok"] == true,
        "driver failed (exit {code}): {}\nstderr: {err}\ngateway log:\n{}",
        serde_json::to_string_pretty(&result).unwrap(),
        f.gw.plain_log()
    );
    for (key, what) in [("restCutMs", "REST"), ("cutMs", "tracking-page")] {
        if let Some(ms) = result[key].as_u64() {
            eprintln!("{scenario}: console cut {ms} ms after the {what} terminate");
        }
    }
    result
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {v:#}"))
}

/// No key the driver was issued may reach the gateway's log.
fn assert_no_keys_logged(result: &Value, f: &SshFixture) {
    let log = f.gw.plain_log();
    for key in result["keys"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        assert!(!log.contains(key), "a one-time key reached the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn console_runs_a_command_and_shows_clear_errors() {
    let Some(dir) = tooling() else { return };
    let f = SshFixture::start("29100-29109", "");
    let r = drive(&dir, "console", &f).await;

    // The command ran on the device through the browser terminal.
    assert_eq!(text(&r, "answer"), "42", "{r:#}");
    assert!(
        text(&r, "status").contains("Connected to edge-1 as admin"),
        "{r:#}"
    );
    // The key is gone from the address bar once read.
    let url = text(&r, "urlAfterLoad");
    assert!(
        !url.contains('#') && !url.contains("session_token"),
        "{url}"
    );
    // Resizing the window resized the device's pty.
    assert_ne!(text(&r, "sizeBefore"), text(&r, "sizeAfter"), "{r:#}");
    // A reused key, a device whose host key does not match, a missing key, a device nobody
    // answers for and an expired key are explained.
    assert!(text(&r, "reused").contains("already used"), "{r:#}");
    assert!(text(&r, "unreachable").contains("host key"), "{r:#}");
    assert!(text(&r, "noToken").contains("session_token"), "{r:#}");
    assert!(text(&r, "down").contains("cannot reach"), "{r:#}");
    assert!(text(&r, "expired").contains("expired"), "{r:#}");
    // Terminating the session through REST cuts the open console within a second.
    let rest_ms = r["restCutMs"].as_u64().unwrap();
    assert!(
        rest_ms < 1000,
        "console cut {rest_ms} ms after the REST terminate"
    );
    assert!(text(&r, "restCutMessage").contains("terminated"), "{r:#}");
    // xterm.js runs under the pages' Content-Security-Policy without violations.
    assert_eq!(r["consoleErrors"], serde_json::json!([]), "{r:#}");

    let log = f.gw.plain_log();
    for needle in [
        "event=web.login",
        "event=web.session.start",
        "event=session.redeem_refused",
        "event=ssh.host_key_mismatch",
        "event=web.device_refused",
    ] {
        assert!(log.contains(needle), "log lacks {needle}:\n{log}");
    }
    assert_no_keys_logged(&r, &f);
    assert!(artifacts().join("console.png").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn tracking_page_updates_live_and_terminate_cuts_the_console() {
    let Some(dir) = tooling() else { return };
    let f = SshFixture::start("29110-29119", "");
    let r = drive(&dir, "tracking", &f).await;

    assert_eq!(
        r["cookie"],
        serde_json::json!({"httpOnly": true, "secure": true, "sameSite": "Strict"}),
        "{r:#}"
    );
    let row = text(&r, "aliceRow");
    for needle in [
        "edge-1",
        "open session",
        "initiated",
        "127.0.0.1",
        "Terminate",
    ] {
        assert!(row.contains(needle), "{needle} not in {row:?}");
    }
    assert_eq!(
        r["liveUpdate"], true,
        "the table did not update in place: {r:#}"
    );
    // Terminating from the page cut the open console with a message (the time includes the
    // form post and the page load; the gateway's own part is well under a second).
    assert!(text(&r, "cutMessage").contains("terminated"), "{r:#}");
    let cut_ms = r["cutMs"].as_u64().unwrap();
    assert!(cut_ms < 3000, "console cut only after {cut_ms} ms");
    assert!(text(&r, "notice").contains("terminated"), "{r:#}");
    assert!(text(&r, "terminatedRow").contains("terminated"), "{r:#}");
    assert_eq!(r["consoleErrors"], serde_json::json!([]), "{r:#}");

    let log = f.gw.plain_log();
    assert!(log.contains("event=session.terminated"), "{log}");
    assert!(log.contains("event=web.session.end"), "{log}");
    assert_no_keys_logged(&r, &f);
    assert!(artifacts().join("tracking.png").exists());
}
