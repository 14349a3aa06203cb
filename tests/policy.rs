//! Policy plugins through the real server: the built-in rules are components and their
//! decisions are counted and audited per plugin; every kind of hostile plugin (trap, endless
//! loop, memory hog, garbage result, missing import, no policy export) dropped into the plugins
//! directory is a deny naming the plugin while the gateway keeps serving; a plugin that cannot
//! load at start stops the start with its file named; and hot reload under load never fails a
//! decision.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "common/hostile.rs"]
mod hostile;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn plugins_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("data/plugins")
}

/// admin issuing for themself (no `sudo` decision).
fn for_admin() -> serde_json::Value {
    json!({"user":"admin","target_device":"edge-1","duration":60})
}

async fn issue(c: &reqwest::Client, gw: &Gateway, ticket: &str) -> (u16, serde_json::Value) {
    post(c, gw, ticket, "/api/v1/opensession", for_admin()).await
}

async fn wait_for(
    c: &reqwest::Client,
    gw: &Gateway,
    ticket: &str,
    pred: impl Fn(&(u16, serde_json::Value)) -> bool,
) -> (u16, serde_json::Value) {
    wait_for_issue(c, gw, ticket, for_admin(), pred).await
}

/// Asks for a one-time key with `body` until the answer satisfies `pred` (a policy change
/// takes effect within the reload poll).
async fn wait_for_issue(
    c: &reqwest::Client,
    gw: &Gateway,
    ticket: &str,
    body: serde_json::Value,
    pred: impl Fn(&(u16, serde_json::Value)) -> bool,
) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = post(c, gw, ticket, "/api/v1/opensession", body.clone()).await;
        if pred(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "policy change not observed; last answer {got:?}\nlog:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn builtin_rules_are_components_counted_and_audited() {
    let (_tmp, cfg) = setup("26200-26209");
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let alice = login(&c, &gw, "alice", "alice-pw").await;
    assert_eq!(issue(&c, &gw, &admin).await.0, 200);
    let denied = post(
        &c,
        &gw,
        &alice,
        "/api/v1/opensession",
        json!({"user":"alice","target_device":"core-1"}),
    )
    .await;
    assert_error(&denied, 403, "has no group that reaches device core-1");
    let metrics = c
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"sallyport_policy_decisions_total{hook="authorize",plugin="builtin-authorize",outcome="allow"} 1"#,
        r#"sallyport_policy_decisions_total{hook="authorize",plugin="builtin-authorize",outcome="deny"} 1"#,
        r#"sallyport_policy_decision_duration_seconds_count{hook="authorize",plugin="builtin-authorize"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line}\n{metrics}");
    }
    gw.stop();
    let inproc = sallyport::server::Gateway::open(sallyport::config::Config::load(&cfg).unwrap())
        .unwrap()
        .0;
    let log = inproc.issuer.store().audit_log(50).await.unwrap();
    let decision = log
        .iter()
        .find(|e| e.event == "policy.authorize" && e.outcome == "deny")
        .expect("decision audited");
    let reason = decision.reason.as_deref().unwrap();
    assert!(
        reason.contains("plugin=builtin-authorize hash=") && reason.contains("duration_us="),
        "{reason}"
    );
    assert_eq!(decision.subject.as_deref(), Some("alice"));
    inproc.close();
}

