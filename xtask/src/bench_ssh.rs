//! `cargo xtask bench ssh`: the SSH forwarder against the alternatives, in one run.
//!
//! Starts a real `sshd` as the device and a second `sshd` as an OpenSSH jump host (both on
//! loopback, logging in as the current user with a generated key, so no root or user accounts
//! are needed), and a release build of the gateway in front of the device. Then measures, for
//! each of *direct* (`ssh device`), *jump* (`ssh -J jump device`) and *sallyport*
//! (`ssh -p GW user:device@gw` with a one-time key, answered through `SSH_ASKPASS`, not
//! sshpass, so no pty is added):
//! - bulk throughput: `--mib` MiB (default 1024) out of the device (`head -c N /dev/zero`)
//!   and into it (`cat > /dev/null`), best of `--runs`;
//! - login-to-first-byte: from spawning `ssh … 'echo x'` to its first stdout byte, median of
//!   `--logins`.
//!
//! The routes take turns (each run, and each login round, goes through all three in order),
//! so a slow spell of the machine falls on every route rather than on one.
//!
//! It prints the numbers and the ratios the issue sets targets for (throughput ≥ 1.0× jump and
//! ≥ 0.9× direct; login latency ≤ 1.0× jump); record them in BENCHMARKS.md.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::proc;

const DEVICE_ID: &str = "d290f1ee-6c54-4b01-90e6-d701748f0851";
const API_KEY: &str = "bench-api-key-0123456789abcdef";

use proc::{Guard, free_port, wait_port};

fn check(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An sshd on loopback that lets the current user in with `pubkey`.
fn sshd(dir: &Path, pubkey: &str, user: &str) -> anyhow::Result<(Guard, u16)> {
    std::fs::create_dir_all(dir)?;
    let host_key = dir.join("host_key");
    check(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key),
    )?;
    std::fs::write(dir.join("authorized_keys"), pubkey)?;
    let port = free_port()?;
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {d}/pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin {root}\n\
             AllowUsers {user}\nMaxStartups 100\nLogLevel ERROR\n",
            hk = host_key.display(),
            d = dir.display(),
            root = if user == "root" {
                "prohibit-password"
            } else {
                "no"
            },
        ),
    )?;
    // Privilege separation needs this when running as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start /usr/sbin/sshd (install openssh-server)")?;
    let guard = Guard(child);
    wait_port(port)?;
    Ok((guard, port))
}

