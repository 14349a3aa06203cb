//! `sallyport plugin new NAME`: writes a ready-to-build plugin crate from a template — a
//! `Cargo.toml` depending on the SDK, `src/lib.rs` with a working policy for the chosen hook and
//! its unit tests, request fixtures for `sallyport plugin test` (`fixtures/`, matching what the
//! template decides), a README and a `.gitignore`. The crate is its own workspace so it can live
//! anywhere, and it tests natively with `cargo test` before any wasm toolchain is involved.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use sallyport::config::Hook;

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

fn hook_word(hook: Hook) -> &'static str {
    match hook {
        Hook::Authorize => "authorize",
        Hook::Sudo => "sudo",
        Hook::Source => "source",
    }
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
        hook = hook_word(hook),
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

/// The request fixtures `sallyport plugin test … fixtures/` runs: each one's `[expect]` is what
/// the template's policy answers, so the freshly built component passes them all and a changed
/// policy shows what it changed. The source template is a deny-list that never allows (it has
/// no opinion on other addresses), so its second case is an abstain.
fn fixtures(hook: Hook) -> &'static [(&'static str, &'static str)] {
    match hook {
        Hook::Authorize => &[
            (
                "fixtures/allow-untagged.toml",
                r#"name = "an untagged device: allowed, nothing narrowed"
[request]
user = { name = "alice", groups = ["ops"] }
device = { name = "sw2" }
access = "full"
[expect]
decision = "allow"
"#,
            ),
            (
                "fixtures/deny-frozen-full.toml",
                r#"name = "full access to a frozen device: denied"
[request]
user = { name = "alice", groups = ["ops"] }
device = { name = "sw1", tags = ["frozen"] }
access = "full"
[expect]
decision = "deny"
reason-contains = "sw1 is tagged frozen"
"#,
            ),
            (
                "fixtures/allow-frozen-read-only.toml",
                r#"name = "read-only access to a frozen device: allowed, read-only"
[request]
user = { name = "alice", groups = ["ops"] }
device = { name = "sw1", tags = ["frozen"] }
access = "read-only"
[expect]
decision = "allow"
access = "read-only"
"#,
            ),
        ],
        Hook::Sudo => &[
            (
                "fixtures/allow-for-themself.toml",
                r#"name = "carol issues for herself: allowed"
[request]
user = { name = "carol" }
[expect]
decision = "allow"
"#,
            ),
            (
                "fixtures/deny-for-another.toml",
                r#"name = "bob without sudo issues for alice: denied"
[request]
requester = { name = "bob", groups = ["desk"] }
subject = { name = "alice" }
[expect]
decision = "deny"
reason-contains = "bob may not issue for alice"
"#,
            ),
            (
                "fixtures/allow-helpers.toml",
                r#"name = "a helper issues for alice: allowed for 15 minutes"
[config]
helpers = "desk"
[request]
requester = { name = "bob", groups = ["desk"] }
subject = { name = "alice" }
[expect]
decision = "allow"
max-ttl-seconds = 900
"#,
            ),
        ],
        Hook::Source => &[
            (
                "fixtures/deny-listed.toml",
                r#"name = "a connection from a listed block: refused"
[config]
deny-cidrs = "198.51.100.0/24, 2001:db8::/32"
[request]
action = "connect"
source = "198.51.100.7"
[expect]
decision = "deny"
reason-contains = "198.51.100.7 are refused"
"#,
            ),
            (
                "fixtures/abstain-unlisted.toml",
                r#"name = "a connection from elsewhere: no opinion"
[config]
deny-cidrs = "198.51.100.0/24, 2001:db8::/32"
[request]
action = "connect"
source = "203.0.113.7"
[expect]
decision = "abstain"
"#,
            ),
        ],
    }
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
        hook = hook_word(hook),
        world = sallyport::policy::standalone::world_name(hook),
    )
}

const AUTHORIZE: &str = r#"//! An authorize policy: devices tagged with the configured tag (`deny-tag`, default
//! `frozen`) are read-only; everything else is allowed without narrowing. The other plugins on
//! the hook (the built-in group rules included) still decide; any deny among them wins.

use sallyport_plugin::{AccessLevel, Authorize, Decision, Grant, Request};

/// The policy. It keeps no state: every decision runs in a fresh instance.
pub struct __Policy__;

impl Authorize for __Policy__ {
    fn authorize(r: &Request) -> Decision {
        let tag = sallyport_plugin::config("deny-tag").unwrap_or_else(|| "frozen".to_string());
        if !r.device.has_tag(&tag) {
            return Decision::allow();
        }
        if r.access == AccessLevel::Full {
            return Decision::deny(format!("{} is tagged {tag}: read-only access only", r.device.name));
        }
        Decision::allow_with(Grant::new().with_access(AccessLevel::ReadOnly))
    }
}