#[tokio::test]
async fn hostile_plugins_deny_and_the_gateway_keeps_serving() {
    let (tmp, cfg) = setup("26210-26219");
    // Tight limits so the hostile ones hit them quickly.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "sweep_interval_ms = 100",
        "sweep_interval_ms = 100\nplugin_deadline_ms = 50\nplugin_memory_mb = 4",
    );
    std::fs::write(&cfg, text).unwrap();
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let dir = plugins_dir(&tmp);
    assert_eq!(issue(&c, &gw, &admin).await.0, 200);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("trap", hostile::trap("authorize"), "trapped"),
        (
            "endless",
            hostile::endless("authorize"),
            "exceeded its deadline",
        ),
        (
            "hog",
            hostile::memory_hog("authorize"),
            "exceeded its memory cap",
        ),
        ("garbage", hostile::garbage("authorize"), "trapped"),
        ("evil", hostile::evil_import("authorize"), "evil:net/socket"),
        (
            "noworld",
            hostile::no_world(),
            "none of `authorize`, `sudo`, `check-source`",
        ),
    ];
    for (name, bytes, cause) in cases {
        drop_in(&dir, &format!("{name}.wasm"), &bytes).await;
        let got = wait_for(&c, &gw, &admin, |g| g.0 == 403).await;
        let msg = got.1["message"].as_str().unwrap_or_default().to_string();
        assert!(
            msg.contains(&format!("policy plugin {name}")) && msg.contains(cause),
            "{name}: {msg}"
        );
        // The host is alive and other endpoints work.
        assert_eq!(
            c.get(gw.url("/healthz")).send().await.unwrap().status(),
            200
        );
        std::fs::remove_file(dir.join(format!("{name}.wasm"))).unwrap();
        wait_for(&c, &gw, &admin, |g| g.0 == 200).await;
    }
    let metrics = c
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (plugin, fault) in [
        ("trap", "trap"),
        ("endless", "deadline"),
        ("hog", "memory"),
        ("garbage", "trap"),
        ("evil", "load"),
        ("noworld", "load"),
    ] {
        let line =
            format!(r#"sallyport_policy_plugin_faults_total{{plugin="{plugin}",fault="{fault}"}}"#);
        assert!(metrics.contains(&line), "missing {line}\n{metrics}");
    }
    // A plugin that cannot tell its world fails every hook closed, sudo included.
    drop_in(&dir, "noworld.wasm", &hostile::no_world()).await;
    wait_for(&c, &gw, &admin, |g| g.0 == 403).await;
    std::fs::remove_file(dir.join("noworld.wasm")).unwrap();
    wait_for(&c, &gw, &admin, |g| g.0 == 200).await;
    assert!(gw.child.try_wait_alive());
}

trait Alive {
    fn try_wait_alive(&self) -> bool;
}

impl Alive for std::process::Child {
    fn try_wait_alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.id())).exists()
    }
}

