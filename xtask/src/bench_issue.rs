//! `cargo xtask bench issue`: one-time-key issuance over HTTPS with durable commits.
//!
//! Starts a release build of the gateway (TLS on, SQLite with `synchronous = FULL`) as its own
//! process, then drives it from this process: first `GET /healthz` as the baseline (same TLS,
//! HTTP and auth-free path, no store), then `POST /api/v1/opensession`, and prints throughput,
//! p50/p99 latency and the ratio of issuance to baseline. Finally it checks that every key the
//! run was told about is in the store (the tracking count).

use std::time::Duration;

use anyhow::{Context, bail};

use crate::load::{self, Target};
use crate::proc;

const DEVICE_ID: &str = "d290f1ee-6c54-4b01-90e6-d701748f0851";

pub fn run(seconds: u64, connections: usize) -> anyhow::Result<()> {
    let bin = proc::build_release()?;
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
data_dir = "{}"
api_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"
# Below the ephemeral range, so the gateway has nothing to warn about.
transient_ports = "21700-21799"
[[groups]]
name = "ops"
devices = ["*"]
access = "full"
[[users]]
name = "bench"
password = "bench-password"
groups = ["ops"]
[[devices]]
name = "device1"
id = "{DEVICE_ID}"
ssh = "127.0.0.1:22"
"#,
            tmp.path().join("data").display()
        ),
    )?;
    let server = proc::start(&bin, &config, proc::Log::File)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let base = |method, path: &str, headers: Vec<(String, String)>, body: Option<String>| Target {
            addr: server.addr,
            method,
            path: path.to_string(),
            headers,
            body,
        };
        let json = ("content-type".to_string(), "application/json".to_string());
        let (status, body) = load::request(&base(
            hyper::Method::POST,
            "/api/v1/Session",
            vec![json.clone()],
            Some(r#"{"username":"bench","password":"bench-password"}"#.into()),
        ))
        .await?;
        if status != 200 {
            bail!("login failed: {status}");
        }
        let ticket = serde_json::from_slice::<serde_json::Value>(&body)?["session"]
            .as_str()
            .context("no ticket")?
            .to_string();
        let warm = Duration::from_secs(2);
        let measure = Duration::from_secs(seconds);
        println!("bench issue: {connections} HTTPS connections, {seconds}s measured after 2s warm-up, 2 cores shared by server and load");

        let health = load::run(&base(hyper::Method::GET, "/healthz", vec![], None), connections, warm, measure).await?;
        report("baseline GET /healthz", &health);
        let issue_target = base(
            hyper::Method::POST,
            "/api/v1/opensession",
            vec![json, ("ticket".into(), ticket.clone())],
            Some(r#"{"target_device":"device1","user":"bench","duration":"600"}"#.into()),
        );
        let issue = load::run(&issue_target, connections, warm, measure).await?;
        report("POST /api/v1/opensession", &issue);
        println!(
            "ratio issuance/baseline: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
            issue.rate() / health.rate(),
            issue.ms(0.5) / health.ms(0.5),
            issue.ms(0.99) / health.ms(0.99)
        );
        let target_met = issue.rate() >= 10_000.0 && issue.ms(0.99) <= 5.0;
        println!(
            "target (>= 10000 tokens/s, p99 <= 5 ms): {}",
            if target_met { "met" } else { "NOT met" }
        );
        // Every acknowledged key must be stored: count them through the API.
        let (status, list) = load::request(&base(
            hyper::Method::GET,
            "/api/v1/tracking/opensessions",
            vec![("ticket".into(), ticket)],
            None,
        ))
        .await?;
        let stored = serde_json::from_slice::<serde_json::Value>(&list)?.as_array().map_or(0, Vec::len) as u64;
        println!("stored sessions: {stored} (acknowledged in the measured window: {}; status {status})", issue.ok);
        if stored < issue.ok {
            bail!("fewer sessions stored than acknowledged");
        }
        anyhow::Ok(())
    })?;
    drop(server);
    Ok(())
}

fn report(name: &str, s: &load::Stats) {
    println!(
        "{name:<28} {:>9.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  p99.9 {:>6.3} ms  errors {}",
        s.rate(),
        s.ms(0.5),
        s.ms(0.99),
        s.ms(0.999),
        s.errors
    );
}