sallyport_plugin::export_authorize!(__Policy__);

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_plugin::{Device, testing};

    fn on(device: Device, access: AccessLevel) -> Decision {
        __Policy__::authorize(&Request::builder().device(device).access(access).build())
    }

    #[test]
    fn tagged_devices_are_read_only() {
        testing::reset();
        let frozen = Device::new("sw1").with_tags(["frozen"]);
        assert!(on(frozen.clone(), AccessLevel::Full).is_deny());
        assert_eq!(
            on(frozen, AccessLevel::ReadOnly),
            Decision::allow_with(Grant::new().with_access(AccessLevel::ReadOnly))
        );
        assert_eq!(on(Device::new("sw2"), AccessLevel::Full), Decision::allow());
    }

    #[test]
    fn the_tag_is_configurable() {
        testing::reset();
        testing::set_config("deny-tag", "maintenance");
        assert!(on(Device::new("sw1").with_tags(["maintenance"]), AccessLevel::Full).is_deny());
        assert!(on(Device::new("sw1").with_tags(["frozen"]), AccessLevel::Full).is_allow());
    }
}
"#;

const SUDO: &str = r#"//! A sudo policy: a user may always issue for themself; issuing for another user needs sudo,
//! or membership of the group named in config `helpers` (default: none), whose members may
//! issue for others only for at most 15 minutes.

use sallyport_plugin::{Decision, Grant, Request, Sudo};

/// The policy. It keeps no state: every decision runs in a fresh instance.
pub struct __Policy__;

impl Sudo for __Policy__ {
    fn sudo(r: &Request) -> Decision {
        if !r.is_on_behalf() || r.requester.sudo {
            return Decision::allow();
        }
        match sallyport_plugin::config("helpers") {
            Some(group) if r.requester.in_group(&group) => {
                Decision::allow_with(Grant::new().with_max_ttl_seconds(15 * 60))
            }
            _ => Decision::deny(format!("{} may not issue for {}", r.requester.name, r.subject.name)),
        }
    }
}

sallyport_plugin::export_sudo!(__Policy__);

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_plugin::{Principal, testing};

    fn for_alice(requester: Principal) -> Decision {
        __Policy__::sudo(&Request::builder().requester(requester).subject(Principal::new("alice")).build())
    }

    #[test]
    fn sudo_or_helpers_may_issue_for_others() {
        testing::reset();
        assert!(for_alice(Principal::new("root").with_sudo(true)).is_allow());
        assert!(for_alice(Principal::new("bob").with_groups(["desk"])).is_deny());
        testing::set_config("helpers", "desk");
        assert_eq!(
            for_alice(Principal::new("bob").with_groups(["desk"])),
            Decision::allow_with(Grant::new().with_max_ttl_seconds(900))
        );
        let own = Request::builder().user(Principal::new("carol")).build();
        assert_eq!(__Policy__::sudo(&own), Decision::allow());
    }
}
"#;

const SOURCE: &str = r#"//! A source policy: connections from the blocks in config `deny-cidrs` (a comma-separated
//! list, e.g. `"198.51.100.0/24, 2001:db8::/32"`) are refused; every other connection, and
//! every issuance, gets no opinion (the built-in source rules still apply).

use sallyport_plugin::{Action, CheckSource, Decision, Request, net};

/// The policy. It keeps no state: every decision runs in a fresh instance.
pub struct __Policy__;

impl CheckSource for __Policy__ {
    fn check_source(r: &Request) -> Decision {
        if r.action != Action::Connect {
            return Decision::abstain();
        }
        let blocks = match net::parse_cidr_list(&sallyport_plugin::config("deny-cidrs").unwrap_or_default()) {
            Ok(b) => b,
            Err(e) => return Decision::deny(format!("deny-cidrs: {e}")),
        };
        let Some(ip) = r.source.as_deref().and_then(net::parse_source) else {
            return Decision::deny("no source address");
        };
        if blocks.iter().any(|b| b.contains(ip)) {
            return Decision::deny(format!("connections from {ip} are refused"));
        }
        Decision::abstain()
    }
}

sallyport_plugin::export_check_source!(__Policy__);

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_plugin::testing;

    fn from(source: &str) -> Decision {
        __Policy__::check_source(&Request::builder().action(Action::Connect).source(source).build())
    }

    #[test]
    fn listed_blocks_are_refused() {
        testing::reset();
        testing::set_config("deny-cidrs", "198.51.100.0/24");
        assert!(from("198.51.100.7").is_deny());
        assert!(from("203.0.113.7").is_abstain());
        assert!(__Policy__::check_source(&Request::builder().build()).is_abstain(), "issuance");
    }
}
"#;

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
            let dir = tmp.path().join(hook_word(hook));
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
