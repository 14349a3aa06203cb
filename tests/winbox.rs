//! End-to-end tests of the Winbox forwarder against the real binary: a real TCP echo server
//! (tests/support/winbox_fixture.rs) plays the device's winbox service, clients connect from
//! 127.0.0.1 and 127.0.0.2 to prove the source policy, and a RouterOS REST test double
//! (tests/support/routeros_double.rs) plays the device-side user store.
//!
//! Expiry is tested without waiting 15 minutes and without a test-only knob in the product:
//! the test moves the access's `expires_at` in the gateway's SQLite database (WAL mode allows a
//! second writer process) to a moment later, and the gateway's own sweeper expires it.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "support/winbox_fixture.rs"]
mod fixture;
#[path = "common/hostile.rs"]
mod hostile;
#[path = "support/routeros_double.rs"]
mod routeros_double;

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Gateway, assert_error, client, get, login, post};
use fixture::*;
use routeros_double::RouterOsDouble;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_source_is_forwarded_and_other_sources_are_refused_and_audited() {
    let echo = echo_server().await;
    let f = Fixture::start("28000-28009", echo.addr, None).await;
    let a = f.winbox("127.0.0.1/32").await;
    assert_eq!(a["type"], "winbox");
    let port = port_of(&a);
    assert!((28000..=28009).contains(&port));
    assert_eq!(
        a["onclick"],
        format!(
            "winbox://127.0.0.1:{port}?username={}&password={}",
            a["username"].as_str().unwrap(),
            a["password"].as_str().unwrap()
        )
    );
    wait_listening(port).await;
    let mut ok = connect_from("127.0.0.1", port).await.unwrap();
    assert!(roundtrip(&mut ok, b"hello winbox").await);
    // Let the probe connection of wait_listening reach the device before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = echo.accepted.load(Ordering::SeqCst);
    let mut refused = connect_from("127.0.0.2", port).await.unwrap();
    let _ = refused.write_all(b"let me in").await;
    let closed = time_to_close(&mut refused, Duration::from_secs(2)).await;
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(1)),
        "{closed:?}"
    );
    // Never reached the device, and the allowed connection is unaffected.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(echo.accepted.load(Ordering::SeqCst), before);
    assert!(roundtrip(&mut ok, b"still here").await);
    let log = f.gw.plain_log();
    assert!(
        log.lines().any(|l| l.contains("event=connect.refused")
            && l.contains("source=\"127.0.0.2\"")
            && l.contains("outside")),
        "{log}"
    );
    assert!(log.contains("event=winbox.connected"), "{log}");
}

