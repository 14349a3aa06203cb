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
use serde_json::Value;

use super::table::{FixtureError, Table, found};
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

/// The kind of answer a fixture expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Allow,
    Deny,
    Abstain,
}

impl Want {
    fn word(self) -> &'static str {
        match self {
            Want::Allow => "allow",
            Want::Deny => "deny",
            Want::Abstain => "abstain",
        }
    }
}

/// What the fixture expects the plugin to answer.
#[derive(Debug)]
pub struct Expect {
    pub decision: Want,
    pub reason_contains: Option<String>,
    pub max_ttl_seconds: Option<u32>,
    pub access: Option<AccessLevel>,
}

const ACTIONS: &[(&str, Action)] = &[
    ("issue-session", Action::IssueSession),
    ("issue-transient", Action::IssueTransient),
    ("connect", Action::Connect),
];
const PROTOCOLS: &[(&str, Protocol)] = &[
    ("ssh", Protocol::Ssh),
    ("winbox", Protocol::Winbox),
    ("web-console", Protocol::WebConsole),
];
const ACCESS: &[(&str, AccessLevel)] = &[
    ("full", AccessLevel::Full),
    ("read-only", AccessLevel::ReadOnly),
];
const WANTS: &[(&str, Want)] = &[
    ("allow", Want::Allow),
    ("deny", Want::Deny),
    ("abstain", Want::Abstain),
];

const PRINCIPAL: &str = r#"{ name = "alice", groups = ["ops"], sudo = false }"#;
const DEVICE: &str = r#"{ name = "edge-1", tags = ["lab"] }"#;
const U32: &str = "a whole number from 0 to 4294967295";

/// Removes `key` and reads it as one of `choices` (case and `-`/`_` do not matter).
fn word<T: Copy>(
    t: &mut Table,
    key: &str,
    choices: &[(&str, T)],
) -> Result<Option<T>, FixtureError> {
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    let what = names.join(", ");
    let Some(s) = t.take::<String>(key, &format!("one of {what}"))? else {
        return Ok(None);
    };
    let w = s.trim().to_ascii_lowercase().replace('_', "-");
    match choices.iter().find(|(n, _)| *n == w) {
        Some((_, v)) => Ok(Some(*v)),
        None => Err(t.error(key, format!("{s:?}: expected one of {what}"))),
    }
}

fn principal(t: &mut Table, key: &str) -> Result<Option<Principal>, FixtureError> {
    let Some(mut p) = t.take_table(key, PRINCIPAL)? else {
        return Ok(None);
    };
    let name = p
        .take::<String>("name", "a string")?
        .ok_or_else(|| p.error("name", "missing: the user's name"))?;
    let groups = p
        .take("groups", "a list of group names")?
        .unwrap_or_default();
    let sudo = p.take("sudo", "true or false")?.unwrap_or(false);
    p.finish(&["name", "groups", "sudo"])?;
    Ok(Some(Principal { name, groups, sudo }))
}

fn device(t: &mut Table) -> Result<DeviceRef, FixtureError> {
    let Some(mut d) = t.take_table("device", DEVICE)? else {
        return Ok(DeviceRef {
            name: "device1".into(),
            id: String::new(),
            tags: Vec::new(),
        });
    };
    let name = d
        .take("name", "a string")?
        .unwrap_or_else(|| "device1".into());
    let id = d.take("id", "a string")?.unwrap_or_default();
    let tags = d.take("tags", "a list of tags")?.unwrap_or_default();
    d.finish(&["name", "id", "tags"])?;
    Ok(DeviceRef { name, id, tags })
}

fn request(mut t: Table) -> Result<Request, FixtureError> {
    let (user, requester, subject) = (
        principal(&mut t, "user")?,
        principal(&mut t, "requester")?,
        principal(&mut t, "subject")?,
    );
    let (requester, subject) = match (user, requester, subject) {
        (Some(u), None, None) => (u.clone(), u),
        (None, req, sub) => {
            let req = req.unwrap_or_else(|| Principal {
                name: "user".into(),
                groups: vec![],
                sudo: false,
            });
            let sub = sub.unwrap_or_else(|| req.clone());
            (req, sub)
        }
        _ => return Err(t.error("user", "give `user`, or `requester`/`subject`, not both")),
    };
    let r = Request {
        action: word(&mut t, "action", ACTIONS)?.unwrap_or(Action::IssueSession),
        requester,
        subject,
        device: device(&mut t)?,
        protocol: word(&mut t, "protocol", PROTOCOLS)?.unwrap_or(Protocol::Ssh),
        access: word(&mut t, "access", ACCESS)?.unwrap_or(AccessLevel::Full),
        ttl_seconds: t.take("ttl-seconds", U32)?.unwrap_or(600),
        source: t.take("source", "an address such as \"203.0.113.7\"")?,
        allow_only_cidr: t.take("allow-only-cidr", "a block such as \"203.0.113.0/24\"")?,
        allow_rfc1918: t.take("allow-rfc1918", "true or false")?.unwrap_or(true),
        now_unix_ms: match t.take("now-unix-ms", "milliseconds since 1970-01-01 UTC")? {
            Some(ms) => ms,
            None => now_ms(),
        },
        request_id: t
            .take("request-id", "a string")?
            .unwrap_or_else(|| "fixture".into()),
    };
    t.finish(&[
        "action",
        "user",
        "requester",
        "subject",
        "device",
        "protocol",
        "access",
        "ttl-seconds",
        "source",
        "allow-only-cidr",
        "allow-rfc1918",
        "now-unix-ms",
        "request-id",
    ])?;
    Ok(r)
}

