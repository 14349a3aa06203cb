//! The one place where access decisions are made.
//!
//! Callers build a [`Request`] (shaped exactly like the `request` record of the WIT package
//! `sallyport:policy@0.1.0`) and ask one of three hooks: [`Policy::authorize`] (may this subject
//! reach this device, at what level), [`Policy::sudo`] (may the requester act for the subject)
//! and [`Policy::source`] (may this source address connect). Nothing outside this module
//! decides access. Until the WebAssembly engine lands, the hooks run the built-in rules in
//! [`native`]; the combination and fail-closed logic here is what the engine keeps.

pub mod native;

use crate::config::{AccessLevel, GroupConfig};

/// Which protocol a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Ssh,
    Winbox,
    WebConsole,
}

/// What the requester is trying to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    IssueSession,
    IssueTransient,
    Connect,
}

/// A user as policies see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub groups: Vec<String>,
    pub sudo: bool,
}

/// A device as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRef {
    pub name: String,
    pub id: String,
    pub tags: Vec<String>,
}

/// One decision request; mirrors the WIT `request` record field for field.
#[derive(Debug, Clone)]
pub struct Request {
    pub action: Action,
    pub requester: Principal,
    pub subject: Principal,
    pub device: DeviceRef,
    pub protocol: Protocol,
    pub access: AccessLevel,
    pub ttl_seconds: u32,
    pub source: Option<String>,
    pub allow_only_cidr: Option<String>,
    pub allow_rfc1918: bool,
    pub now_unix_ms: u64,
    pub request_id: String,
}

/// What an allow may carry: limits the caller must apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub max_ttl_seconds: Option<u32>,
    pub access: Option<AccessLevel>,
    pub obligations: Vec<String>,
}

/// One policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Grant),
    Deny(String),
    Abstain,
}

/// The combined outcome of a hook: what the caller acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Grant),
    Deny { policy: String, reason: String },
}

impl Verdict {
    /// Folds the decisions of every policy on a hook: any deny wins, abstain is neutral, at
    /// least one allow is needed, and grants combine by the strictest limit.
    pub fn combine<'a>(
        hook: &str,
        decisions: impl IntoIterator<Item = (&'a str, Decision)>,
    ) -> Verdict {
        let mut grant: Option<Grant> = None;
        for (policy, d) in decisions {
            match d {
                Decision::Deny(reason) => {
                    return Verdict::Deny {
                        policy: policy.to_string(),
                        reason,
                    };
                }
                Decision::Abstain => {}
                Decision::Allow(g) => {
                    grant = Some(match grant {
                        None => g,
                        Some(acc) => strictest(acc, g),
                    })
                }
            }
        }
        match grant {
            Some(g) => Verdict::Allow(g),
            None => Verdict::Deny {
                policy: hook.to_string(),
                reason: format!("no {hook} policy allowed the request"),
            },
        }
    }
}

fn strictest(a: Grant, b: Grant) -> Grant {
    let min = |x: Option<u32>, y: Option<u32>| match (x, y) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let mut obligations = a.obligations;
    for o in b.obligations {
        if !obligations.contains(&o) {
            obligations.push(o);
        }
    }
    Grant {
        max_ttl_seconds: min(a.max_ttl_seconds, b.max_ttl_seconds),
        access: match (a.access, b.access) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        },
        obligations,
    }
}

/// The policy decision point.
#[derive(Debug)]
pub struct Policy {
    groups: Vec<GroupConfig>,
}

impl Policy {
    /// The built-in rules over the configured groups.
    pub fn builtin(groups: Vec<GroupConfig>) -> Self {
        Self { groups }
    }

    /// May `subject` reach `device` with `access`?
    pub fn authorize(&self, r: &Request) -> Verdict {
        Verdict::combine(
            "authorize",
            [("builtin-authorize", native::authorize(&self.groups, r))],
        )
    }

    /// May `requester` act for `subject`?
    pub fn sudo(&self, r: &Request) -> Verdict {
        Verdict::combine("sudo", [("builtin-sudo", native::sudo(r))])
    }

    /// May `source` connect?
    pub fn source(&self, r: &Request) -> Verdict {
        Verdict::combine("source", [("builtin-source", native::source(r))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combination_rules() {
        let allow = |ttl, access| {
            Decision::Allow(Grant {
                max_ttl_seconds: ttl,
                access,
                obligations: vec![],
            })
        };
        assert_eq!(
            Verdict::combine("h", [("a", Decision::Abstain)]),
            Verdict::Deny {
                policy: "h".into(),
                reason: "no h policy allowed the request".into()
            }
        );
        assert_eq!(
            Verdict::combine(
                "h",
                [("a", allow(None, None)), ("b", Decision::Deny("no".into()))]
            ),
            Verdict::Deny {
                policy: "b".into(),
                reason: "no".into()
            }
        );
        assert_eq!(
            Verdict::combine(
                "h",
                [
                    ("a", allow(Some(60), Some(AccessLevel::Full))),
                    ("b", Decision::Abstain),
                    ("c", allow(Some(30), Some(AccessLevel::ReadOnly)))
                ]
            ),
            Verdict::Allow(Grant {
                max_ttl_seconds: Some(30),
                access: Some(AccessLevel::ReadOnly),
                obligations: vec![]
            })
        );
    }
}