/// Issues a one-time key over plain HTTP (the bench config turns TLS off).
fn otk(api: u16, user: &str) -> anyhow::Result<String> {
    let body = format!(r#"{{"target_device":"dev1","user":"{user}","duration":300}}"#);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", api))?;
    write!(
        s,
        "POST /api/v1/opensession HTTP/1.1\r\nhost: x\r\nusername: bench\r\napi_key: {API_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let json = response.split("\r\n\r\n").nth(1).context("no body")?;
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).with_context(|| format!("bad response {response:?}"))?;
    Ok(v["session_token"]
        .as_str()
        .context("no session_token")?
        .to_string())
}

/// One way of reaching the device.
struct Route {
    name: &'static str,
    /// Arguments after `ssh`, before the remote command.
    args: Vec<String>,
    /// One-time keys are needed per login.
    needs_otk: bool,
}

struct Env {
    config: PathBuf,
    askpass: PathBuf,
    api: u16,
}

fn ssh_command(env: &Env, route: &Route, remote: &str) -> anyhow::Result<Command> {
    let mut cmd = Command::new("ssh");
    cmd.arg("-F").arg(&env.config).args(&route.args).arg(remote);
    if route.needs_otk {
        cmd.env("SP_OTK", otk(env.api, "bench")?)
            .env("SSH_ASKPASS", &env.askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0");
    }
    Ok(cmd)
}

/// Seconds to move `bytes` out of the device.
fn download(env: &Env, route: &Route, bytes: u64) -> anyhow::Result<f64> {
    let mut cmd = ssh_command(env, route, &format!("head -c {bytes} /dev/zero"))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let mut out = child.stdout.take().context("no stdout")?;
    let got = std::io::copy(&mut out, &mut std::io::sink())?;
    let status = child.wait()?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() || got != bytes {
        bail!(
            "{}: download got {got} of {bytes} bytes ({status})",
            route.name
        );
    }
    Ok(secs)
}

/// Seconds to move `bytes` into the device.
fn upload(env: &Env, route: &Route, bytes: u64) -> anyhow::Result<f64> {
    let mut cmd = ssh_command(env, route, "cat > /dev/null")?;
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stdin.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    drop(stdin);
    let status = child.wait()?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{}: upload failed ({status})", route.name);
    }
    Ok(secs)
}

/// Seconds from spawning `ssh … echo x` to the first byte of its output.
fn first_byte(env: &Env, route: &Route) -> anyhow::Result<f64> {
    let mut cmd = ssh_command(env, route, "echo x")?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let mut out = child.stdout.take().context("no stdout")?;
    let mut b = [0u8; 1];
    let n = out.read(&mut b)?;
    let secs = start.elapsed().as_secs_f64();
    let _ = child.wait();
    if n == 0 {
        bail!("{}: no output", route.name);
    }
    Ok(secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(mib: u64, runs: u64, logins: u64, ciphers: Option<&str>) -> anyhow::Result<()> {
    let bin = proc::build_release()?;
    let tmp = tempfile::tempdir()?;
    let user = check(Command::new("id").arg("-un"))?.trim().to_string();
    let key = tmp.path().join("id_bench");
    check(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key),
    )?;
    let pubkey = std::fs::read_to_string(key.with_extension("pub"))?;
    let (_device, device_port) = sshd(&tmp.path().join("device"), &pubkey, &user)?;
    let (_jump, jump_port) = sshd(&tmp.path().join("jump"), &pubkey, &user)?;

    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("keys"))?;
    std::fs::copy(&key, data.join("keys/bench"))?;
    let gw_config = tmp.path().join("sallyport.toml");
    std::fs::write(
        &gw_config,
        format!(
            r#"[server]
data_dir = "{data}"
api_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"
tls = false
# Unused (no transient accesses here); below the ephemeral range so the gateway has nothing
# to warn about.
transient_ports = "21800-21899"
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
name = "dev1"
id = "{DEVICE_ID}"
ssh = "127.0.0.1:{device_port}"
credentials.full = {{ user = "{user}", key_file = "keys/bench" }}
"#,
            data = data.display()
        ),
    )?;
    let gw = proc::start(&bin, &gw_config, proc::Log::Warnings)?;
    let (api, gw_port) = (gw.addr.port(), gw.ssh.port());

    let askpass = tmp.path().join("askpass.sh");
    std::fs::write(&askpass, "#!/bin/sh\nprintf '%s\\n' \"$SP_OTK\"\n")?;
    check(Command::new("chmod").arg("700").arg(&askpass))?;
    let mut common =
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode no\n"
            .to_string();
    // The same client cipher list on every route (and both hops of `ssh -J`), so the ratios
    // compare the routes and not the ciphers the client picked on each.
    if let Some(c) = ciphers {
        common.push_str(&format!("  Ciphers {c}\n"));
    }
    let config = tmp.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host device\n  HostName 127.0.0.1\n  Port {device_port}\n  User {user}\n  IdentityFile {k}\n  IdentitiesOnly yes\n{common}\
             Host jump\n  HostName 127.0.0.1\n  Port {jump_port}\n  User {user}\n  IdentityFile {k}\n  IdentitiesOnly yes\n{common}\
             Host viajump\n  HostName 127.0.0.1\n  Port {device_port}\n  User {user}\n  IdentityFile {k}\n  IdentitiesOnly yes\n  ProxyJump jump\n{common}\
             Host gw\n  HostName 127.0.0.1\n  Port {gw_port}\n  User bench:dev1\n  PubkeyAuthentication no\n{common}",
            k = key.display()
        ),
    )?;
    let env = Env {
        config,
        askpass,
        api,
    };
    let routes = [
        Route {
            name: "direct",
            args: vec!["device".into()],
            needs_otk: false,
        },
        Route {
            name: "ssh -J",
            args: vec!["viajump".into()],
            needs_otk: false,
        },
        Route {
            name: "sallyport",
            args: vec!["gw".into()],
            needs_otk: true,
        },
    ];

    let bytes = mib * 1024 * 1024;
    println!(
        "bulk: {mib} MiB each way, best of {runs}, routes taking turns; login-to-first-byte: median of {logins}; \
         client ciphers: {}",
        ciphers.unwrap_or("OpenSSH defaults")
    );
    for route in &routes {
        // One warm-up login, so no route pays for first-time page-ins alone.
        first_byte(&env, route)?;
    }
    let mut down = vec![f64::INFINITY; routes.len()];
    let mut up = vec![f64::INFINITY; routes.len()];
    for _ in 0..runs {
        for (i, route) in routes.iter().enumerate() {
            down[i] = down[i].min(download(&env, route, bytes)?);
            up[i] = up[i].min(upload(&env, route, bytes)?);
        }
    }
    let mut lats = vec![Vec::new(); routes.len()];
    for _ in 0..logins {
        for (i, route) in routes.iter().enumerate() {
            lats[i].push(first_byte(&env, route)?);
        }
    }
    let mut results = Vec::new();
    for (((route, lats), down), up) in routes.iter().zip(lats).zip(down).zip(up) {
        let lat = median(lats);
        let (down_mib, up_mib) = (mib as f64 / down, mib as f64 / up);
        println!(
            "{:>10}: down {down_mib:8.1} MiB/s  up {up_mib:8.1} MiB/s  login-to-first-byte {:7.1} ms",
            route.name,
            lat * 1000.0
        );
        results.push((down_mib, up_mib, lat));
    }
    let [(dd, du, dl), (jd, ju, jl), (sd, su, sl)] = results.as_slice() else {
        bail!("missing results");
    };
    println!("ratios (sallyport / other):");
    println!(
        "  throughput down: {:.2}x jump (target >= 1.0), {:.2}x direct (target >= 0.9)",
        sd / jd,
        sd / dd
    );
    println!(
        "  throughput up:   {:.2}x jump (target >= 1.0), {:.2}x direct (target >= 0.9)",
        su / ju,
        su / du
    );
    println!(
        "  login latency:   {:.2}x jump (target <= 1.0), {:.2}x direct",
        sl / jl,
        sl / dl
    );
    Ok(())
}