fn expect(mut t: Table) -> Result<Expect, FixtureError> {
    let decision = word(&mut t, "decision", WANTS)?
        .ok_or_else(|| t.error("decision", "missing: allow, deny or abstain"))?;
    let e = Expect {
        decision,
        reason_contains: t.take("reason-contains", "a string")?,
        max_ttl_seconds: t.take("max-ttl-seconds", U32)?,
        access: word(&mut t, "access", ACCESS)?,
    };
    t.finish(&["decision", "reason-contains", "max-ttl-seconds", "access"])?;
    Ok(e)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads one fixture file (`.json`, or anything else as TOML).
pub fn read(path: &Path) -> Result<Fixture, FixtureError> {
    let text = std::fs::read_to_string(path)?;
    let value: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text)?
    } else {
        toml::from_str(&text)?
    };
    let name = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    parse(value, name)
}

/// A fixture from its parsed JSON/TOML; `default_name` if it names itself not.
pub fn parse(value: Value, default_name: String) -> Result<Fixture, FixtureError> {
    let mut top = Table::new("", value, "")?;
    let name = top.take("name", "a string")?.unwrap_or(default_name);
    // The config table is passed through verbatim: its keys are the plugin's own.
    let config = match top.take_value("config") {
        None => HashMap::new(),
        Some(Value::Object(c)) => c
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect(),
        Some(other) => {
            return Err(top.error(
                "config",
                format!(
                    "expected a table of the plugin's settings, found {}",
                    found(&other)
                ),
            ));
        }
    };
    let request = match top.take_table("request", "[request] with action = \"connect\"")? {
        Some(t) => request(t)?,
        None => request(Table::new(
            "request",
            Value::Object(Default::default()),
            "",
        )?)?,
    };
    let expect = match top.take_table("expect", "[expect] with decision = \"deny\"")? {
        Some(t) => Some(expect(t)?),
        None => None,
    };
    top.finish(&["name", "config", "request", "expect"])?;
    Ok(Fixture {
        name,
        config,
        request,
        expect,
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
pub fn check(expect: &Expect, d: &Decision) -> Option<String> {
    let got = match d {
        Decision::Allow(_) => Want::Allow,
        Decision::Deny(_) => Want::Deny,
        Decision::Abstain => Want::Abstain,
    };
    if expect.decision != got {
        return Some(format!("expected {}", expect.decision.word()));
    }
    if let (Some(needle), Decision::Deny(reason)) = (&expect.reason_contains, d)
        && !reason.contains(needle.as_str())
    {
        return Some(format!("expected the reason to contain {needle:?}"));
    }
    if let Decision::Allow(g) = d {
        if expect.max_ttl_seconds.is_some() && expect.max_ttl_seconds != g.max_ttl_seconds {
            return Some(format!("expected max-ttl {:?} s", expect.max_ttl_seconds));
        }
        if expect.access.is_some() && expect.access != g.access {
            let a = ACCESS.iter().find(|(_, a)| Some(*a) == expect.access);
            return Some(format!("expected access {}", a.map_or("?", |(n, _)| *n)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml_fixture(text: &str) -> Result<Fixture, FixtureError> {
        parse(toml::from_str(text).unwrap(), "f".into())
    }

    fn error(text: &str) -> String {
        toml_fixture(text).unwrap_err().to_string()
    }

    #[test]
    fn every_field_is_read_in_either_spelling() {
        let f = toml_fixture(
            "name = \"n\"\n[config]\nsome_key = 3\n[request]\naction = \"connect\"\n\
             requester = { name = \"bob\", groups = [\"g\"], sudo = true }\nsubject = { name = \"al\" }\n\
             device = { name = \"d\", id = \"i\", tags = [\"t\"] }\nprotocol = \"web_console\"\n\
             access = \"read-only\"\nttl_seconds = 5\nsource = \"192.0.2.1\"\n\
             allow-only-cidr = \"192.0.2.0/24\"\nallow_rfc1918 = false\nnow-unix-ms = 7\n\
             request-id = \"r\"\n[expect]\ndecision = \"Allow\"\nmax_ttl_seconds = 5\naccess = \"read_only\"\n",
        )
        .unwrap();
        let r = &f.request;
        assert_eq!(f.name, "n");
        assert_eq!(
            f.config["some_key"], "3",
            "config keys are the plugin's, untouched"
        );
        assert_eq!(
            (r.action, r.protocol, r.access),
            (Action::Connect, Protocol::WebConsole, AccessLevel::ReadOnly)
        );
        assert!(r.requester.sudo && r.subject.name == "al" && r.device.tags == ["t"]);
        assert_eq!(
            (r.ttl_seconds, r.now_unix_ms, r.allow_rfc1918),
            (5, 7, false)
        );
        let e = f.expect.unwrap();
        assert_eq!(
            (e.decision, e.access, e.max_ttl_seconds),
            (Want::Allow, Some(AccessLevel::ReadOnly), Some(5))
        );

        let f = toml_fixture("").unwrap();
        assert_eq!(
            (f.name.as_str(), f.request.requester.name.as_str()),
            ("f", "user")
        );
        assert!(f.expect.is_none());
    }

    #[test]
    fn a_bad_decision_is_an_error_of_the_fixture_naming_the_field() {
        assert_eq!(
            error("[expect]\ndecision = \"maybe\"\n"),
            "expect.decision: \"maybe\": expected one of allow, deny, abstain"
        );
        assert_eq!(
            error("[expect]\nreason-contains = \"x\"\n"),
            "expect.decision: missing: allow, deny or abstain"
        );
        assert_eq!(
            error("[expect]\ndecision = \"allow\"\naccess = \"root\"\n"),
            "expect.access: \"root\": expected one of full, read-only"
        );
    }

    #[test]
    fn type_errors_name_the_field_and_what_to_write() {
        assert_eq!(
            error("[request]\nttl-seconds = \"abc\"\n"),
            "request.ttl-seconds: expected a whole number from 0 to 4294967295, found string \"abc\""
        );
        assert_eq!(
            error("[request]\ndevice = { tags = \"lab\" }\n"),
            "request.device.tags: expected a list of tags, found string \"lab\""
        );
        let e = error("[request]\nrequester = \"bob\"\n");
        assert_eq!(
            e,
            "request.requester: expected a table such as { name = \"alice\", groups = [\"ops\"], sudo = false }, found string \"bob\""
        );
        assert_eq!(
            error("[request]\nsubject = { groups = [] }\n"),
            "request.subject.name: missing: the user's name"
        );
        assert!(
            error("[request]\nttl = 3\n")
                .starts_with("request.ttl: unknown field; expected one of action,")
        );
        assert_eq!(
            error("config = 3\n"),
            "config: expected a table of the plugin's settings, found 3"
        );
        let e = parse(serde_json::json!([1]), "f".into())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "a fixture is a table (TOML) or an object (JSON)");
    }

    #[test]
    fn both_spellings_of_one_key_are_refused() {
        assert_eq!(
            error("[request]\nttl-seconds = 5\nttl_seconds = 6\n"),
            "request.ttl-seconds: given twice, as \"ttl-seconds\" and \"ttl_seconds\": keep one"
        );
        let e = error(
            "[request]\ndevice = { name = \"a\" }\n[expect]\ndecision = \"deny\"\nreason-contains = \"a\"\nreason_contains = \"b\"\n",
        );
        assert!(e.starts_with("expect.reason-contains: given twice"), "{e}");
    }

    #[test]
    fn file_errors_do_not_repeat_the_file_name() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("x.json");
        std::fs::write(&file, "{\"request\": {\"ttl_seconds\": -1}}").unwrap();
        let e = read(&file).unwrap_err().to_string();
        assert_eq!(
            e,
            "request.ttl-seconds: expected a whole number from 0 to 4294967295, found -1"
        );
        std::fs::write(&file, "{").unwrap();
        let e = read(&file).unwrap_err().to_string();
        assert!(e.starts_with("not JSON: ") && !e.contains("x.json"), "{e}");
    }

    #[test]
    fn check_compares_kind_reason_and_grant() {
        let f =
            toml_fixture("[expect]\ndecision = \"deny\"\nreason-contains = \"frozen\"\n").unwrap();
        let e = f.expect.unwrap();
        assert_eq!(check(&e, &Decision::Deny("sw1 is frozen".into())), None);
        assert_eq!(
            check(&e, &Decision::Deny("no".into())).unwrap(),
            "expected the reason to contain \"frozen\""
        );
        assert_eq!(check(&e, &Decision::Abstain).unwrap(), "expected deny");
        let f = toml_fixture("[expect]\ndecision = \"allow\"\naccess = \"read-only\"\n").unwrap();
        let e = f.expect.unwrap();
        assert_eq!(
            check(&e, &Decision::Allow(Default::default())).unwrap(),
            "expected access read-only"
        );
    }
}
