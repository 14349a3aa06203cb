//! `sallyport plugin new|build|test|inspect`: the plugin author's tools.
//!
//! `new` writes a crate from a template (`new.rs`, texts in `templates.rs`), `build` turns a
//! Rust crate into a policy component (`build.rs`), `test` runs a component against request
//! fixtures in the host's own engine (`fixture.rs`, `table.rs`, `sallyport::policy::standalone`),
//! and `inspect` shows what a component is: its world, the `sallyport:policy` version, imports,
//! exports and SHA-256.

mod build;
mod fixture;
mod new;
mod table;
mod templates;

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use sallyport::config::Hook;
use sallyport::policy::standalone::{self, StandaloneLimits, StandalonePlugin};

/// The per-plugin limits the gateway accepts (`config::check_plugin_limits`), so a run here
/// never uses one the gateway would refuse: a zero deadline or cap could never decide.
const DEADLINE_MS: std::ops::RangeInclusive<u64> = 1..=sallyport::config::MAX_PLUGIN_DEADLINE_MS;
const MEMORY_MB: std::ops::RangeInclusive<u64> = 1..=sallyport::config::MAX_PLUGIN_MEMORY_MB;

/// The `plugin` subcommands.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Write a new plugin crate (Cargo.toml, src/lib.rs with tests, README) from a template.
    New {
        /// Crate name: lower-case letters, digits, '-' and '_'.
        name: String,
        /// The hook it serves: authorize, sudo or source.
        #[arg(long, default_value = "authorize", value_parser = str::parse::<Hook>)]
        hook: Hook,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SDK: a path to sallyport's plugins/sdk, or a version. Default: the checkout this
        /// binary was built from, if it still exists, else version 0.1.
        #[arg(long)]
        sdk: Option<String>,
    },
    /// Build a Rust plugin crate into TARGET/components/NAME.wasm and check that it loads.
    Build {
        /// The crate directory (default: the current directory).
        dir: Option<PathBuf>,
        /// Cargo target directory (default: DIR/target).
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Force a guest toolchain: rustup or debian (default: detect).
        #[arg(long)]
        toolchain: Option<String>,
    },
    /// Run a component on request fixtures (JSON/TOML files or directories of them) and print
    /// each decision; exits non-zero if a fixture's `[expect]` is not met, a fixture is
    /// malformed, a decision faults (the gateway would deny) or the component cannot load.
    Test {
        component: PathBuf,
        #[arg(required = true)]
        fixtures: Vec<PathBuf>,
        /// Per-decision CPU deadline in ms, 1 to 10000 (default: the server's
        /// plugin_deadline_ms). The gateway takes the same range.
        #[arg(long, value_parser = clap::value_parser!(u64).range(DEADLINE_MS))]
        deadline_ms: Option<u64>,
        /// Per-decision memory cap in MiB, 1 to 4096 (default: the server's plugin_memory_mb).
        /// The gateway takes the same range.
        #[arg(long, value_parser = clap::value_parser!(u64).range(MEMORY_MB))]
        memory_mb: Option<u64>,
        /// The hook to call, for a component that serves several (default: the first it
        /// exports): authorize, sudo or source.
        #[arg(long, value_parser = str::parse::<Hook>)]
        hook: Option<Hook>,
    },
    /// Print a component's world, policy package version, imports, exports and SHA-256; exits
    /// non-zero if the gateway would refuse to load it.
    Inspect { component: PathBuf },
}

/// Runs one `plugin` subcommand.
pub fn run(cmd: PluginCommand) -> anyhow::Result<()> {
    match cmd {
        PluginCommand::New {
            name,
            hook,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = new::Sdk::resolve(sdk.as_deref())?;
            for f in new::create(&name, hook, &dir, &sdk)? {
                println!("wrote {}", f.display());
            }
            match &sdk {
                new::Sdk::Path(p) => println!("SDK: path {}", p.display()),
                new::Sdk::Version(v) => println!(
                    "SDK: version {v} (not on crates.io yet: pass --sdk PATH to use a checkout)"
                ),
            }
            println!(
                "next: cd {} && cargo test && sallyport plugin build && sallyport plugin test target/components/{name}.wasm fixtures/",
                dir.display()
            );
            Ok(())
        }
        PluginCommand::Build {
            dir,
            target_dir,
            toolchain,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            let tc = build::detect(toolchain.as_deref())?;
            eprintln!("plugin build: guest toolchain {tc:?}");
            let built = build::build(&dir, target_dir.as_deref(), tc)?;
            // Default limits are enough to link-check; a Python-sized plugin is not built here.
            let p = standalone::load(&built.component, StandaloneLimits::default())?;
            if let Some(e) = p.load_error() {
                bail!(
                    "{} was built but the gateway would refuse it: {e}",
                    built.component.display()
                );
            }
            println!(
                "core module {} ({:?} toolchain)",
                built.core.display(),
                built.toolchain
            );
            println!(
                "{}: {} bytes, world {}, sha256 {}",
                built.component.display(),
                p.size,
                world(&p),
                p.hash
            );
            Ok(())
        }
        PluginCommand::Test {
            component,
            fixtures,
            deadline_ms,
            memory_mb,
            hook,
        } => test(component, fixtures, deadline_ms, memory_mb, hook),
        PluginCommand::Inspect { component } => inspect(component),
    }
}

fn world(p: &StandalonePlugin) -> String {
    match (p.hook, p.hooks.len()) {
        (Some(h), 0 | 1) => format!("sallyport:policy/{}", standalone::world_name(h)),
        (Some(_), _) => {
            let worlds: Vec<&str> = p.hooks.iter().map(|h| standalone::world_name(*h)).collect();
            format!("sallyport:policy/{{{}}} (several hooks)", worlds.join(", "))
        }
        (None, _) => "none (exports none of authorize, sudo, check-source)".into(),
    }
}

