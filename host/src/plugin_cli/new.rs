//! `sallyport plugin new NAME`: writes a ready-to-build plugin crate from a template — a
//! `Cargo.toml` depending on the SDK, `src/lib.rs` with a working policy for the chosen hook and
//! its unit tests, request fixtures for `sallyport plugin test` (`fixtures/`, matching what the
//! template decides), a README and a `.gitignore`. The crate is its own workspace so it can live
//! anywhere, and it tests natively with `cargo test` before any wasm toolchain is involved.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use sallyport::config::Hook;

use super::templates::{AUTHORIZE, SOURCE, SUDO, fixtures};

/// Where the SDK comes from in the generated `Cargo.toml`.
#[derive(Debug, Clone)]
pub enum Sdk {
    /// `sallyport-plugin = { path = "…" }`: a sallyport checkout's `plugins/sdk`.
    Path(PathBuf),
    /// `sallyport-plugin = "…"`: a registry version (the SDK is not on crates.io yet; this is
    /// for a private registry or a later release).
    Version(String),
}

impl Sdk {
    /// `--sdk` as given (a directory that exists is a path, anything else a version), else the
    /// SDK of the checkout this binary was built from if it is still there, else version 0.1.
    pub fn resolve(arg: Option<&str>) -> anyhow::Result<Sdk> {
        if let Some(a) = arg {
            let p = Path::new(a);
            return Ok(if p.join("Cargo.toml").is_file() {
                Sdk::Path(p.canonicalize().with_context(|| format!("resolving {a}"))?)
            } else if a
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || "=^~".contains(c))
            {
                Sdk::Version(a.to_string())
            } else {
                bail!(
                    "--sdk {a}: neither an SDK directory (with Cargo.toml) nor a version such as 0.1"
                )
            });
        }
        let built_from = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk"));
        Ok(match built_from.canonicalize() {
            Ok(p) if p.join("Cargo.toml").is_file() => Sdk::Path(p),
            _ => Sdk::Version("0.1".into()),
        })
    }

    fn dependency(&self) -> String {
        match self {
            Sdk::Path(p) => format!(
                "sallyport-plugin = {{ path = {:?} }}",
                p.display().to_string()
            ),
            Sdk::Version(v) => format!(
                "# Not on crates.io yet: use a private registry, or `--sdk PATH` to a sallyport checkout's plugins/sdk.\nsallyport-plugin = {v:?}"
            ),
        }
    }
}

/// Names the template's `src/lib.rs` uses unqualified (its imports and the prelude's types,
/// traits and variants): a policy type of the same name would clash with them or shadow them.
const TAKEN_TYPE_NAMES: &str = "\
    AccessLevel Action Authorize CheckSource Decision Device Grant Principal Request Sudo \
    AsMut AsRef Box Clone Copy Default DoubleEndedIterator Drop Eq Err ExactSizeIterator \
    Extend Fn FnMut FnOnce From FromIterator Into IntoIterator Iterator None Ok Option Ord \
    PartialEq PartialOrd Result Send Sized Some String Sync ToOwned ToString TryFrom TryInto \
    Unpin Vec";

/// The policy type: the crate name in CamelCase, with `Policy` added where that would clash
/// (`plugin new authorize` → `AuthorizePolicy`, not a second `Authorize`).
fn type_name(crate_name: &str) -> String {
    let ty: String = crate_name
        .split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    if TAKEN_TYPE_NAMES.split_whitespace().any(|t| t == ty) {
        ty + "Policy"
    } else {
        ty
    }
}

/// Every Rust keyword, strict or reserved, in any edition: the crate's library name
/// (`-` → `_`) is an identifier, and `self` also makes the type `Self`.
const KEYWORDS: &str = "\
    abstract as async await become box break const continue crate do dyn else enum extern \
    false final fn for gen if impl in let loop macro match mod move mut override priv pub ref \
    return self static struct super trait true try type typeof unsafe unsized use virtual \
    where while yield";

/// Crates every plugin sees by name: a library named like one of them shadows it (doc-tests
/// then fail with "cannot resolve a prelude import"), and one named like the SDK collides with
/// it in Cargo.lock (both are 0.1.0).
const CRATES: &[&str] = &[
    "alloc",
    "core",
    "proc_macro",
    "std",
    "test",
    "sallyport_plugin",
];

/// Device names Windows reserves: such a directory or file cannot exist there.
fn windows_reserved(name: &str) -> bool {
    ["con", "prn", "aux", "nul"].contains(&name)
        || ["com", "lpt"].iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit())
        })
}

/// Checks a crate name: lower-case ASCII letters, digits, `-` and `_`, starting with a letter.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!(
            "{name:?} is not a plugin name: use lower-case letters, digits, '-' and '_', starting with a letter"
        );
    }
    let lib = name.replace('-', "_");
    if KEYWORDS.split_whitespace().any(|k| k == lib) {
        bail!("{name:?} is not a plugin name: `{lib}` is a Rust keyword; try e.g. {name}-policy");
    }
    if CRATES.contains(&lib.as_str()) {
        bail!(
            "{name:?} is not a plugin name: it is the name of a crate every plugin uses (`{lib}`); try e.g. my-{name}"
        );
    }
    if windows_reserved(&lib) {
        bail!(
            "{name:?} is not a plugin name: Windows reserves it for a device; try e.g. {name}-policy"
        );
    }
    Ok(())
}

