//! Request fixtures for `sallyport plugin test`: one JSON or TOML file per case, describing a
//! request (every field optional, with the defaults below), the plugin's `config` table, and
//! optionally the expected answer.
//!
//! ```toml
//! name = "bob may not issue for alice"        # default: the file name
//! [config]                                     # the plugin's config table (as in [[plugins]])
//! helpers = "desk"
//! [request]                                    # field names as in wit/policy.wit; - or _
//! action = "issue-session"                     # issue-session | issue-transient | connect
//! requester = { name = "bob", groups = ["ops"], sudo = false }
//! subject = { name = "alice" }                 # `user = {…}` sets requester and subject
//! device = { name = "edge-1", id = "…", tags = ["lab"] }
//! protocol = "ssh"                             # ssh | winbox | web-console
//! access = "full"                              # full | read-only
//! ttl-seconds = 600
//! source = "203.0.113.7"
//! allow-only-cidr = "203.0.113.0/24"
//! allow-rfc1918 = true
//! now-unix-ms = 1795392000000                  # default: the current time
//! [expect]                                     # optional; a mismatch fails the run
//! decision = "deny"                            # allow | deny | abstain
//! reason-contains = "may not issue"
//! max-ttl-seconds = 900                        # allow only
//! access = "read-only"                         # allow only
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use sallyport::config::AccessLevel;
use sallyport::policy::{Action, Decision, DeviceRef, Principal, Protocol, Request};

/// One parsed fixture.
#[derive(Debug)]
pub struct Fixture {
    pub name: String,
    pub config: HashMap<String, String>,
    pub request: Request,
    pub expect: Option<Expect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    #[serde(default)]
    config: serde_json::Map<String, Value>,
    #[serde(default)]
    request: RawRequest,
    expect: Option<Expect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    sudo: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDevice {
    name: String,
    id: String,
    tags: Vec<String>,
}

impl Default for RawDevice {
    fn default() -> Self {
        Self {
            name: "device1".into(),
            id: String::new(),
            tags: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRequest {
    action: String,
    user: Option<RawPrincipal>,
    requester: Option<RawPrincipal>,
    subject: Option<RawPrincipal>,
    device: RawDevice,
    protocol: String,
    access: String,
    ttl_seconds: u32,
    source: Option<String>,
    allow_only_cidr: Option<String>,
    allow_rfc1918: bool,
    now_unix_ms: Option<u64>,
    request_id: String,
}

impl Default for RawRequest {
    fn default() -> Self {
        Self {
            action: "issue-session".into(),
            user: None,
            requester: None,
            subject: None,
            device: RawDevice::default(),
            protocol: "ssh".into(),
            access: "full".into(),
            ttl_seconds: 600,
            source: None,
            allow_only_cidr: None,
            allow_rfc1918: true,
            now_unix_ms: None,
            request_id: "fixture".into(),
        }
    }
}

/// What the fixture expects the plugin to answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub decision: String,
    pub reason_contains: Option<String>,
    pub max_ttl_seconds: Option<u32>,
    pub access: Option<String>,
}

/// Field names as in the WIT (`ttl-seconds`) or as in TOML configs (`ttl_seconds`).
fn snake_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.replace('-', "_"), snake_keys(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(snake_keys).collect()),
        other => other,
    }
}

fn enum_word(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('_', "-")
}

pub fn access(s: &str) -> anyhow::Result<AccessLevel> {
    match enum_word(s).as_str() {
        "full" => Ok(AccessLevel::Full),
        "read-only" => Ok(AccessLevel::ReadOnly),
        other => bail!("access {other:?}: expected full or read-only"),
    }
}

fn principal(p: RawPrincipal) -> Principal {
    Principal {
        name: p.name,
        groups: p.groups,
        sudo: p.sudo,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads one fixture file (`.json`, or anything else as TOML).
pub fn read(path: &Path) -> anyhow::Result<Fixture> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?
    } else {
        toml::from_str(&text).with_context(|| format!("{}: not TOML", path.display()))?
    };
    let Value::Object(mut top) = value else {
        bail!("{}: a fixture is a table/object", path.display())
    };
    // The config table is passed through verbatim: its keys are the plugin's own.
    let config = top.remove("config");
    let mut raw: Raw = serde_json::from_value(snake_keys(Value::Object(top)))
        .with_context(|| format!("{}", path.display()))?;
    if let Some(Value::Object(c)) = config {
        raw.config = c;
    } else if config.is_some() {
        bail!("{}: `config` must be a table", path.display());
    }
    let r = raw.request;
    let (requester, subject) = match (r.user, r.requester, r.subject) {
        (Some(u), None, None) => {
            let p = principal(u);
            (p.clone(), p)
        }
        (None, req, sub) => {
            let req = req.map(principal).unwrap_or_else(|| Principal {
                name: "user".into(),
                groups: vec![],
                sudo: false,
            });
            let sub = sub.map(principal).unwrap_or_else(|| req.clone());
            (req, sub)
        }
        _ => bail!(
            "{}: give `user`, or `requester`/`subject`, not both",
            path.display()
        ),
    };
    let request = Request {
        action: match enum_word(&r.action).as_str() {
            "issue-session" => Action::IssueSession,
            "issue-transient" => Action::IssueTransient,
            "connect" => Action::Connect,
            other => bail!(
                "{}: action {other:?}: expected issue-session, issue-transient or connect",
                path.display()
            ),
        },
        requester,
        subject,
        device: DeviceRef {
            name: r.device.name,
            id: r.device.id,
            tags: r.device.tags,
        },
        protocol: match enum_word(&r.protocol).as_str() {
            "ssh" => Protocol::Ssh,
            "winbox" => Protocol::Winbox,
            "web-console" => Protocol::WebConsole,
            other => bail!(
                "{}: protocol {other:?}: expected ssh, winbox or web-console",
                path.display()
            ),
        },
        access: access(&r.access).with_context(|| path.display().to_string())?,
        ttl_seconds: r.ttl_seconds,
        source: r.source,
        allow_only_cidr: r.allow_only_cidr,
        allow_rfc1918: r.allow_rfc1918,
        now_unix_ms: r.now_unix_ms.unwrap_or_else(now_ms),
        request_id: r.request_id,
    };
    let config = raw
        .config
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect();
    let name = raw.name.unwrap_or_else(|| {
        path.file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
    });
    Ok(Fixture {
        name,
        config,
        request,
        expect: raw.expect,
    })
}

/// The fixture files named: files as they are, directories by their `*.json`/`*.toml`, sorted.
pub fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|e| e == "json" || e == "toml"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        bail!("no fixtures (*.json, *.toml) in {paths:?}");
    }
    Ok(out)
}