fn load(component: &Path, limits: StandaloneLimits) -> anyhow::Result<StandalonePlugin> {
    let cache = cache_dir();
    standalone::load_cached(component, limits, cache.as_ref())
        .with_context(|| format!("loading {}", component.display()))
}

/// `$XDG_CACHE_HOME/sallyport` (or `~/.cache/sallyport`), created private to this user, where
/// compiled components are kept: an 18 MB componentize-py component takes seconds to compile.
/// Without one (no home, a read-only disk), components are compiled in memory each run.
fn cache_dir() -> Option<cap_std::fs::Dir> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let dir = base.join("sallyport");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .ok()?;
    // A cached entry is trusted as wasmtime's own output, so the directory must be this
    // user's and writable by nobody else (it may predate us, or be another user's when run
    // under sudo with their HOME).
    let meta = std::fs::metadata(&dir).ok()?;
    let private = meta.uid() == rustix::process::geteuid().as_raw() && meta.mode() & 0o022 == 0;
    if !private {
        eprintln!(
            "note: not using {} as a compile cache: it is not private to this user",
            dir.display()
        );
        return None;
    }
    cap_std::fs::Dir::open_ambient_dir(&dir, cap_std::ambient_authority()).ok()
}

/// `authorize, sudo`: the hooks a component serves, as `--hook` takes them.
fn hook_names(hooks: &[Hook]) -> String {
    hooks
        .iter()
        .map(|h| h.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn inspect(component: PathBuf) -> anyhow::Result<()> {
    // Limits only apply to decisions, which inspect never makes; the defaults keep the pooled
    // memory reservation small.
    let p = load(&component, StandaloneLimits::default())?;
    println!("component: {}", component.display());
    println!("sha256:    {}", p.hash);
    println!("size:      {} bytes", p.size);
    println!("world:     {}", world(&p));
    if p.hooks.len() > 1 {
        println!(
            "hooks:     {} (one component serving each; `plugin test --hook`)",
            hook_names(&p.hooks)
        );
    }
    let versions = p.policy_versions();
    println!(
        "package:   sallyport:policy@{}",
        if versions.is_empty() {
            "? (names no sallyport:policy interface)".into()
        } else {
            versions.join(", @")
        }
    );
    println!("imports:");
    for i in &p.imports {
        println!("  {} ({})", i.name, i.kind);
    }
    println!("exports:");
    for e in &p.exports {
        println!("  {} ({})", e.name, e.kind);
    }
    if p.foreign_imports().next().is_some() {
        println!(
            "note:      imports beyond sallyport:policy; WASI is given locked down (no dirs, network, env; fixed clock)"
        );
    }
    match p.load_error() {
        None => println!("loads:     yes"),
        Some(e) => {
            println!("loads:     no: {e}");
            // Scripts (CI, a deploy step) check the exit status, not the text.
            bail!("the gateway would refuse {}: {e}", component.display());
        }
    }
    Ok(())
}

fn test(
    component: PathBuf,
    fixtures: Vec<PathBuf>,
    deadline_ms: Option<u64>,
    memory_mb: Option<u64>,
    hook: Option<Hook>,
) -> anyhow::Result<()> {
    let d = StandaloneLimits::default();
    let limits = StandaloneLimits {
        deadline: deadline_ms.map_or(d.deadline, Duration::from_millis),
        memory_mb: memory_mb.unwrap_or(d.memory_mb),
    };
    let p = load(&component, limits)?;
    println!(
        "{}: {} (sha256 {})",
        component.display(),
        world(&p),
        &p.hash[..16]
    );
    // Every decision of a component that cannot load is the gateway's fault-deny: no fixture
    // can tell anything about the policy, so there is nothing to run.
    if let Some(e) = p.load_error() {
        bail!("the gateway would refuse {}: {e}", component.display());
    }
    let hook = match hook {
        None => p.hook,
        Some(h) if p.hooks.contains(&h) => Some(h),
        Some(h) => bail!(
            "{} does not serve the {} hook (it serves: {})",
            component.display(),
            h.as_str(),
            hook_names(&p.hooks)
        ),
    };
    let Some(hook) = hook else {
        bail!("{} serves no hook", component.display());
    };
    if p.hooks.len() > 1 {
        println!("testing its {} hook", hook.as_str());
    }
    let (mut failed, mut total) = (0, 0);
    for file in fixture::expand(&fixtures)? {
        total += 1;
        let f = match fixture::read(&file) {
            Ok(f) => f,
            Err(e) => {
                failed += 1;
                println!("ERROR {}: {e}", file.display());
                continue;
            }
        };
        let started = std::time::Instant::now();
        let outcome = p.decide_on(hook, &f.request, f.config);
        let took = started.elapsed();
        let decision = match outcome {
            Ok(d) => d,
            Err(fault) => {
                // A fault is never the policy's answer, even where the gateway's deny happens to
                // match an expected deny: the plugin is broken, so the fixture fails.
                failed += 1;
                let kind = fault.kind();
                println!(
                    "FAULT (the gateway would deny) {}: {} [fault: {kind}] ({} µs)",
                    f.name,
                    fixture::describe(&p.as_server(Err(fault))),
                    took.as_micros()
                );
                continue;
            }
        };
        let line = format!(
            "{}: {} ({} µs)",
            f.name,
            fixture::describe(&decision),
            took.as_micros()
        );
        match f.expect.as_ref().map(|e| fixture::check(e, &decision)) {
            None => println!("      {line}"),
            Some(None) => println!("PASS  {line}"),
            Some(Some(why)) => {
                failed += 1;
                println!("FAIL  {line}: {why}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {total} fixtures failed");
    }
    Ok(())
}