/// Writes the crate into `dir` (which must not exist or be empty) and returns the files written.
pub fn create(name: &str, hook: Hook, dir: &Path, sdk: &Sdk) -> anyhow::Result<Vec<PathBuf>> {
    validate_name(name)?;
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", dir.display());
    }
    let ty = type_name(name);
    let files = [
        ("Cargo.toml", cargo_toml(name, hook, sdk)),
        ("src/lib.rs", lib_rs(hook, &ty)),
        ("README.md", readme(name, hook)),
        (".gitignore", "/target\n/Cargo.lock\n".to_string()),
    ]
    .into_iter()
    .chain(
        fixtures(hook)
            .iter()
            .map(|(file, text)| (*file, (*text).to_string())),
    );
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn cargo_toml(name: &str, hook: Hook, sdk: &Sdk) -> String {
    format!(
        r#"[package]
name = "{name}"
description = "sallyport {hook} policy plugin"
version = "0.1.0"
edition = "2024"
publish = false

# A workspace of its own, so it builds wherever it lives (even inside another workspace's tree).
[workspace]

[lib]
# cdylib: the wasm core module `sallyport plugin build` turns into a component; rlib: native tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
{dep}

# Small guests: fewer pages to fault in for each decision's fresh instance.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#,
        hook = hook.as_str(),
        dep = sdk.dependency()
    )
}

fn lib_rs(hook: Hook, ty: &str) -> String {
    let body = match hook {
        Hook::Authorize => AUTHORIZE,
        Hook::Sudo => SUDO,
        Hook::Source => SOURCE,
    };
    body.replace("__Policy__", ty)
}

fn readme(name: &str, hook: Hook) -> String {
    format!(
        r#"# {name}

A sallyport policy plugin for the `{hook}` hook (world `{world}` of `sallyport:policy@0.1.0`).

```sh
cargo test                                  # native unit tests (src/lib.rs)
sallyport plugin build .                    # → target/components/{name}.wasm (needs a wasm toolchain)
sallyport plugin test target/components/{name}.wasm fixtures/   # decisions on request fixtures
sallyport plugin inspect target/components/{name}.wasm
```

`fixtures/` holds one request per file with the answer it expects (`[expect]`); they match the
template's policy, so change them with it. Every field is optional (see `plugins/README.md` in
the sallyport repository for the format); a fixture without `[expect]` only prints the decision.

Load it with a `[[plugins]]` entry (`hook = "{hook}"`, `path = ".../{name}.wasm"`, `config = {{ … }}`)
or by copying the component into the gateway's `plugins_dir`, with its config in `{name}.toml`.
"#,
        hook = hook.as_str(),
        world = sallyport::policy::standalone::world_name(hook),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin_cli::fixture::{self, Want};

    #[test]
    fn names_that_make_a_broken_crate_are_refused() {
        for name in [
            "self",
            "fn",
            "async",
            "gen",
            "std",
            "core",
            "alloc",
            "test",
            "proc-macro",
            "proc_macro",
            "sallyport-plugin",
            "sallyport_plugin",
            "con",
            "lpt1",
        ] {
            let e = validate_name(name).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{name:?} is not a plugin name: ")),
                "{e}"
            );
        }
        assert!(
            validate_name("self")
                .unwrap_err()
                .to_string()
                .contains("Rust keyword")
        );
        assert!(
            validate_name("std")
                .unwrap_err()
                .to_string()
                .contains("try e.g. my-std")
        );
        for name in ["frozen-devices", "self-service", "std2", "union", "console"] {
            validate_name(name).unwrap();
        }
    }

    #[test]
    fn the_policy_type_never_clashes_with_what_the_template_uses() {
        assert_eq!(type_name("frozen-devices"), "FrozenDevices");
        assert_eq!(type_name("authorize"), "AuthorizePolicy");
        assert_eq!(type_name("check_source"), "CheckSourcePolicy");
        assert_eq!(type_name("option"), "OptionPolicy");
        assert!(
            lib_rs(Hook::Authorize, &type_name("authorize"))
                .contains("export_authorize!(AuthorizePolicy)")
        );
    }

    #[test]
    fn the_generated_fixtures_parse_and_expect_both_outcomes() {
        let tmp = tempfile::tempdir().unwrap();
        let sdk = Sdk::Version("0.1".into());
        for (hook, other) in [
            (Hook::Authorize, Want::Allow),
            (Hook::Sudo, Want::Allow),
            // The source template is a deny-list: where it does not deny, it has no opinion.
            (Hook::Source, Want::Abstain),
        ] {
            let dir = tmp.path().join(hook.as_str());
            create("p", hook, &dir, &sdk).unwrap();
            let files = fixture::expand(&[dir.join("fixtures")]).unwrap();
            let wants: Vec<Want> = files
                .iter()
                .map(|f| {
                    let fx = fixture::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                    fx.expect
                        .unwrap_or_else(|| panic!("{}: no [expect]", f.display()))
                        .decision
                })
                .collect();
            assert!(
                wants.contains(&Want::Deny) && wants.contains(&other),
                "{hook:?}: {wants:?}"
            );
        }
    }
}
