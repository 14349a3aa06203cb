//! The example plugins (`examples/`) and the built-in policies, allowing and denying through
//! the real server: business-hours with a window that includes or excludes now, max-ttl
//! clamping a session's `expires_at`, deny-users refusing a protected subject unless a sudo
//! user issues, the Python (WASI) weekend-read-only plugin loading and deciding, and the
//! built-in authorize and sudo rules. (The built-in source rule on connections is exercised by
//! the SSH and Winbox suites, which connect from outside `allow_only_cidr`.)
//!
//! The example components are build products under `target/wasm-guests/components/`
//! (`plugins/build.sh`, `examples/weekend-read-only/build.sh`). A missing one fails the test
//! when `CI` is set, and otherwise skips it with a loud message naming the build script.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::json;

/// The built component `name`, or `None` (after a loud message) outside CI if it is missing.
fn component(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm-guests/components")
        .join(format!("{name}.wasm"));
    if path.is_file() {
        return Some(path.canonicalize().unwrap());
    }
    let script = match name {
        "weekend-read-only" => "examples/weekend-read-only/build.sh",
        "wasi-probe" => "tests/wasi-probe/build.sh",
        _ => "plugins/build.sh",
    };
    let msg = format!(
        "example component {} is missing: build it with `{script}`",
        path.display()
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "{msg} (CI is set: the examples must be built before the tests)"
    );
    eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
    None
}

/// Writes the standard test config plus `extra` (e.g. `[[plugins]]` entries) into `tmp` and
/// returns its path. The data dir is the same for every call with the same `tmp`, so the
/// compiled-component cache carries over between gateways started one after the other.
fn write_config(tmp: &Path, ports: &str, extra: &str) -> PathBuf {
    let path = tmp.join("sallyport.toml");
    std::fs::write(
        &path,
        format!("{}\n{extra}", config(&tmp.join("data"), ports)),
    )
    .unwrap();
    path
}

fn plugin(path: &Path, config: &str) -> String {
    format!(
        "[[plugins]]\nhook = \"authorize\"\npath = \"{}\"\nconfig = {{ {config} }}\n",
        path.display()
    )
}

async fn open(
    c: &reqwest::Client,
    gw: &Gateway,
    ticket: &str,
    user: &str,
    device: &str,
    duration: u64,
) -> (u16, serde_json::Value) {
    post(
        c,
        gw,
        ticket,
        "/api/v1/opensession",
        json!({"user": user, "target_device": device, "duration": duration}),
    )
    .await
}

/// `expires_at - created_at` in seconds of the only session of `user` in the tracking list.
async fn session_lifetime(
    c: &reqwest::Client,
    gw: &Gateway,
    ticket: &str,
    user: &str,
) -> (i64, serde_json::Value) {
    let (status, list) = get(c, gw, ticket, "/api/v1/tracking/opensessions").await;
    assert_eq!(status, 200, "{list}");
    let sessions: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["user"] == user)
        .collect();
    assert_eq!(sessions.len(), 1, "{list}");
    (lifetime_secs(sessions[0]), sessions[0].clone())
}

fn now_utc() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn hhmm(minutes_of_day: i64) -> String {
    let m = minutes_of_day.rem_euclid(24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

#[tokio::test]
async fn builtin_authorize_and_sudo_allow_and_deny() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&write_config(tmp.path(), "26300-26309", ""));
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let alice = login(&c, &gw, "alice", "alice-pw").await;
    let bob = login(&c, &gw, "bob", "bob-pw").await;
    // authorize: group globs and access level.
    assert_eq!(open(&c, &gw, &alice, "alice", "edge-1", 60).await.0, 200);
    let (_, s) = session_lifetime(&c, &gw, &admin, "alice").await;
    assert_eq!(
        s["access"], "read-only",
        "the ops group narrows alice to read-only: {s}"
    );
    assert_error(
        &open(&c, &gw, &alice, "alice", "core-1", 60).await,
        403,
        "has no group that reaches device core-1",
    );
    let carol = login(&c, &gw, "carol", "carol-pw").await;
    assert_error(
        &open(&c, &gw, &carol, "carol", "edge-1", 60).await,
        403,
        "carol",
    );
    // sudo: issuing for someone else.
    assert_error(
        &open(&c, &gw, &bob, "alice", "edge-1", 60).await,
        403,
        "issuing for another user needs a group with sudo",
    );
    assert_eq!(open(&c, &gw, &admin, "bob", "core-1", 60).await.0, 200);
    gw.stop();
}

