//! `cargo xtask …`: project chores that need more than cargo — benchmarks for now.
//!
//! `cargo xtask bench issue [--seconds N] [--connections N]` measures one-time-key issuance over
//! HTTPS against a release build of the gateway started as its own process.

mod bench_issue;
mod load;
mod proc;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: u64| -> anyhow::Result<u64> {
        match args.iter().position(|a| a == name) {
            None => Ok(default),
            Some(i) => args
                .get(i + 1)
                .context(format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} needs a number")),
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
        _ => bail!("usage: cargo xtask bench issue [--seconds N] [--connections N]"),
    }
}