/// One line describing a decision.
pub fn describe(d: &Decision) -> String {
    match d {
        Decision::Allow(g) => {
            let mut parts = Vec::new();
            if let Some(t) = g.max_ttl_seconds {
                parts.push(format!("max-ttl {t} s"));
            }
            if let Some(a) = g.access {
                parts.push(format!(
                    "access {}",
                    if a == AccessLevel::Full {
                        "full"
                    } else {
                        "read-only"
                    }
                ));
            }
            if !g.obligations.is_empty() {
                parts.push(format!("obligations {}", g.obligations.join(", ")));
            }
            if parts.is_empty() {
                "allow".into()
            } else {
                format!("allow ({})", parts.join(", "))
            }
        }
        Decision::Deny(reason) => format!("deny: {reason}"),
        Decision::Abstain => "abstain".into(),
    }
}

/// `None` if `d` meets the expectation, else what differs.
pub fn check(expect: &Expect, d: &Decision) -> anyhow::Result<Option<String>> {
    let want = enum_word(&expect.decision);
    let got = match d {
        Decision::Allow(_) => "allow",
        Decision::Deny(_) => "deny",
        Decision::Abstain => "abstain",
    };
    if !["allow", "deny", "abstain"].contains(&want.as_str()) {
        bail!("expect.decision {want:?}: expected allow, deny or abstain");
    }
    if want != got {
        return Ok(Some(format!("expected {want}")));
    }
    if let (Some(needle), Decision::Deny(reason)) = (&expect.reason_contains, d)
        && !reason.contains(needle.as_str())
    {
        return Ok(Some(format!("expected the reason to contain {needle:?}")));
    }
    if let Decision::Allow(g) = d {
        if expect.max_ttl_seconds.is_some() && expect.max_ttl_seconds != g.max_ttl_seconds {
            return Ok(Some(format!(
                "expected max-ttl {:?} s",
                expect.max_ttl_seconds
            )));
        }
        if let Some(a) = &expect.access
            && Some(access(a)?) != g.access
        {
            return Ok(Some(format!("expected access {a}")));
        }
    }
    Ok(None)
}
