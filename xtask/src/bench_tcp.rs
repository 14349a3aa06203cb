//! `cargo xtask bench tcp`: the Winbox (raw TCP) forwarder against the alternatives, in one run.
//!
//! Starts `iperf3 -s` and an echo server (in this process) as the devices, `socat` in front of
//! each as the baseline forwarder, and a release build of the gateway with one `winbox`
//! transient access per device. Then measures, for *direct*, *socat* and *sallyport*:
//! - throughput: `iperf3 -c` for `--seconds` (default 5), client to server and reverse (`-R`);
//! - connect latency: `--connects` (default 2000) sequential connect + 1-byte echo round trips,
//!   p50 and p99 (the gateway's time includes the policy decision and its own connect to the
//!   device, which is what a Winbox client waits for);
//! - memory: the gateway's RSS growth with `--idle` (default 10000) idle forwarded connections
//!   open at once, per connection;
//! - two relay floors for the connect latency, measured the same way: the plainest tokio relay
//!   (accept, connect, copy; no policy) and a relay that busy-polls (never sleeps), which
//!   separate what relaying costs on this machine from what the gateway adds.
//!
//! It prints the numbers and the ratios the issue sets targets for (throughput ≥ 1.0× socat,
//! added connect latency ≤ 50 µs p50, ≤ 40 KB RSS per connection); record them in BENCHMARKS.md
//! with the machine's load (`uptime`), since the numbers move with it. Needs `iperf3`, `socat`
//! and `prlimit` (Debian: iperf3, socat, util-linux); raising the open-file limit to fit the
//! idle connections needs root or a high enough hard limit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::proc;

const IPERF_ID: &str = "d290f1ee-6c54-4b01-90e6-d701748f0851";
const ECHO_ID: &str = "5b2c1d4e-8f3a-4b6c-9d7e-0a1b2c3d4e5f";
const API_KEY: &str = "bench-api-key-0123456789abcdef";

use proc::{Guard, free_port, wait_port};

fn spawn(cmd: &mut Command) -> anyhow::Result<Guard> {
    Ok(Guard(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?,
    ))
}

/// Raises this process's open-file limit (children inherit it) towards `n`, as far as the hard
/// limit allows (raising that needs CAP_SYS_RESOURCE); returns the limit now in force.
fn raise_nofile(n: u64) -> anyhow::Result<u64> {
    let pid = std::process::id().to_string();
    let _ = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={n}:{n}")])
        .stderr(Stdio::null())
        .status();
    let out = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile", "--output=HARD", "--noheadings"])
        .output()
        .context("cannot run prlimit (util-linux)")?;
    let hard: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("cannot read the open-file limit")?;
    let _ = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status();
    Ok(hard)
}

/// An echo server on its own threads: one task per connection, echoing until end of stream.
fn echo_server() -> anyhow::Result<(SocketAddr, tokio::runtime::Runtime)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    rt.spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok((addr, rt))
}

/// The simplest relay tokio makes, on a multi-threaded runtime of its own (one worker per CPU):
/// accept, connect to `to`, copy both ways. No policy, no audit: what a relay that sleeps
/// between events pays on this machine before doing anything of its own.
fn plain_relay(to: SocketAddr) -> anyhow::Result<(u16, tokio::runtime::Runtime)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    rt.spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut device) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = device.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut device).await;
            });
        }
    });
    Ok((port, rt))
}

/// A relay that never sleeps: one thread polls its listener and every connection without
/// blocking, so no wake-up is ever paid on its side (and one core is always busy). Sequential
/// connections only, which is all the latency loop makes. Stops when `stop` is set.
fn spinning_relay(
    to: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<(u16, std::thread::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let thread = std::thread::spawn(move || {
        let mut conns: Vec<(TcpStream, TcpStream)> = Vec::new();
        let mut buf = [0u8; 4096];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((client, _)) = listener.accept()
                && let Ok(device) = TcpStream::connect(to)
            {
                let ready = [&client, &device]
                    .iter()
                    .all(|s| s.set_nodelay(true).is_ok() && s.set_nonblocking(true).is_ok());
                if ready {
                    conns.push((client, device));
                }
            }
            conns.retain_mut(|(client, device)| {
                let mut alive = true;
                for (from, to) in [(&*client, &*device), (&*device, &*client)] {
                    match (&mut &*from).read(&mut buf) {
                        Ok(0) => alive = false,
                        Ok(n) => alive &= (&mut &*to).write_all(&buf[..n]).is_ok(),
                        Err(e) => alive &= e.kind() == std::io::ErrorKind::WouldBlock,
                    }
                }
                alive
            });
        }
    });
    Ok((port, thread))
}

