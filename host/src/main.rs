//! The `sallyport` command: `serve`, `check-config`, `hash-password`, and `plugin …` (the
//! plugin author's tools in `plugin_cli`).

mod plugin_cli;

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sallyport::config::Config;
use sallyport::server::{self, Gateway};

#[derive(Parser)]
#[command(
    name = "sallyport",
    version,
    about = "Access gateway for managed network devices"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (embedded defaults without --config).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and exit (0 if valid).
    CheckConfig { file: PathBuf },
    /// Read a password from standard input and print its argon2id hash for `password_hash`.
    HashPassword,
    /// Policy plugins: new, build, test, inspect.
    #[command(subcommand)]
    Plugin(plugin_cli::PluginCommand),
}

/// Errors are printed as one line with their causes (`Error: a: b`), never with the
/// backtrace anyhow adds when `RUST_BACKTRACE` is set: a mistyped command or a failed fixture
/// is not a crash.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Causes in order, each once: several errors repeat their source in their own
            // message ("cannot read X: No such file"), which `{:#}` would print twice.
            let mut text = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    text = format!("{text}: {cause}");
                }
            }
            eprintln!("Error: {text}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    // Log lines go to stderr from a writer thread that batches whatever is queued into one
    // write, so request threads never wait on the terminal or log file (one `write(2)` per
    // audit line cost ~6 % of issuance CPU). Not lossy: a full queue makes the logger wait.
    // The guard flushes what is left when `main` returns.
    let (log_writer, _log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("sallyport-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colour only on a terminal: escape codes in a log file are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(log_writer)
        .init();
    match Cli::parse().command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { file } => {
            let c = Config::load(&file)?;
            println!(
                "{}: ok ({} groups, {} users, {} devices, {} plugins)",
                file.display(),
                c.groups.len(),
                c.users.len(),
                c.devices.len(),
                c.plugins.len()
            );
            Ok(())
        }
        Command::Plugin(cmd) => plugin_cli::run(cmd),
        Command::HashPassword => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read password from stdin")?;
            let password = line.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!password.is_empty(), "empty password on stdin");
            let hash = sallyport::directory::hash_password(password)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{hash}");
            Ok(())
        }
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = match config {
        Some(path) => Config::load(&path)?,
        None => Config::embedded_default(),
    };
    let (gateway, generated) = Gateway::open(config)?;
    let mut out = std::io::stdout().lock();
    for g in &generated {
        // Deliberately stdout, not the log: shown once to whoever started the gateway.
        writeln!(
            out,
            "sallyport: generated password for user {:?}: {} (shown only once)",
            g.user,
            g.password.expose()
        )?;
    }
    drop(out);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let ssh_addr = gateway.config.server.ssh_listen;
        let ssh_listener = tokio::net::TcpListener::bind(ssh_addr)
            .await
            .with_context(|| format!("cannot listen on {ssh_addr}"))?;
        let ssh_bound = ssh_listener.local_addr()?;
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(());
        let ssh = tokio::spawn(sallyport::ssh::serve(
            gateway.ssh.clone(),
            ssh_listener,
            async move {
                let _ = stop_rx.changed().await;
            },
        ));
        let addr = gateway.config.server.api_listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        let scheme = if gateway.tls.is_some() {
            "https"
        } else {
            "http"
        };
        // Announced once the listeners of accesses still live are back (both services start
        // with `server::run` and `ssh::serve`); the last line says every listener is up.
        let issuer = gateway.issuer.clone();
        tokio::spawn(async move {
            use sallyport::store::TransientKind;
            issuer
                .listening()
                .restored(&[TransientKind::Ssh, TransientKind::Winbox])
                .await;
            println!("sallyport: api listening on {scheme}://{bound}");
            println!("sallyport: ssh listening on {ssh_bound}");
            let _ = std::io::stdout().flush();
        });
        server::run(&gateway, listener, async move {
            shutdown_signal().await;
            let _ = stop_tx.send(());
        })
        .await;
        let _ = ssh.await;
        anyhow::Ok(())
    })?;
    gateway.close();
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down");
}