// A scanner hammering a transient port must not turn every refused connect into an audit row.
#[tokio::test(flavor = "multi_thread")]
async fn refusal_rows_from_one_source_are_bounded() {
    let echo = echo_server().await;
    let f = Fixture::start("28110-28119", echo.addr, None).await;
    let a = f.winbox("127.0.0.1/32").await;
    let port = port_of(&a);
    wait_listening(port).await;
    for _ in 0..45 {
        let mut s = connect_from("127.0.0.2", port).await.unwrap();
        assert!(
            time_to_close(&mut s, Duration::from_secs(2))
                .await
                .is_some()
        );
    }
    let mut ok = connect_from("127.0.0.1", port).await.unwrap();
    assert!(roundtrip(&mut ok, b"still served").await);
    let db = rusqlite::Connection::open(f.tmp.path().join("data/sallyport.db")).unwrap();
    let count = || -> i64 {
        db.query_row(
            "SELECT count(*) FROM audit WHERE event = 'connect.refused' AND source = '127.0.0.2'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    // Rows are written behind the refusal; wait until the count settles.
    let mut rows = count();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = count();
        if now == rows && now > 0 {
            break;
        }
        rows = now;
    }
    assert_eq!(rows, 20, "refusal rows from one source in a minute");
    assert!(
        f.gw.plain_log()
            .contains("not recording more of them this minute"),
        "the gateway log says rows are being left out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_megabytes_arrive_intact_both_ways() {
    let mut echo = echo_server().await;
    let f = Fixture::start("28010-28019", echo.addr, None).await;
    let a = f.winbox("127.0.0.0/8").await;
    let port = port_of(&a);
    wait_listening(port).await;
    let s = connect_from("127.0.0.1", port).await.unwrap();
    let (mut r, mut w) = s.into_split();
    const TOTAL: usize = 100 * 1024 * 1024;
    let sender = tokio::spawn(async move {
        let mut hash = Sha256::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut chunk = vec![0u8; 1024 * 1024];
        for _ in 0..TOTAL / chunk.len() {
            for word in chunk.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                word.copy_from_slice(&x.to_le_bytes());
            }
            hash.update(&chunk);
            w.write_all(&chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
        <[u8; 32]>::from(hash.finalize())
    });
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut total = 0usize;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        total += n;
    }
    let sent = sender.await.unwrap();
    let back: [u8; 32] = hash.finalize().into();
    // The probe connection of wait_listening reports too (0 bytes); take the transfer's.
    let device_hash = loop {
        let (n, hash) = tokio::time::timeout(Duration::from_secs(10), echo.received.recv())
            .await
            .unwrap()
            .unwrap();
        if n > 0 {
            assert_eq!(n, TOTAL as u64);
            break hash;
        }
    };
    assert_eq!(total, TOTAL);
    assert_eq!(
        device_hash, sent,
        "the device received other bytes than sent"
    );
    assert_eq!(back, sent, "the client got other bytes back than it sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_cuts_live_connections_within_a_second_and_closes_the_port() {
    let echo = echo_server().await;
    let f = Fixture::start("28020-28029", echo.addr, None).await;
    let a = f.winbox("127.0.0.1/32").await;
    let (port, id) = (port_of(&a), a["id"].as_str().unwrap().to_string());
    wait_listening(port).await;
    let mut live = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.1", port).await.unwrap();
        assert!(roundtrip(&mut s, b"ping").await);
        live.push(s);
    }
    let start = Instant::now();
    let revoked = f.revoke(EDGE_ID, &id).await;
    assert_eq!(revoked["revoked_early"], true);
    assert_eq!(revoked["expired"], true);
    for s in &mut live {
        let left = Duration::from_secs(1).saturating_sub(start.elapsed());
        let closed = time_to_close(s, left + Duration::from_millis(1)).await;
        assert!(closed.is_some(), "connection still open 1 s after revoke");
    }
    assert!(
        start.elapsed() <= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let err = connect_from("127.0.0.1", port).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let shown = f.get(EDGE_ID, &id).await;
    assert_eq!(shown["expired"], true);
    assert_eq!(shown["revoked_early"], true);
    // The revocation is audited with the address it was asked from.
    let db = rusqlite::Connection::open(f.tmp.path().join("data/sallyport.db")).unwrap();
    let source: Option<String> = db
        .query_row(
            "SELECT source FROM audit WHERE event = 'transient.revoked' AND object = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(source.as_deref(), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_cuts_within_a_second_and_the_port_is_reused() {
    let echo = echo_server().await;
    // One port only: the second access can only get it once the first released it.
    let f = Fixture::start("28030-28030", echo.addr, None).await;
    let a = f.winbox("127.0.0.1/32").await;
    let (port, id) = (port_of(&a), a["id"].as_str().unwrap().to_string());
    assert_eq!(port, 28030);
    wait_listening(port).await;
    let mut s = connect_from("127.0.0.1", port).await.unwrap();
    assert!(roundtrip(&mut s, b"before expiry").await);
    let expires_at = now_ms() + 400;
    f.set_expires_at(&id, expires_at);
    let closed = time_to_close(&mut s, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "not cut at expiry");
    let late = now_ms() - expires_at;
    assert!(late <= 1000, "cut {late} ms after expires_at");
    let shown = f.get(EDGE_ID, &id).await;
    assert_eq!(shown["expired"], true);
    assert_eq!(shown["revoked_early"], false);
    assert!(connect_from("127.0.0.1", port).await.is_err());

    let b = f.winbox("127.0.0.1/32").await;
    assert_eq!(port_of(&b), port);
    wait_listening(port).await;
    let mut s = connect_from("127.0.0.1", port).await.unwrap();
    assert!(roundtrip(&mut s, b"after reuse").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_accesses_are_restored_after_a_restart() {
    let echo = echo_server().await;
    let f = Fixture::start("28040-28049", echo.addr, None).await;
    let live = f.winbox("127.0.0.1/32").await;
    let gone = f.winbox("127.0.0.1/32").await;
    let gone_id = gone["id"].as_str().unwrap();
    f.revoke(EDGE_ID, gone_id).await;
    let lapsed = f.winbox("127.0.0.1/32").await;
    let lapsed_id = lapsed["id"].as_str().unwrap();
    wait_listening(port_of(&live)).await;
    // A connection open when the gateway stops is cut as a stop, not as the access's end.
    let mut held = connect_from("127.0.0.1", port_of(&live)).await.unwrap();
    assert!(roundtrip(&mut held, b"before the stop").await);
    // `lapsed` reaches its end while the gateway is down.
    let Fixture { tmp, gw, http, .. } = f;
    let path = gw.config_path.clone();
    gw.stop();
    let db = rusqlite::Connection::open(tmp.path().join("data/sallyport.db")).unwrap();
    // The held connection's row is the one that says it was cut: the probe connections of
    // `wait_listening` close on their own, and their rows may land in either order.
    let reason: String = db
        .query_row(
            "SELECT reason FROM audit WHERE event = 'winbox.closed' AND object = ?1 AND reason LIKE 'cut:%'",
            [live["id"].as_str().unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        reason.starts_with("cut: the gateway is stopping"),
        "{reason}"
    );
    db.execute(
        "UPDATE transient_accesses SET expires_at = ?1 WHERE id = ?2",
        rusqlite::params![now_ms() - 1000, lapsed_id],
    )
    .unwrap();
    drop(db);
    let gw = Gateway::start(&path);
    let ticket = login(&http, &gw, "admin", "admin-pw").await;
    let f = Fixture {
        tmp,
        gw,
        ticket,
        http,
    };
    wait_listening(port_of(&live)).await;
    assert!(connect_from("127.0.0.1", port_of(&lapsed)).await.is_err());
    let shown = f.get(EDGE_ID, lapsed_id).await;
    assert_eq!(shown["expired"], true, "{shown}");
    assert_eq!(shown["revoked_early"], false, "{shown}");
    let mut s = connect_from("127.0.0.1", port_of(&live)).await.unwrap();
    assert!(roundtrip(&mut s, b"after restart").await);
    // Restored with its source rule.
    let mut refused = connect_from("127.0.0.2", port_of(&live)).await.unwrap();
    assert!(!roundtrip(&mut refused, b"x").await);
    // The revoked one stays closed.
    assert!(connect_from("127.0.0.1", port_of(&gone)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_port_held_by_another_socket_is_never_given_out_and_a_restored_one_waits_for_it() {
    let echo = echo_server().await;
    let blocker = std::net::TcpListener::bind("127.0.0.1:28100").unwrap();
    let f = Fixture::start("28100-28100", echo.addr, None).await;
    // Another program's port is not handed out: the access's connections would reach it.
    let held = f
        .create(
            EDGE_ID,
            json!({"expire_after_minutes": 15, "type": "winbox", "allow_only_cidr": "127.0.0.1/32"}),
        )
        .await;
    assert_error(&held, 503, "no free port");
    drop(blocker);
    let a = f.winbox("127.0.0.1/32").await;
    assert_eq!(port_of(&a), 28100);
    wait_listening(28100).await;

    // Taken while the gateway is down: the restored access retries until the port is free.
    let Fixture { tmp, gw, http, .. } = f;
    let path = gw.config_path.clone();
    gw.stop();
    let blocker = std::net::TcpListener::bind("127.0.0.1:28100").unwrap();
    let gw = Gateway::start(&path);
    assert!(gw.log_shows("event=transient.listen_failed", Duration::from_secs(5)));
    // Retried every second, but said once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        gw.plain_log().matches("retrying every second").count(),
        1,
        "{}",
        gw.plain_log()
    );
    drop(blocker);
    wait_listening(28100).await;
    let mut s = connect_from("127.0.0.1", 28100).await.unwrap();
    assert!(roundtrip(&mut s, b"late but there").await);
    drop((tmp, http));
}

/// The private-range rule, decided by the policy with the peer address given at the issuer's
/// connect API (no network involved): in-process, on a gateway built from a config.
#[tokio::test]
async fn private_sources_follow_allow_rfc1918_through_the_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let text = config(
        &tmp.path().join("data"),
        "28050-28059",
        "127.0.0.1:9".parse().unwrap(),
        None,
    );
    let cfg = sallyport::config::Config::parse(&text, Path::new("t.toml")).unwrap();
    let (gw, _) = sallyport::server::Gateway::open(cfg).unwrap();
    let issuer = gw.issuer.clone();
    let admin = issuer.directory().user("admin").unwrap();
    let new = |rfc1918: bool, cidr: Option<&str>| sallyport::issuer::NewTransient {
        expire_after_minutes: 15,
        kind: sallyport::store::TransientKind::Winbox,
        full_access: false,
        allow_rfc1918: rfc1918,
        allow_only_cidr: cidr.map(Into::into),
    };
    let site = EDGE_ID.parse().unwrap();
    let strict = issuer
        .create_transient(admin, site, new(false, None), None)
        .await
        .unwrap();
    let open = issuer
        .create_transient(admin, site, new(true, None), None)
        .await
        .unwrap();
    let narrowed = issuer
        .create_transient(admin, site, new(true, Some("10.0.0.0/8")), None)
        .await
        .unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for private in ["10.1.2.3", "172.16.0.9", "192.168.1.1", "::ffff:10.0.0.1"] {
        assert!(
            issuer.connect_winbox(&strict, ip(private)).await.is_err(),
            "{private} allowed without allow_rfc1918"
        );
        assert!(
            issuer.connect_winbox(&open, ip(private)).await.is_ok(),
            "{private} refused with allow_rfc1918"
        );
    }
    assert!(
        issuer
            .connect_winbox(&strict, ip("203.0.113.7"))
            .await
            .is_ok()
    );
    assert!(
        issuer
            .connect_winbox(&narrowed, ip("10.9.9.9"))
            .await
            .is_ok()
    );
    assert!(
        issuer
            .connect_winbox(&narrowed, ip("192.168.1.1"))
            .await
            .is_err()
    );
    assert!(
        issuer
            .connect_winbox(&narrowed, ip("203.0.113.7"))
            .await
            .is_err()
    );
    let log = issuer.store().audit_log(50).await.unwrap();
    assert!(
        log.iter().any(|e| e.event == "connect.refused"
            && e.source.as_deref() == Some("10.1.2.3")
            && e.reason.as_deref().is_some_and(|r| r.contains("RFC 1918"))),
        "{log:?}"
    );
    gw.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routeros_users_are_created_and_removed_with_exact_requests() {
    let echo = echo_server().await;
    let router = RouterOsDouble::start(ROUTER_USER, ROUTER_PW).await;
    let f = Fixture::start("28060-28069", echo.addr, Some(&router)).await;
    let (status, a) = f
        .create(
            MT_ID,
            json!({"expire_after_minutes": 30, "type": "winbox", "full_access": true,
                   "allow_only_cidr": "127.0.0.1/32"}),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    let (id, username, password) = (
        a["id"].as_str().unwrap(),
        a["username"].as_str().unwrap(),
        a["password"].as_str().unwrap(),
    );
    let auth = Some((ROUTER_USER.to_string(), ROUTER_PW.to_string()));
    assert_eq!(
        router.requests(),
        vec![routeros_double::Recorded {
            method: "PUT".into(),
            path: "/rest/user".into(),
            body: Some(
                json!({"name": username, "group": "full", "password": password,
                              "comment": format!("sallyport transient access {id}")})
            ),
            auth: auth.clone(),
        }]
    );
    assert_eq!(router.users().len(), 1);
    // Read-only accesses get the `read` group.
    let (status, ro) = f
        .create(
            MT_ID,
            json!({"expire_after_minutes": 15, "type": "winbox", "full_access": false}),
        )
        .await;
    assert_eq!(status, 201, "{ro}");
    let last = router.requests().pop().unwrap();
    assert_eq!(last.body.unwrap()["group"], "read");

    f.revoke(MT_ID, id).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while router.users().len() != 1 {
        assert!(
            Instant::now() < deadline,
            "user not removed: {:?}",
            router.users()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reqs = router.requests();
    assert_eq!(
        reqs[2..].to_vec(),
        vec![
            routeros_double::Recorded {
                method: "GET".into(),
                path: format!("/rest/user?name={username}"),
                body: None,
                auth: auth.clone(),
            },
            routeros_double::Recorded {
                method: "DELETE".into(),
                path: "/rest/user/*1".into(),
                body: None,
                auth,
            },
        ]
    );
    assert_eq!(router.users()[0]["name"], ro["username"]);
    let log = f.gw.plain_log();
    assert!(log.contains("event=device_user.created"), "{log}");
    assert!(log.contains("event=device_user.removed"), "{log}");
    assert!(!log.contains(password), "the password reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_provisioning_answers_502_and_leaves_nothing_behind() {
    let echo = echo_server().await;
    let router = RouterOsDouble::start(ROUTER_USER, ROUTER_PW).await;
    // One port: if the failed access kept it, the next creation would get 503.
    let f = Fixture::start("28070-28070", echo.addr, Some(&router)).await;
    // A device that echoes the request in its error: the new user's password must not reach
    // the answer or the log.
    router.state.lock().unwrap().reject_put =
        Some("failure: not enough permissions for {body}".into());
    let body = json!({"expire_after_minutes": 15, "type": "winbox", "full_access": true});
    let got = f.create(MT_ID, body.clone()).await;
    common::assert_error(&got, 502, "not enough permissions");
    assert_eq!(got.1["error"], "bad_gateway");
    let sent = router.requests()[0].body.clone().unwrap();
    let password = sent["password"].as_str().unwrap().to_string();
    assert!(password.len() >= 16, "{sent}");
    let message = got.1["message"].as_str().unwrap();
    assert!(message.contains("********"), "{message}");
    assert!(!message.contains(&password), "{message}");
    assert!(!f.gw.plain_log().contains(&password));
    // The failed PUT is followed by a lookup making sure no half-made user remains (the
    // removal worker may look too, so more than one lookup is fine).
    let reqs = router.requests();
    assert_eq!(reqs[0].method, "PUT", "{reqs:?}");
    assert!(reqs[1..].iter().all(|r| r.method == "GET"), "{reqs:?}");
    assert!(reqs.len() >= 2, "{reqs:?}");
    assert!(router.users().is_empty());
    let (_, list) = get(
        &f.http,
        &f.gw,
        &f.ticket,
        &format!("/sites/{MT_ID}/transient-accesses"),
    )
    .await;
    assert_eq!(list, json!([]));
    assert!(pending(&f, MT_ID).await.is_empty());
    assert!(TcpStream::connect(("127.0.0.1", 28070)).await.is_err());

    // The port is free again, and a working device gets its user.
    router.state.lock().unwrap().reject_put = None;
    let (status, a) = f.create(MT_ID, body.clone()).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(port_of(&a), 28070);
    assert_eq!(router.users().len(), 1);
    assert!(
        f.gw.plain_log()
            .contains("event=transient.provision_failed")
    );

    // A device that made the user and then failed to answer: the half-made user is removed.
    f.revoke(MT_ID, a["id"].as_str().unwrap()).await;
    wait_until(
        || router.users().is_empty(),
        "the revoked access's user is removed",
    )
    .await;
    router.state.lock().unwrap().fail_after_put = true;
    let before = router.requests().len();
    let got = f.create(MT_ID, body).await;
    common::assert_error(&got, 502, "lost after the user was made");
    wait_until(
        || router.users().is_empty(),
        "the half-made user is removed",
    )
    .await;
    let reqs: Vec<String> = router.requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(reqs[0], "PUT /rest/user", "{reqs:?}");
    assert!(
        reqs.contains(&"DELETE /rest/user/*2".to_string()),
        "{reqs:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pending(&f, MT_ID).await.is_empty() {
        assert!(Instant::now() < deadline, "removal still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(TcpStream::connect(("127.0.0.1", 28070)).await.is_err());
}

/// Polls `done` for up to 5 s.
async fn wait_until(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_removes_the_device_user() {
    let echo = echo_server().await;
    let router = RouterOsDouble::start(ROUTER_USER, ROUTER_PW).await;
    let f = Fixture::start("28140-28149", echo.addr, Some(&router)).await;
    let (status, a) = f
        .create(
            MT_ID,
            json!({"expire_after_minutes": 15, "type": "winbox", "full_access": false}),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    let (id, username) = (a["id"].as_str().unwrap(), a["username"].as_str().unwrap());
    assert_eq!(router.users().len(), 1);
    f.set_expires_at(id, now_ms() + 200);
    wait_until(
        || router.users().is_empty(),
        "the expired access's user is removed",
    )
    .await;
    let reqs: Vec<String> = router
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        reqs,
        [
            "PUT /rest/user".to_string(),
            format!("GET /rest/user?name={username}"),
            "DELETE /rest/user/*1".to_string(),
        ]
    );
    assert_eq!(f.get(MT_ID, id).await["expired"], true);
    assert!(pending(&f, MT_ID).await.is_empty());
    assert!(f.gw.log_shows("event=device_user.removed", Duration::from_secs(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_other_than_the_pinned_one_is_refused() {
    let echo = echo_server().await;
    let router = RouterOsDouble::start(ROUTER_USER, ROUTER_PW).await;
    let impostor = RouterOsDouble::start(ROUTER_USER, ROUTER_PW).await;
    // Configured with the real device's pin, but pointed at the impostor.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sallyport.toml");
    let text = config(
        &tmp.path().join("data"),
        "28080-28089",
        echo.addr,
        Some(&router),
    )
    .replace(&router.url(), &impostor.url());
    std::fs::write(&path, text).unwrap();
    let gw = Gateway::start(&path);
    let http = client();
    let ticket = login(&http, &gw, "admin", "admin-pw").await;
    let got = post(
        &http,
        &gw,
        &ticket,
        &format!("/control-plane/{MT_ID}/transient-accesses"),
        json!({"expire_after_minutes": 15, "type": "winbox"}),
    )
    .await;
    common::assert_error(&got, 502, "routeros_cert_sha256");
    assert!(
        impostor.requests().is_empty(),
        "credentials went to an impostor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removal_is_retried_while_the_device_is_unreachable_and_shown_pending() {
    let echo = echo_server().await;
    let mut router = RouterOsDouble::start(ROUTER_USER, ROUTER_PW).await;
    let f = Fixture::start("28090-28099", echo.addr, Some(&router)).await;
    let (status, a) = f
        .create(
            MT_ID,
            json!({"expire_after_minutes": 15, "type": "winbox", "full_access": true}),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    let username = a["username"].as_str().unwrap();
    router.stop().await;
    f.revoke(MT_ID, a["id"].as_str().unwrap()).await;
    // Failing attempts are shown, with the cause.
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let p = pending(&f, MT_ID).await;
        if p.first().is_some_and(|r| r["attempts"].as_u64() >= Some(2)) {
            break p;
        }
        assert!(Instant::now() < deadline, "no retries shown: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0]["username"], username);
    assert_eq!(shown[0]["access_id"], a["id"]);
    assert!(
        shown[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach")),
        "{shown:?}"
    );
    // The queue survives a restart of the gateway.
    let f = f.restarted().await;
    let p = pending(&f, MT_ID).await;
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0]["username"], username);
    // Back online: the next retry removes the user and the queue empties.
    router.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !router.users().is_empty() || !pending(&f, MT_ID).await.is_empty() {
        assert!(Instant::now() < deadline, "user never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ports_accept_as_soon_as_the_api_answers_and_the_gateway_says_it_is_up() {
    let echo = echo_server().await;
    let f = Fixture::start("28200-28299", echo.addr, None).await;
    // No waiting anywhere: a client that connects right after the 201 must not be refused.
    let mut ports = Vec::new();
    for i in 0..100 {
        let port = port_of(&f.winbox("127.0.0.1/32").await);
        let mut s = connect_from("127.0.0.1", port)
            .await
            .unwrap_or_else(|e| panic!("access {i}: port {port} refused right after 201: {e}"));
        if i % 10 == 0 {
            assert!(roundtrip(&mut s, b"at once").await);
        }
        ports.push(port);
    }
    // Nor right after a restarted gateway prints that it is up: with a hundred listeners to
    // restore, a gateway that announced itself first would still be binding the last ones.
    let Fixture { tmp, gw, .. } = f;
    let path = gw.config_path.clone();
    gw.stop();
    let gw = Gateway::start(&path);
    for port in ports.iter().rev() {
        connect_from("127.0.0.1", *port)
            .await
            .unwrap_or_else(|e| panic!("port {port} refused after the restart: {e}"));
    }
    let mut s = connect_from("127.0.0.1", ports[0]).await.unwrap();
    assert!(roundtrip(&mut s, b"after restart").await);
    drop((gw, tmp));
}

/// Installs `wasm` as the drop-in `name` (written whole, then renamed into place) and waits
/// until the gateway has loaded that name `loads` times.
async fn drop_in_plugin(f: &Fixture, name: &str, wasm: &[u8], loads: usize) {
    common::drop_in(&f.tmp.path().join("data/plugins"), name, wasm).await;
    let stem = name.trim_end_matches(".wasm");
    let line = format!("policy plugin loaded plugin={stem} ");
    let what = format!("{name} not loaded");
    f.gw.await_log(Duration::from_secs(10), &what, |log| {
        log.matches(&line).count() >= loads
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_grant_limits_winbox_connections() {
    let echo = echo_server().await;
    let f = Fixture::start("28130-28139", echo.addr, None).await;
    let port = port_of(&f.winbox("127.0.0.1/32").await);
    let mut before = connect_from("127.0.0.1", port).await.unwrap();
    assert!(roundtrip(&mut before, b"no plugin yet").await);

    // A connect-time grant of two seconds: later connections are cut then.
    drop_in_plugin(
        &f,
        "short.wasm",
        &hostile::allow_with("authorize", Some(2), &[]),
        1,
    )
    .await;
    let mut s = connect_from("127.0.0.1", port).await.unwrap();
    let start = Instant::now();
    assert!(roundtrip(&mut s, b"for now").await);
    let closed = time_to_close(&mut s, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(
        closed.is_some(),
        "still open after 5 s\n{}",
        f.gw.plain_log()
    );
    assert!(
        took >= Duration::from_millis(1900) && took <= Duration::from_secs(3),
        "cut after {took:?}, the grant allows 2 s"
    );
    assert!(f.gw.log_shows("longest time its policy allows", Duration::from_secs(2)));
    // The connection decided before the plugin came keeps its own decision.
    assert!(roundtrip(&mut before, b"still here").await);

    // A grant capping this full access to read-only cannot be met by its device user: refused.
    drop_in_plugin(&f, "short.wasm", &hostile::allow_read_only("authorize"), 2).await;
    let mut s = connect_from("127.0.0.1", port).await.unwrap();
    assert!(!roundtrip(&mut s, b"x").await);
    assert!(
        f.gw.log_shows("the policy allows read-only", Duration::from_secs(2)),
        "{}",
        f.gw.plain_log()
    );
}