#[tokio::test]
async fn business_hours_allows_inside_the_window_until_closing_and_denies_outside() {
    let Some(wasm) = component("business-hours") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let now = now_utc();
    let minute = i64::from(now.hour()) * 60 + i64::from(now.minute());
    // Open since an hour ago, closing in an hour (an overnight window near midnight works too).
    let inside = plugin(
        &wasm,
        &format!(
            "open = \"{}\", close = \"{}\", timezone = \"UTC\"",
            hhmm(minute - 60),
            hhmm(minute + 61)
        ),
    );
    let gw = Gateway::start(&write_config(tmp.path(), "26310-26319", &inside));
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let got = open(&c, &gw, &admin, "admin", "edge-1", 86_400).await;
    assert_eq!(got.0, 200, "{got:?}\n{}", gw.log());
    let (lifetime, _) = session_lifetime(&c, &gw, &admin, "admin").await;
    assert!(
        (59 * 60..=61 * 60 + 1).contains(&lifetime),
        "the grant ends the session at closing time, not after a day: {lifetime} s"
    );
    gw.stop();

    // Opens in an hour: closed now.
    let outside = plugin(
        &wasm,
        &format!(
            "open = \"{}\", close = \"{}\", timezone = \"+00:00\"",
            hhmm(minute + 60),
            hhmm(minute + 120)
        ),
    );
    let gw = Gateway::start(&write_config(tmp.path(), "26310-26319", &outside));
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    assert_error(
        &open(&c, &gw, &admin, "admin", "edge-1", 60).await,
        403,
        "outside business hours",
    );
    gw.stop();
}

#[tokio::test]
async fn max_ttl_clamps_the_session_and_denies_without_a_bound() {
    let Some(wasm) = component("max-ttl") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&write_config(
        tmp.path(),
        "26320-26329",
        &plugin(&wasm, "max_ttl_seconds = 120"),
    ));
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let bob = login(&c, &gw, "bob", "bob-pw").await;
    assert_eq!(open(&c, &gw, &admin, "admin", "edge-1", 3600).await.0, 200);
    assert_eq!(
        session_lifetime(&c, &gw, &admin, "admin").await.0,
        120,
        "clamped from an hour"
    );
    assert_eq!(open(&c, &gw, &bob, "bob", "core-1", 30).await.0, 200);
    assert_eq!(
        session_lifetime(&c, &gw, &admin, "bob").await.0,
        30,
        "a shorter request keeps its lifetime"
    );
    // The clamp does not widen anything: the built-in rules still deny.
    assert_error(
        &open(&c, &gw, &bob, "alice", "edge-1", 60).await,
        403,
        "needs a group with sudo",
    );
    gw.stop();

    let gw = Gateway::start(&write_config(
        tmp.path(),
        "26320-26329",
        &plugin(&wasm, "max_ttl_seconds = \"ten minutes\""),
    ));
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    assert_error(
        &open(&c, &gw, &admin, "admin", "edge-1", 60).await,
        403,
        "max-ttl: `max_ttl_seconds` must be a whole number",
    );
    gw.stop();
}

#[tokio::test]
async fn deny_users_protects_listed_subjects_unless_a_sudo_user_issues() {
    let Some(wasm) = component("deny-users") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}\n[[users]]\nname = \"root\"\npassword = \"root-pw\"\ngroups = [\"netops\"]\n",
        plugin(&wasm, "users = [\"root\", \"svc-*\"]")
    );
    let gw = Gateway::start(&write_config(tmp.path(), "26330-26339", &extra));
    let c = client();
    let root = login(&c, &gw, "root", "root-pw").await;
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let bob = login(&c, &gw, "bob", "bob-pw").await;
    assert_error(
        &open(&c, &gw, &root, "root", "edge-1", 60).await,
        403,
        "root is a protected user: only a requester with sudo may issue access for them",
    );
    assert_eq!(
        open(&c, &gw, &admin, "root", "edge-1", 60).await.0,
        200,
        "admin has sudo"
    );
    assert_eq!(
        open(&c, &gw, &bob, "bob", "core-1", 60).await.0,
        200,
        "unlisted users are not affected"
    );
    // Transient accesses for oneself are issuance too.
    let (status, body) = post(
        &c,
        &gw,
        &root,
        &format!("/control-plane/{EDGE_ID}/transient-accesses"),
        json!({"expire_after_minutes": 15, "type": "winbox", "full_access": true, "allow_rfc1918": true}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("protected user"),
        "{body}"
    );
    gw.stop();
}

/// Whole days to add to now (UTC) to land on weekday `target` (Monday 0 … Sunday 6).
fn days_until(target: u8) -> i64 {
    let today = now_utc().weekday().number_days_from_monday();
    i64::from((target + 7 - today) % 7)
}

