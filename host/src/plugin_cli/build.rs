//! `sallyport plugin build [DIR]`: builds a Rust plugin crate into a policy component — the
//! guest build for `wasm32-unknown-unknown`, then component encoding (wit-component, in
//! process) and a load check in the host's own engine.
//!
//! The toolchain detection is the one of `shared/notes/wasm-guests.md` and `plugins/build.sh`:
//! a rustup toolchain with the `wasm32-unknown-unknown` target if there is one, else Debian's
//! `rustc-web`/`cargo-web`/`rust-web-src` with `lld-22` (which build `std` from source with
//! `RUSTC_BOOTSTRAP=1 -Zbuild-std`). Nothing is installed: without either, it says what to
//! install and fails. Only Rust crates are built here; other languages bring their own
//! componentizer (`componentize-py`, `jco`) and need only `plugin inspect`/`plugin test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Which compiler builds the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// The rustup toolchain on PATH, which has the wasm32 target installed.
    Rustup,
    /// Debian's `/usr/bin/cargo` (rustc-web) with `rust-web-src` and `wasm-ld-22`.
    Debian,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn debian_ready() -> bool {
    Path::new("/usr/bin/cargo").is_file()
        && Path::new("/usr/lib/rustlib/src/rust/library").is_dir()
        && on_path("wasm-ld-22")
}

fn rustup_ready() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-unknown-unknown")
        })
}

/// Picks the toolchain: `forced` (`rustup`/`debian`, or `SALLYPORT_GUEST_TOOLCHAIN`), else the
/// first one available.
pub fn detect(forced: Option<&str>) -> anyhow::Result<Toolchain> {
    let env = std::env::var("SALLYPORT_GUEST_TOOLCHAIN").ok();
    match forced.or(env.as_deref()) {
        Some("rustup") if rustup_ready() => Ok(Toolchain::Rustup),
        Some("rustup") => bail!(
            "the rustup toolchain has no wasm32-unknown-unknown target (rustup target add wasm32-unknown-unknown)"
        ),
        Some("debian") if debian_ready() => Ok(Toolchain::Debian),
        Some("debian") => bail!(
            "Debian's wasm toolchain is missing: apt-get update && apt-get install -y rustc-web cargo-web rust-web-src lld-22"
        ),
        Some(other) => bail!("unknown toolchain {other:?}: use rustup or debian"),
        None if rustup_ready() => Ok(Toolchain::Rustup),
        None if debian_ready() => Ok(Toolchain::Debian),
        None => bail!(
            "no toolchain can build wasm32 guests here. Either\n  rustup target add wasm32-unknown-unknown\nor (Debian)\n  apt-get update && apt-get install -y rustc-web cargo-web rust-web-src lld-22"
        ),
    }
}

/// What `build` produced.
#[derive(Debug)]
pub struct Built {
    pub toolchain: Toolchain,
    pub core: PathBuf,
    pub component: PathBuf,
}

fn package_name(dir: &Path) -> anyhow::Result<String> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    doc.get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(String::from)
        .with_context(|| format!("{} has no [package] name", manifest.display()))
}

/// Builds the crate in `dir` into `<target_dir>/components/<name>.wasm`.
pub fn build(dir: &Path, target_dir: Option<&Path>, toolchain: Toolchain) -> anyhow::Result<Built> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("no crate at {}", dir.display()))?;
    let name = package_name(&dir)?;
    let target_dir = match target_dir {
        Some(t) => t.to_path_buf(),
        None => dir.join("target"),
    };
    // A small stack (64 KiB instead of 1 MiB) keeps each fresh instance's memory at two pages.
    let mut rustflags = String::from("-C link-arg=-zstack-size=65536");
    let mut cmd;
    match toolchain {
        Toolchain::Rustup => {
            cmd = Command::new("cargo");
        }
        Toolchain::Debian => {
            cmd = Command::new("/usr/bin/cargo");
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![PathBuf::from("/usr/bin")];
            dirs.extend(std::env::split_paths(&path));
            cmd.env("PATH", std::env::join_paths(dirs).context("PATH")?)
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld-22")
                // Rustup's proxies would otherwise pick the rustup rustc for /usr/bin/cargo.
                .env_remove("RUSTC")
                .env_remove("RUSTUP_TOOLCHAIN");
            rustflags.push_str(" -Zunstable-options -Cpanic=immediate-abort");
        }
    }
    cmd.current_dir(&dir)
        .env("RUSTFLAGS", &rustflags)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--lib",
        ]);
    if toolchain == Toolchain::Debian {
        cmd.args([
            "-Zbuild-std=std,panic_abort",
            "-Zbuild-std-features=optimize_for_size",
        ]);
    }
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("the guest build failed ({status})");
    }
    let core = target_dir
        .join("wasm32-unknown-unknown/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let module = std::fs::read(&core).with_context(|| {
        format!(
            "reading {} (is the crate a `cdylib` using sallyport-plugin's export macro?)",
            core.display()
        )
    })?;
    let component =
        encode(&module).with_context(|| format!("encoding {} as a component", core.display()))?;
    let out_dir = target_dir.join("components");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join(format!("{name}.wasm"));
    std::fs::write(&out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(Built {
        toolchain,
        core,
        component: out,
    })
}

/// Core module built with wit-bindgen → component (reads the component-type section the
/// bindings embedded; validates the result).
pub fn encode(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .context("not a core module with wit-bindgen component type information")?
        .validate(true)
        .encode()
}