/// Creates a winbox transient access on a site and returns its port.
fn transient(api: u16, site: &str) -> anyhow::Result<u16> {
    let body = r#"{"expire_after_minutes":60,"type":"winbox","full_access":true}"#;
    let mut s = TcpStream::connect(("127.0.0.1", api))?;
    write!(
        s,
        "POST /control-plane/{site}/transient-accesses HTTP/1.1\r\nhost: x\r\nusername: bench\r\n\
         api_key: {API_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let json = response.split("\r\n\r\n").nth(1).context("no body")?;
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).with_context(|| format!("bad response {response:?}"))?;
    let port = v["port"].as_u64().context("no port")? as u16;
    wait_port(port)?;
    Ok(port)
}

/// iperf3 throughput in Gbit/s (what the receiver counted).
fn iperf(port: u16, seconds: u64, reverse: bool) -> anyhow::Result<f64> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", "127.0.0.1", "-J", "-p", &port.to_string()])
        .args(["-t", &seconds.to_string()]);
    if reverse {
        cmd.arg("-R");
    }
    let out = cmd.output().context("cannot run iperf3")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 said: {}", String::from_utf8_lossy(&out.stdout)))?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no sum_received in iperf3 output")?;
    Ok(bps / 1e9)
}

/// Sequential connect + 1-byte echo round trips; (p50, p99) in microseconds.
fn connect_latency(port: u16, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::with_capacity(n);
    let mut byte = [0u8; 1];
    for i in 0..n + n / 10 {
        let start = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.write_all(b"x")?;
        s.read_exact(&mut byte)?;
        let took = start.elapsed();
        // The first tenth warms caches and pools up.
        if i >= n / 10 {
            times.push(took.as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    Ok((at(0.5), at(0.99)))
}

/// Mean time per policy decision, by hook and plugin, from the gateway's `/metrics`.
fn policy_means(api: u16) -> anyhow::Result<Vec<(String, f64)>> {
    let mut s = TcpStream::connect(("127.0.0.1", api))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let metric = "sallyport_policy_decision_duration_seconds";
    let value = |suffix: &str, labels: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{metric}_{suffix}{labels} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&format!("{metric}_sum")) else {
            continue;
        };
        let labels = rest.rsplit_once(' ').map_or(rest, |(l, _)| l);
        if let (Some(sum), Some(count)) = (value("sum", labels), value("count", labels))
            && count > 0.0
        {
            out.push((labels.to_string(), sum / count * 1e6));
        }
    }
    Ok(out)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// Opens `n` forwarded connections, each proven spliced by one echo; returns them.
fn open_idle(port: u16, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(n);
    let mut byte = [0u8; 1];
    for i in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connection {i} of {n}"))?;
        s.write_all(b"x")?;
        s.read_exact(&mut byte)?;
        conns.push(s);
    }
    Ok(conns)
}

pub fn run(seconds: u64, connects: usize, idle: usize) -> anyhow::Result<()> {
    // Each idle connection costs two descriptors in the gateway (client and device side) and two
    // here (client, and the echo server's end); keep some for everything else.
    let limit = raise_nofile((idle as u64) * 2 + 1024)?;
    let fits = (limit.saturating_sub(256) / 2) as usize;
    let idle = if idle > fits {
        println!(
            "note: the open-file limit is {limit} and cannot be raised here (no CAP_SYS_RESOURCE); \
             measuring {fits} idle connections instead of {idle}"
        );
        fits
    } else {
        idle
    };
    let bin = proc::build_release()?;
    let tmp = tempfile::tempdir()?;
    let iperf_port = free_port()?;
    let _iperf = spawn(Command::new("iperf3").args(["-s", "-p", &iperf_port.to_string()]))?;
    wait_port(iperf_port)?;
    let (echo, _echo_rt) = echo_server()?;
    let socat = |listen: u16, to: u16| {
        spawn(Command::new("socat").args([
            &format!("TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork,backlog=1024"),
            &format!("TCP:127.0.0.1:{to},nodelay"),
        ]))
    };
    let (socat_iperf_port, socat_echo_port) = (free_port()?, free_port()?);
    let _socat_iperf = socat(socat_iperf_port, iperf_port)?;
    let _socat_echo = socat(socat_echo_port, echo.port())?;
    wait_port(socat_iperf_port)?;
    wait_port(socat_echo_port)?;

    let config = tmp.path().join("sallyport.toml");
    // The transient ports lie below Linux's ephemeral range (32768-60999): the bench opens
    // thousands of connections, and an outgoing one holding the access's port as its local
    // port kept the listener from binding it (EADDRINUSE until that connection closed).
    std::fs::write(
        &config,
        format!(
            r#"[server]
data_dir = "{data}"
api_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"
tls = false
transient_ports = "21900-21999"
[[groups]]
name = "ops"
devices = ["*"]
access = "full"
[[users]]
name = "bench"
password = "bench-password"
groups = ["ops"]
api_keys = ["{API_KEY}"]
[[devices]]
name = "iperf"
id = "{IPERF_ID}"
winbox = "127.0.0.1:{iperf_port}"
[[devices]]
name = "echo"
id = "{ECHO_ID}"
winbox = "{echo}"
"#,
            data = tmp.path().join("data").display()
        ),
    )?;
    let gw = proc::start(&bin, &config, proc::Log::Warnings)?;
    let api = gw.addr.port();
    let gw_iperf_port = transient(api, IPERF_ID)?;
    let gw_echo_port = transient(api, ECHO_ID)?;

    let routes = [
        ("direct", iperf_port, echo.port()),
        ("socat", socat_iperf_port, socat_echo_port),
        ("sallyport", gw_iperf_port, gw_echo_port),
    ];
    println!("route       up Gbit/s  down Gbit/s  connect p50 µs  connect p99 µs");
    let mut results = Vec::new();
    for (name, iperf_via, echo_via) in routes {
        let up = iperf(iperf_via, seconds, false)?;
        let down = iperf(iperf_via, seconds, true)?;
        let (p50, p99) = connect_latency(echo_via, connects)?;
        println!("{name:<10} {up:>10.2} {down:>12.2} {p50:>15.1} {p99:>15.1}");
        results.push((up, down, p50, p99));
    }
    let [direct, socat, sp] = [results[0], results[1], results[2]];
    println!();
    println!(
        "throughput sallyport/socat: up {:.2}x, down {:.2}x (target >= 1.0x)",
        sp.0 / socat.0,
        sp.1 / socat.1
    );
    println!(
        "throughput sallyport/direct: up {:.2}x, down {:.2}x",
        sp.0 / direct.0,
        sp.1 / direct.1
    );
    println!(
        "connect p50 added over direct: sallyport {:+.1} µs (target <= 50), socat {:+.1} µs; \
         ratio sallyport/socat {:.2}x",
        sp.2 - direct.2,
        socat.2 - direct.2,
        sp.2 / socat.2
    );

    for (labels, mean) in policy_means(api)? {
        println!("policy decision {labels}: mean {mean:.1} µs");
    }

    // Floors: what any relay adds on this machine, measured the same way, so the gateway's
    // added latency can be split into what relaying costs here and what the gateway adds.
    let (plain_port, plain_rt) = plain_relay(echo)?;
    let (plain50, plain99) = connect_latency(plain_port, connects)?;
    drop(plain_rt);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (spin_port, spinner) = spinning_relay(echo, stop.clone())?;
    let spun = connect_latency(spin_port, connects);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = spinner.join();
    let (spin50, spin99) = spun?;
    println!(
        "relay floors, connect p50 / p99 added over direct: plain tokio relay (no policy) \
         {:+.1} / {:+.1} µs; busy-polling relay (never sleeps, one core always busy) {:+.1} / {:+.1} µs; \
         sallyport over the plain relay {:+.1} µs p50",
        plain50 - direct.2,
        plain99 - direct.3,
        spin50 - direct.2,
        spin99 - direct.3,
        sp.2 - plain50
    );

    let pid = gw.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let conns = open_idle(gw_echo_port, idle)?;
    let opened = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(pid)?;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / idle as f64;
    println!(
        "idle: {idle} forwarded connections opened in {:.1} s; gateway RSS {before} KiB -> {after} KiB, \
         {:.1} KB per connection (target <= 40 KB)",
        opened.as_secs_f64(),
        per / 1000.0
    );
    drop(conns);
    Ok(())
}
