//! Starting the gateway for a benchmark: a release build, run as its own process, with its
//! bound address read from its stdout.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Builds `sallyport` in release mode and returns the binary's path; or, if `SALLYPORT_BIN`
/// names a binary, returns that without building (to compare two builds in alternating runs).
pub fn build_release() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SALLYPORT_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("SALLYPORT_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // `cargo xtask` runs us with the variables cargo sets for a running package; build scripts
    // that watch one of them (ring watches CARGO_MANIFEST_DIR) would otherwise see a change
    // between this build and `cargo xtask`'s own, and rebuild half the tree every time.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                &*name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cargo.env_remove(&*name);
        }
    }
    let status = cargo
        .args(["build", "--release", "--quiet", "-p", "sallyport"])
        .current_dir(root())
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("release build failed");
    }
    Ok(root().join("target/release/sallyport"))
}

/// A gateway process, killed on drop.
pub struct Server {
    pub child: Child,
    /// The API's address.
    pub addr: SocketAddr,
    /// The SSH listener's address.
    pub ssh: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How much the benchmarked gateway logs, and where.
pub enum Log {
    /// The production level (`info`: one audit line per request) into `server.log` beside the
    /// config, so logging is part of what is measured.
    File,
    /// Warnings only, on this process's stderr.
    Warnings,
}

/// Starts `bin serve --config config` and waits until every listener is up (the `ssh
/// listening on` line comes last), reading the bound addresses from its stdout.
pub fn start(bin: &Path, config: &Path, log: Log) -> anyhow::Result<Server> {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped());
    match log {
        Log::File => {
            let file = std::fs::File::create(config.with_file_name("server.log"))
                .context("cannot create server.log")?;
            cmd.env("RUST_LOG", "info").stderr(file);
        }
        Log::Warnings => {
            cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit());
        }
    }
    let mut child = cmd.spawn().context("cannot start sallyport")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr_after = |line: &str, marker: &str| -> Option<anyhow::Result<SocketAddr>> {
        let rest = line.split(marker).nth(1)?;
        let addr = rest
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        Some(
            addr.parse()
                .with_context(|| format!("bad address in {line:?}")),
        )
    };
    let mut api = None;
    for line in lines.by_ref() {
        let line = line?;
        if let Some(a) = addr_after(&line, "api listening on ") {
            api = Some(a?);
        }
        if let Some(ssh) = addr_after(&line, "ssh listening on ") {
            let addr = api.context("no api line before the ssh line")?;
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Ok(Server {
                child,
                addr,
                ssh: ssh?,
            });
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("sallyport exited before listening")
}

/// Waits up to 10 s until something accepts connections on 127.0.0.1:`port`.
pub fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A child process killed on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