#[tokio::test]
async fn drop_ins_combine_reload_and_keep_the_old_version_when_broken() {
    let (tmp, cfg) = setup("26220-26229");
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let dir = plugins_dir(&tmp);

    // A deny-list drop-in with a sidecar is loaded for the hook its world declares.
    drop_in(
        &dir,
        "closed.wasm",
        &hostile::deny("authorize", "maintenance window"),
    )
    .await;
    let got = wait_for(&c, &gw, &admin, |g| g.0 == 403).await;
    assert!(
        got.1["message"]
            .as_str()
            .unwrap()
            .contains("maintenance window")
    );
    // A broken new version keeps the old one: still the deny, not an empty hook.
    drop_in(&dir, "closed.wasm", b"\0asm garbage").await;
    assert!(
        gw.log_shows("keeping the previous version", Duration::from_secs(5)),
        "{}",
        gw.log()
    );
    let kept = issue(&c, &gw, &admin).await;
    assert_eq!(kept.0, 403, "{kept:?}");
    assert!(
        kept.1["message"]
            .as_str()
            .unwrap()
            .contains("maintenance window")
    );
    // Abstain is neutral next to the built-in allow.
    drop_in(&dir, "closed.wasm", &hostile::abstain("authorize")).await;
    wait_for(&c, &gw, &admin, |g| g.0 == 200).await;
    // Removing it unloads it; a sudo-world drop-in lands on the sudo hook only.
    std::fs::remove_file(dir.join("closed.wasm")).unwrap();
    drop_in(
        &dir,
        "nosudo.wasm",
        &hostile::deny("sudo", "no acting for others today"),
    )
    .await;
    let for_alice = json!({"user":"alice","target_device":"edge-1"});
    let got = wait_for_issue(&c, &gw, &admin, for_alice, |g| g.0 == 403).await;
    assert!(
        got.1["message"]
            .as_str()
            .unwrap()
            .contains("no acting for others today")
    );
    assert_eq!(
        issue(&c, &gw, &admin).await.0,
        200,
        "self-issue does not consult sudo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_reload_under_load_fails_no_decision() {
    let (tmp, cfg) = setup("26230-26239");
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let dir = plugins_dir(&tmp);
    drop_in(&dir, "ttl.wasm", &hostile::allow_with_ttl("authorize", 300)).await;
    assert!(gw.log_shows("policy plugin loaded plugin=ttl ", Duration::from_secs(10)));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (c, url, admin, stop, ok, failed) = (
                c.clone(),
                gw.url("/api/v1/opensession"),
                admin.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = c
                        .post(&url)
                        .header("ticket", &admin)
                        .json(&json!({"user":"admin","target_device":"edge-1","duration":3600}))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            eprintln!(
                                "failed decision: {} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            );
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("failed request: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    // Swap between two versions twenty times while the load runs.
    for i in 0..20u32 {
        drop_in(
            &dir,
            "ttl.wasm",
            &hostile::allow_with_ttl("authorize", 300 + i),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "too little load: {ok}");
    assert_eq!(
        failed, 0,
        "{failed} decisions failed during reloads ({ok} succeeded)"
    );
    let loads = gw.log().matches("policy plugin loaded").count();
    assert!(loads >= 15, "only {loads} reloads observed");
    // Every session was decided by some version of the plugin (which clamps the hour asked
    // for to 300..=319 s), never by a gap without it (the hour would stand).
    let (status, list) = get(&c, &gw, &admin, "/api/v1/tracking/opensessions").await;
    assert_eq!(status, 200);
    let lifetimes: Vec<i64> = list.as_array().unwrap().iter().map(lifetime_secs).collect();
    assert_eq!(lifetimes.len() as u64, ok, "every issued session is listed");
    assert!(
        lifetimes.iter().all(|l| (299..=320).contains(l)),
        "a decision without the plugin: {:?}",
        lifetimes
            .iter()
            .filter(|l| !(299..=320).contains(*l))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_plugin_that_cannot_load_stops_the_start_naming_its_file() {
    let (tmp, cfg) = setup("26240-26249");
    let bad = tmp.path().join("policies");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("evil.wasm"), hostile::evil_import("authorize")).unwrap();
    std::fs::write(bad.join("wrong.wasm"), hostile::abstain("sudo")).unwrap();
    for (file, hook, needle) in [
        ("evil.wasm", "authorize", "evil:net/socket"),
        ("wrong.wasm", "authorize", "exports `sudo`"),
        ("missing.wasm", "authorize", "missing.wasm"),
    ] {
        let text = std::fs::read_to_string(&cfg).unwrap();
        let with = format!("{text}\n[[plugins]]\nhook = \"{hook}\"\npath = \"policies/{file}\"\n");
        let path = tmp.path().join(format!("{file}.toml"));
        std::fs::write(&path, with).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        // The file is named by the path it was configured with.
        assert!(
            err.contains(needle) && err.contains(&format!("policies/{file}")),
            "{file}: {err}"
        );
    }
    // A drop-in that is a symbolic link to a file outside the plugins directory is named as
    // such (the directory is read through a capability handle, which does not follow it).
    let outside = tmp.path().join("outside.wasm");
    std::fs::write(&outside, hostile::abstain("authorize")).unwrap();
    std::os::unix::fs::symlink(&outside, plugins_dir(&tmp).join("ext.wasm")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ext.wasm")
            && err.contains("symbolic link to a file outside the plugins directory"),
        "{err}"
    );
}

#[tokio::test]
async fn plugin_names_are_unique() {
    let (tmp, cfg) = setup("26250-26259");
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    // A drop-in named like a built-in plugin is ignored (and said so), not loaded beside it.
    drop_in(
        &plugins_dir(&tmp),
        "builtin-authorize.wasm",
        &hostile::deny("authorize", "impostor"),
    )
    .await;
    assert!(
        gw.log_shows("has the name of another plugin", Duration::from_secs(5)),
        "{}",
        gw.log()
    );
    for _ in 0..5 {
        assert_eq!(issue(&c, &gw, &admin).await.0, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop();

    // At start, the same name twice is an error naming both files.
    let text = std::fs::read_to_string(&cfg).unwrap();
    for sub in ["a", "b"] {
        let d = tmp.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("same.wasm"), hostile::abstain("authorize")).unwrap();
    }
    let twice = tmp.path().join("twice.toml");
    std::fs::write(
        &twice,
        format!(
            "{text}\n[[plugins]]\nhook = \"authorize\"\npath = \"a/same.wasm\"\n\
             [[plugins]]\nhook = \"authorize\"\npath = \"b/same.wasm\"\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(["serve", "--config", twice.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("two plugins are named \"same\"")
            && err.contains("a/same.wasm")
            && err.contains("b/same.wasm"),
        "{err}"
    );
}

#[tokio::test]
async fn a_drop_in_still_being_copied_does_not_deny_meanwhile() {
    let (tmp, cfg) = setup("26260-26269");
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    // A slow `cp` of a component straight into the directory: a growing prefix of it.
    let whole = hostile::deny("authorize", "copied in full");
    let path = plugins_dir(&tmp).join("slow.wasm");
    let chunk = whole.len() / 8 + 1;
    for written in (chunk..whole.len()).step_by(chunk) {
        std::fs::write(&path, &whole[..written]).unwrap();
        // Well inside the 500 ms a changing file is given, even on a loaded machine.
        for _ in 0..3 {
            let got = issue(&c, &gw, &admin).await;
            assert_eq!(
                got.0, 200,
                "denied while the file was being written: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Complete: it loads and decides.
    std::fs::write(&path, &whole).unwrap();
    let got = wait_for(&c, &gw, &admin, |g| g.0 == 403).await;
    assert!(
        got.1["message"]
            .as_str()
            .unwrap()
            .contains("copied in full")
    );

    // A broken file that stays broken still makes its hooks deny, once it has settled.
    drop_in(&plugins_dir(&tmp), "broken.wasm", b"\0asm not really").await;
    std::fs::remove_file(&path).unwrap();
    let got = wait_for(&c, &gw, &admin, |g| {
        g.0 == 403
            && g.1["message"]
                .as_str()
                .is_some_and(|m| m.contains("broken"))
    })
    .await;
    assert_eq!(got.0, 403);
    // Rewriting a broken plugin (still broken) does not lift its deny, not even briefly.
    for round in 0..5 {
        std::fs::write(
            plugins_dir(&tmp).join("broken.wasm"),
            format!("\0asm still broken {round}"),
        )
        .unwrap();
        for _ in 0..3 {
            let got = issue(&c, &gw, &admin).await;
            assert_eq!(got.0, 403, "round {round}: {got:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_configured_plugin_file_reloads_when_it_changes() {
    let (tmp, cfg) = setup("26270-26279");
    let dir = tmp.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("gate.wasm"),
        hostile::deny("authorize", "version one"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}\n[[plugins]]\nhook = \"authorize\"\npath = \"policies/gate.wasm\"\n"),
    )
    .unwrap();
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let got = issue(&c, &gw, &admin).await;
    assert_eq!(got.0, 403);
    assert!(got.1["message"].as_str().unwrap().contains("version one"));
    drop_in(
        &dir,
        "gate.wasm",
        &hostile::deny("authorize", "version two"),
    )
    .await;
    wait_for(&c, &gw, &admin, |g| {
        g.1["message"]
            .as_str()
            .is_some_and(|m| m.contains("version two"))
    })
    .await;
    // A broken version keeps the second one.
    drop_in(&dir, "gate.wasm", b"\0asm broken").await;
    assert!(gw.log_shows("keeping the previous version", Duration::from_secs(5)));
    let got = issue(&c, &gw, &admin).await;
    assert!(
        got.1["message"].as_str().unwrap().contains("version two"),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decision_in_flight_finishes_on_the_version_it_started_with() {
    let (tmp, cfg) = setup("26280-26289");
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let dir = plugins_dir(&tmp);
    // Version one takes a while to decide (about half a second of CPU here, well inside the
    // second its sidecar allows it) and grants 300 s.
    std::fs::write(dir.join("slow.toml"), "deadline_ms = 1000\n").unwrap();
    drop_in(
        &dir,
        "slow.wasm",
        &hostile::slow_allow_with_ttl("authorize", 300, 1_000_000_000),
    )
    .await;
    assert!(gw.log_shows("policy plugin loaded plugin=slow ", Duration::from_secs(10)));
    let started = Instant::now();
    let in_flight = tokio::spawn({
        let (c, url, admin) = (c.clone(), gw.url("/api/v1/opensession"), admin.clone());
        async move {
            c.post(url)
                .header("ticket", admin)
                .json(&json!({"user":"admin","target_device":"edge-1","duration":3600}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    // Version two, while the first decision still runs: quick, and grants 200 s.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop_in(
        &dir,
        "slow.wasm",
        &hostile::allow_with_ttl("authorize", 200),
    )
    .await;
    assert!(gw.log_shows("policy plugin loaded plugin=slow ", Duration::from_secs(10)));
    gw.await_log(Duration::from_secs(10), "version two never loaded", |log| {
        log.matches("policy plugin loaded plugin=slow ").count() >= 2
    })
    .await;
    // Version two is serving while the first decision is still running...
    assert!(
        !in_flight.is_finished(),
        "the first decision was not slow enough to overlap the reload"
    );
    assert_eq!(in_flight.await.unwrap(), 200);
    let second = issue(&c, &gw, &admin).await;
    assert_eq!(second.0, 200, "{second:?}");
    eprintln!("first decision took {:?}", started.elapsed());
    // ...and yet it was decided by version one, and the later request by version two.
    let (_, list) = get(&c, &gw, &admin, "/api/v1/tracking/opensessions").await;
    let mut lifetimes: Vec<i64> = list.as_array().unwrap().iter().map(lifetime_secs).collect();
    lifetimes.sort();
    // `issue` asks for 60 s, under both grants; the in-flight request asked for an hour.
    assert_eq!(lifetimes, [60, 300], "{list}");
}

#[tokio::test]
async fn a_new_drop_in_with_a_broken_sidecar_denies_and_a_component_serves_every_hook_it_exports() {
    let (tmp, cfg) = setup("26290-26299");
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let dir = plugins_dir(&tmp);

    // An abstaining plugin would change nothing; with a sidecar that cannot be used, the
    // plugin cannot run as its admin meant, so its hook denies (it used to fail open).
    let secret = "sidecar-secret-4711";
    std::fs::write(
        dir.join("nb.toml"),
        format!("deadline_ms = 50\n[config]\ntoken = \"{secret}\nbogus\n"),
    )
    .unwrap();
    drop_in(&dir, "nb.wasm", &hostile::abstain("authorize")).await;
    let got = wait_for(&c, &gw, &admin, |g| g.0 == 403).await;
    let msg = got.1["message"].as_str().unwrap().to_string();
    assert!(msg.contains("nb"), "{msg}");
    // Limits out of range are a broken sidecar too (a deadline of 2^64 ms held a thread).
    drop_in(&dir, "nb.toml", b"deadline_ms = 18446744073709551615\n").await;
    assert!(
        gw.log_shows(
            "deadline_ms = 18446744073709551615: must be 1..=10000",
            Duration::from_secs(10)
        ),
        "{}",
        gw.log()
    );
    assert_eq!(issue(&c, &gw, &admin).await.0, 403);
    // Fixed: the plugin loads and abstains, so the built-in allow stands.
    drop_in(&dir, "nb.toml", b"deadline_ms = 50\n").await;
    wait_for(&c, &gw, &admin, |g| g.0 == 200).await;
    // A broken sidecar beside a loaded plugin keeps the loaded version.
    drop_in(&dir, "nb.toml", b"memory_mb = 0\n").await;
    assert!(
        gw.log_shows("keeping the previous version", Duration::from_secs(10)),
        "{}",
        gw.log()
    );
    assert_eq!(issue(&c, &gw, &admin).await.0, 200);
    // Removing it is logged.
    std::fs::remove_file(dir.join("nb.wasm")).unwrap();
    assert!(
        gw.log_shows("policy plugin unloaded", Duration::from_secs(10)),
        "{}",
        gw.log()
    );

    // A component exporting all three hooks (the built-in policy, copied in) serves each.
    let builtin = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/dist/default-policy.wasm"),
    )
    .unwrap();
    drop_in(&dir, "site.wasm", &builtin).await;
    for hook in ["Authorize", "Sudo", "Source"] {
        let needle = format!("hook={hook}");
        let what = format!("site not loaded for {hook}");
        gw.await_log(Duration::from_secs(20), &what, |log| {
            log.lines().any(|l| {
                l.contains("policy plugin loaded")
                    && l.contains("plugin=site")
                    && l.contains(&needle)
            })
        })
        .await;
    }
    std::fs::remove_file(dir.join("site.wasm")).unwrap();

    // A second export of the wrong type does not go unused: that hook denies, naming why,
    // while the well-typed one serves.
    drop_in(
        &dir,
        "mixed.wasm",
        &hostile::abstain_and_mistyped("authorize", "sudo"),
    )
    .await;
    // Until `site` (no groups configured, so it denies) is unloaded, its deny comes first.
    let for_alice = json!({"user":"alice","target_device":"edge-1"});
    let got = wait_for_issue(&c, &gw, &admin, for_alice, |(status, body)| {
        *status == 403
            && body["message"]
                .as_str()
                .is_some_and(|m| m.contains("mixed"))
    })
    .await;
    let msg = got.1["message"].as_str().unwrap();
    assert!(msg.contains("does not have the type"), "{msg}");
    assert_eq!(issue(&c, &gw, &admin).await.0, 200, "authorize abstains");
    // The sidecar's text never reaches the log.
    assert!(!gw.log().contains(secret), "{}", gw.log());
}