#[tokio::test]
async fn the_python_wasi_plugin_loads_and_decides() {
    let Some(wasm) = component("weekend-read-only") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // CPython in a component needs far more memory and time than a Rust plugin.
    let entry = |offset_days: i64| {
        format!(
            "[[plugins]]\nhook = \"authorize\"\npath = \"{}\"\nmemory_mb = 128\ndeadline_ms = 5000\nconfig = {{ utc-offset-minutes = {} }}\n",
            wasm.display(),
            offset_days * 1440
        )
    };
    // The plugin's clock is the request's `now`; its offset moves "today" to a Saturday.
    let cfg = write_config(tmp.path(), "26340-26349", &entry(days_until(5)));
    // Compiling 18 MB of CPython takes long in a debug build: do it here, without the start-up
    // timeout, into the data dir's compile cache, which the gateway then loads from.
    let (warm, _) =
        sallyport::server::Gateway::open(sallyport::config::Config::load(&cfg).unwrap()).unwrap();
    warm.close();
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let got = open(&c, &gw, &admin, "admin", "edge-1", 60).await;
    assert_error(&got, 403, "only read-only access on weekends");
    // Read-only is what it allows on weekends: a transient read-only access goes through.
    let (status, body) = post(
        &c,
        &gw,
        &admin,
        &format!("/control-plane/{EDGE_ID}/transient-accesses"),
        json!({"expire_after_minutes": 15, "type": "winbox", "full_access": false, "allow_rfc1918": true}),
    )
    .await;
    assert_eq!(status, 201, "{body}\n{}", gw.log());
    assert!(
        gw.plain_log()
            .contains("weekend read-only access for admin to edge-1"),
        "the plugin's log line reaches the host log"
    );
    gw.stop();

    // A Wednesday: full access is allowed.
    let gw = Gateway::start(&write_config(
        tmp.path(),
        "26340-26349",
        &entry(days_until(2)),
    ));
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let got = open(&c, &gw, &admin, "admin", "edge-1", 60).await;
    assert_eq!(got.0, 200, "{got:?}\n{}", gw.log());
    gw.stop();
}

/// The lifetime in seconds of every session of `user` in the tracking list, oldest first.
async fn lifetimes(c: &reqwest::Client, gw: &Gateway, ticket: &str, user: &str) -> Vec<i64> {
    let (status, list) = get(c, gw, ticket, "/api/v1/tracking/opensessions").await;
    assert_eq!(status, 200, "{list}");
    let mut mine: Vec<(time::OffsetDateTime, i64)> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["user"] == user)
        .map(|s| (session_time(s, "created_at"), lifetime_secs(s)))
        .collect();
    mine.sort();
    mine.into_iter().map(|(_, secs)| secs).collect()
}

#[tokio::test]
async fn a_drop_in_takes_its_config_from_the_sidecar_and_reloads_when_it_changes() {
    let Some(wasm) = component("max-ttl") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("data/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&wasm, plugins.join("clamp.wasm")).unwrap();
    std::fs::write(
        plugins.join("clamp.toml"),
        "deadline_ms = 200\n[config]\nmax_ttl_seconds = 120\n",
    )
    .unwrap();
    let gw = Gateway::start(&write_config(tmp.path(), "26350-26359", ""));
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    assert_eq!(open(&c, &gw, &admin, "admin", "edge-1", 3600).await.0, 200);
    assert_eq!(lifetimes(&c, &gw, &admin, "admin").await, [120]);

    // A new sidecar (written whole, then renamed into place) is a new version of the plugin.
    drop_in(&plugins, "clamp.toml", b"[config]\nmax_ttl_seconds = 300\n").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(open(&c, &gw, &admin, "admin", "edge-1", 3600).await.0, 200);
        let seen = lifetimes(&c, &gw, &admin, "admin").await;
        if seen.last() == Some(&300) {
            assert!(seen.iter().all(|s| *s == 120 || *s == 300), "{seen:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sidecar change not applied: {seen:?}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop();
}

#[tokio::test]
async fn a_wasi_plugin_finds_no_environment_files_network_or_real_clock() {
    let Some(wasm) = component("wasi-probe") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        "26360-26369",
        &format!(
            "[[plugins]]\nhook = \"authorize\"\npath = \"{}\"\nmemory_mb = 128\ndeadline_ms = 5000\n",
            wasm.display()
        ),
    );
    // As for the Python example: compile into the cache first, outside the start-up timeout.
    let (warm, _) =
        sallyport::server::Gateway::open(sallyport::config::Config::load(&cfg).unwrap()).unwrap();
    warm.close();
    // The gateway's own environment is not empty: the plugin must not see it.
    assert!(std::env::vars().count() > 0);
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let (status, body) = open(&c, &gw, &admin, "admin", "edge-1", 60).await;
    assert_eq!(status, 403, "{body}");
    let report = body["message"].as_str().unwrap();
    for expected in [
        "env=0",
        "file=refused",
        "dir=refused",
        "write=refused",
        "net=refused",
        "wall-is-request-time=True",
        "monotonic-fixed=True",
    ] {
        assert!(report.contains(expected), "{expected} not in {report:?}");
    }
    gw.stop();
}
