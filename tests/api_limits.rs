//! End-to-end tests of the API's defences against clients that abuse connections and bodies,
//! against the real binary over HTTPS: a source over its connection cap is closed at once,
//! a request whose headers never end is cut, oversized bodies get a JSON 413, and failed
//! logins cannot grow the audit log without bound.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Starts a gateway whose `[server]` section also has `extra`.
fn start_with(ports: &str, extra: &str) -> (tempfile::TempDir, Gateway) {
    let (tmp, path) = setup(ports);
    let cfg = std::fs::read_to_string(&path).unwrap().replacen(
        "sweep_interval_ms = 100\n",
        &format!("sweep_interval_ms = 100\n{extra}\n"),
        1,
    );
    std::fs::write(&path, cfg).unwrap();
    let gw = Gateway::start(&path);
    (tmp, gw)
}

fn api_addr(gw: &Gateway) -> String {
    gw.base.trim_start_matches("https://").to_string()
}

/// True if the server closes `s` within `limit` without sending anything.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn connections_over_the_per_source_cap_are_closed_at_once() {
    let (_tmp, gw) = start_with("24300-24309", "api_max_connections_per_source = 3");
    let addr = api_addr(&gw);
    // Three silent connections hold every slot this source has (they sit in the TLS
    // handshake, which would wait 10 s).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    assert!(
        closed_within(&mut fourth, Duration::from_secs(2)).await,
        "the connection over the cap was not closed"
    );
    // The held ones are still open: the cap refuses the newcomer, not the others.
    assert!(!closed_within(&mut held[0], Duration::from_millis(300)).await);

    // Slots come back when connections end.
    held.clear();
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c.get(gw.url("/healthz")).send().await {
            Ok(r) if r.status() == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "healthz after the held connections closed: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_json_413() {
    let (_tmp, path) = setup("24310-24319");
    let gw = Gateway::start(&path);
    let c = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let big = format!(
        "{{\"username\":\"{}\",\"password\":\"x\"}}",
        "a".repeat(3 << 20)
    );
    let r = c
        .post(gw.url("/api/v1/Session"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_error(&(status, body.clone()), 413, "request body over");
    assert_eq!(body["error"], "payload_too_large");
    // The gateway carries on.
    let r = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn failed_logins_leave_bounded_clipped_audit_rows() {
    let (tmp, path) = setup("24320-24329");
    let gw = Gateway::start(&path);
    let c = client();
    let long_name = "n".repeat(100_000);
    for i in 0..30 {
        let name = if i == 0 { long_name.as_str() } else { "ghost" };
        let r = c
            .post(gw.url("/api/v1/Session"))
            .json(&json!({"username": name, "password": "wrong"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // A good login still works and is audited.
    login(&c, &gw, "admin", "admin-pw").await;
    let log = gw.log();
    gw.stop();

    let db = rusqlite::Connection::open(tmp.path().join("data/sallyport.db")).unwrap();
    let (rows, longest): (i64, i64) = db
        .query_row(
            "SELECT count(*), max(max(length(actor)), max(length(subject))) FROM audit
             WHERE event = 'login.denied'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // 20 rows per source and minute (`issuer::refusals`), however many failures.
    assert_eq!(rows, 20, "login.denied rows");
    assert!(longest < 1100, "an audit field kept {longest} bytes");
    let logins: i64 = db
        .query_row(
            "SELECT count(*) FROM audit WHERE event = 'login'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(logins, 1);
    // The log line is clipped the same way.
    assert!(!log.contains(&"n".repeat(2000)));
    assert!(log.contains("more bytes"), "no clipped field in the log");
}

#[tokio::test]
async fn headers_that_never_end_are_cut_after_the_header_timeout() {
    let (_tmp, path) = setup("24330-24339");
    let gw = Gateway::start(&path);
    // A real TLS client that sends half a request and then nothing more, keeping its side
    // open; `s_client -quiet` exits when the server closes the connection.
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &api_addr(&gw)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    {
        use std::io::Write;
        let stdin = client.stdin.as_mut().unwrap();
        stdin
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
            .unwrap();
        stdin.flush().unwrap();
    }
    // The header timeout is 30 s (`http_conn::HEADER_TIMEOUT`).
    let closed = loop {
        if client.try_wait().unwrap().is_some() {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(50) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = client.kill();
    let _ = client.wait();
    let closed = closed.expect("the stalled request was never cut");
    assert!(
        closed >= Duration::from_secs(25),
        "cut after only {closed:?}"
    );
}
