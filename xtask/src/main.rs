//! `cargo xtask …`: project chores that need more than cargo — benchmarks for now.
//!
//! `cargo xtask bench issue [--seconds N] [--connections N]` measures one-time-key issuance over
//! HTTPS against a release build of the gateway started as its own process.
//!
//! `cargo xtask bench policy [--iterations N]` measures the decisions of one whole request:
//! WebAssembly components, cedar-policy and native Rust, in one process.
//!
//! `cargo xtask bench ssh [--mib N] [--runs N] [--logins N] [--ciphers LIST]` measures the SSH
//! forwarder against direct sshd and `ssh -J`: bulk throughput and login-to-first-byte latency
//! (`--ciphers` sets the OpenSSH client's `Ciphers` on every route).
//!
//! `cargo xtask bench tcp [--seconds N] [--connects N] [--idle N]` measures the Winbox (raw TCP)
//! forwarder against direct and `socat`: iperf3 throughput, connect latency, idle memory.
//!
//! The benches that start the gateway build it in release mode first, unless `SALLYPORT_BIN`
//! names a binary to run instead (an A/B comparison of two builds in alternating runs).

mod bench_issue;
mod bench_policy;
mod bench_ssh;
mod bench_tcp;
mod load;
mod proc;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The value after `--name`, if the option is given.
    let text = |name: &str| -> anyhow::Result<Option<&str>> {
        match args.iter().position(|a| a == name) {
            None => Ok(None),
            Some(i) => Ok(Some(
                args.get(i + 1)
                    .context(format!("{name} needs a value"))?
                    .as_str(),
            )),
        }
    };
    let flag = |name: &str, default: u64| -> anyhow::Result<u64> {
        match text(name)? {
            None => Ok(default),
            Some(v) => v.parse().with_context(|| format!("{name} needs a number")),
        }
    };
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["bench", "issue", ..] => {
            bench_issue::run(flag("--seconds", 10)?, flag("--connections", 32)? as usize)
        }
        ["bench", "ssh", ..] => bench_ssh::run(
            flag("--mib", 1024)?,
            flag("--runs", 2)?,
            flag("--logins", 15)?,
            text("--ciphers")?,
        ),
        ["bench", "policy", ..] => bench_policy::run(flag("--iterations", 20_000)? as usize),
        ["bench", "tcp", ..] => bench_tcp::run(
            flag("--seconds", 5)?,
            flag("--connects", 2000)? as usize,
            flag("--idle", 10000)? as usize,
        ),
        _ => bail!("usage: cargo xtask bench issue|policy|tcp [options] (see xtask/src/main.rs)"),
    }
}
