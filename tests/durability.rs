//! Single use and durability of one-time keys: redemption through the issuer API that the SSH
//! and web forwarders call (reuse, expiry, termination, wrong device, a race of 64 redeemers),
//! keys surviving a clean restart, expiry surviving downtime, and a `kill -9` in the middle of an
//! issuance burst losing no key whose response was received.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use sallyport::config::Config;
use sallyport::issuer::{DurationInput, IssuerError};
use sallyport::secret::Secret;
use sallyport::server::Gateway as InProcess;
use serde_json::json;

fn open(cfg: &std::path::Path) -> InProcess {
    InProcess::open(Config::load(cfg).unwrap()).unwrap().0
}

fn secs(n: u64) -> DurationInput {
    DurationInput::Number(n.into())
}

#[tokio::test]
async fn redemption_is_single_use_and_checked() {
    let (_tmp, cfg) = setup("26100-26109");
    let gw = open(&cfg);
    let issuer = gw.issuer.clone();
    let admin = issuer.directory().user("admin").unwrap().clone();
    let otk = issuer
        .issue_session(&admin, "edge-1", "alice", Some(&secs(60)), None)
        .await
        .unwrap();

    // Wrong user, wrong device, malformed keys: refused, and the key stays usable.
    for (user, dev) in [("bob", "edge-1"), ("alice", "core-1")] {
        assert!(matches!(
            issuer.redeem(&otk, user, dev, None).await,
            Err(IssuerError::Refused)
        ));
    }
    for bad in ["", "zz", &otk.expose().to_uppercase(), &"0".repeat(32)] {
        assert!(matches!(
            issuer
                .redeem(&Secret::new(bad.to_string()), "alice", "edge-1", None)
                .await,
            Err(IssuerError::Refused)
        ));
    }
    let s = issuer
        .redeem(&otk, "alice", "edge-1", Some("127.0.0.9".into()))
        .await
        .unwrap();
    assert_eq!(
        (s.user.as_str(), s.device.as_str(), s.source.as_deref()),
        ("alice", "edge-1", Some("127.0.0.9"))
    );
    assert_eq!(
        s.access,
        sallyport::config::AccessLevel::ReadOnly,
        "alice's group is read-only"
    );
    // Reuse is refused with the same error.
    let again = issuer.redeem(&otk, "alice", "edge-1", None).await;
    assert!(matches!(again, Err(IssuerError::Refused)));
    let listed = issuer.list_sessions(&admin).await.unwrap();
    assert_eq!(listed[0].state, sallyport::store::SessionState::Initiated);

    // Expired keys are refused even before the sweeper runs.
    let short = issuer
        .issue_session(&admin, "edge-1", "admin", Some(&secs(1)), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(
        issuer.redeem(&short, "admin", "edge-1", None).await,
        Err(IssuerError::Refused)
    ));

    // Terminated keys are refused.
    let t = issuer
        .issue_session(&admin, "core-1", "admin", Some(&secs(60)), None)
        .await
        .unwrap();
    let id = issuer.list_sessions(&admin).await.unwrap()[0].id.clone();
    assert_eq!(issuer.terminate(&admin, &id, None).await.unwrap(), vec![id]);
    assert!(matches!(
        issuer.redeem(&t, "admin", "core-1", None).await,
        Err(IssuerError::Refused)
    ));

    // Every refusal is in the audit log, and no row carries a key.
    let log = issuer.store().audit_log(100).await.unwrap();
    assert!(
        log.iter()
            .filter(|e| e.event == "session.redeem_refused")
            .count()
            >= 7
    );
    assert_eq!(
        log.iter().filter(|e| e.event == "session.redeemed").count(),
        1
    );
    let dump = format!("{log:?}");
    assert!(!dump.contains(otk.expose().as_str()));
    gw.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_redemptions_one_winner() {
    let (_tmp, cfg) = setup("26110-26119");
    let gw = open(&cfg);
    let issuer = gw.issuer.clone();
    let admin = issuer.directory().user("admin").unwrap().clone();
    for _round in 0..5 {
        let otk = Arc::new(
            issuer
                .issue_session(&admin, "edge-1", "admin", Some(&secs(60)), None)
                .await
                .unwrap(),
        );
        let barrier = Arc::new(tokio::sync::Barrier::new(64));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (issuer, otk, barrier) = (issuer.clone(), otk.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    issuer.redeem(&otk, "admin", "edge-1", None).await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(IssuerError::Refused) => {}
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(wins, 1);
    }
    gw.close();
}

#[tokio::test]
async fn keys_and_expiry_survive_restarts() {
    let (_tmp, cfg) = setup("26120-26129");
    let c = client();
    let gw = Gateway::start(&cfg);
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let (s, long) = post(
        &c,
        &gw,
        &admin,
        "/api/v1/opensession",
        json!({"user":"admin","target_device":"edge-1","duration":"600"}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, short) = post(
        &c,
        &gw,
        &admin,
        "/api/v1/opensession",
        json!({"user":"admin","target_device":"core-1","duration":2}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, access) = post(
        &c,
        &gw,
        &admin,
        &format!("/control-plane/{EDGE_ID}/transient-accesses"),
        json!({"expire_after_minutes":15,"type":"ssh"}),
    )
    .await;
    assert_eq!(s, 201);
    gw.stop();

    // Down for longer than the short key lives.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let gw = Gateway::start(&cfg);
    assert!(
        !gw.stdout_lines
            .iter()
            .any(|l| l.contains("generated password")),
        "no new password on restart"
    );
    // The ticket, the transient access and both sessions are still there.
    let (s, sessions) = get(&c, &gw, &admin, "/api/v1/tracking/opensessions").await;
    assert_eq!(s, 200, "ticket survived the restart");
    let state_of = |dev: &str| {
        sessions
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["device"] == dev)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state_of("edge-1"), "generated");
    assert_eq!(state_of("core-1"), "expired");
    let (s, a) = get(
        &c,
        &gw,
        &admin,
        &format!(
            "/sites/{EDGE_ID}/transient-accesses/{}",
            access["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(
        (s, a["password"].clone(), a["expired"].clone()),
        (200, access["password"].clone(), json!(false))
    );
    // The sweeper recorded the expiry that happened while down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gw.log().contains("session.expired"), "{}", gw.log());
    gw.stop();

    let inproc = open(&cfg);
    let issuer = inproc.issuer.clone();
    let log = issuer.store().audit_log(50).await.unwrap();
    assert!(
        log.iter()
            .any(|e| e.event == "session.expired" && e.device.as_deref() == Some("core-1"))
    );
    let long = Secret::new(long["session_token"].as_str().unwrap().to_string());
    let short = Secret::new(short["session_token"].as_str().unwrap().to_string());
    assert!(
        issuer.redeem(&long, "admin", "edge-1", None).await.is_ok(),
        "key survived two restarts"
    );
    assert!(matches!(
        issuer.redeem(&short, "admin", "core-1", None).await,
        Err(IssuerError::Refused)
    ));
    inproc.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_issuance_loses_no_acknowledged_key() {
    let (_tmp, cfg) = setup("26130-26139");
    let c = client();
    let gw = Gateway::start(&cfg);
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let url = gw.url("/api/v1/opensession");
    let acked = Arc::new(parking_lot_free::Acked::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (c, url, admin, acked, stop) = (
                c.clone(),
                url.clone(),
                admin.clone(),
                acked.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = c
                        .post(&url)
                        .header("ticket", &admin)
                        .json(&json!({"user":"admin","target_device":"edge-1","duration":3600}))
                        .send()
                        .await;
                    // Only a complete 200 response counts as acknowledged.
                    let Ok(r) = r else { continue };
                    if r.status() != 200 {
                        continue;
                    }
                    if let Ok(v) = r.json::<serde_json::Value>().await {
                        acked.push(v["session_token"].as_str().unwrap().to_string());
                    }
                }
            })
        })
        .collect();
    // Let the burst build up, then crash the gateway mid-flight.
    while acked.len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let keys = acked.take();
    assert!(keys.len() >= 300);

    let inproc = open(&cfg);
    let issuer = inproc.issuer.clone();
    let mut lost = 0;
    for k in &keys {
        if issuer
            .redeem(&Secret::new(k.clone()), "admin", "edge-1", None)
            .await
            .is_err()
        {
            lost += 1;
        }
    }
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged keys were lost",
        keys.len()
    );
    inproc.close();
}

/// A tiny thread-safe list, so the test needs no extra crate.
mod parking_lot_free {
    #[derive(Default)]
    pub struct Acked(std::sync::Mutex<Vec<String>>);

    impl Acked {
        pub fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
        pub fn len(&self) -> usize {
            self.0.lock().unwrap().len()
        }
        pub fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }
}
