//! Starting the gateway for a benchmark: a release build, run as its own process, with its
//! bound address read from its stdout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Builds `sallyport` in release mode and returns the binary's path.
pub fn build_release() -> anyhow::Result<PathBuf> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
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
    pub addr: std::net::SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin serve --config config` and waits for `api listening on`. The server logs at its
/// production level (`info`: one audit line per issuance) into `server.log` beside the config.
pub fn start(bin: &Path, config: &Path) -> anyhow::Result<Server> {
    let log = std::fs::File::create(config.with_file_name("server.log"))
        .context("cannot create server.log")?;
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start sallyport")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.split("api listening on ").nth(1) {
            let addr = rest
                .trim()
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let addr = addr
                .parse()
                .with_context(|| format!("bad address in {line:?}"))?;
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Ok(Server { child, addr });
        }
    }
    bail!("sallyport exited before listening")
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
