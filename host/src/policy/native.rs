//! The built-in rules, in native Rust (Nodegrid semantics):
//! - authorize: a group of the subject whose device globs match the device; the level is the
//!   best among matching groups, and asking for `full` with only `read-only` groups is denied;
//! - sudo: acting for oneself is allowed, for another user needs a group with `sudo`;
//! - source: `allow_only_cidr` and `allow_rfc1918` applied to the connecting address.

use std::net::IpAddr;

use ipnet::IpNet;
use wildmatch::WildMatch;

use super::{Action, Decision, Grant, Request};
use crate::config::{AccessLevel, GroupConfig};

pub fn authorize(groups: &[GroupConfig], r: &Request) -> Decision {
    let best = groups
        .iter()
        .filter(|g| r.subject.groups.contains(&g.name))
        .filter(|g| {
            g.devices
                .iter()
                .any(|glob| WildMatch::new(glob).matches(&r.device.name))
        })
        .map(|g| g.access)
        .max();
    match best {
        None => Decision::Deny(format!(
            "user {:?} has no group that reaches device {:?}",
            r.subject.name, r.device.name
        )),
        Some(AccessLevel::ReadOnly)
            if r.access == AccessLevel::Full && r.action == Action::IssueTransient =>
        {
            Decision::Deny(format!(
                "user {:?} has only read-only access to device {:?}; full_access is not allowed",
                r.subject.name, r.device.name
            ))
        }
        Some(level) => Decision::Allow(Grant {
            access: Some(level),
            ..Grant::default()
        }),
    }
}

pub fn sudo(r: &Request) -> Decision {
    if r.requester.name == r.subject.name || r.requester.sudo {
        Decision::Allow(Grant::default())
    } else {
        Decision::Deny(format!(
            "user {:?} may not issue for {:?}: issuing for another user needs a group with sudo",
            r.requester.name, r.subject.name
        ))
    }
}

/// Whether `ip` is in a private range of RFC 1918 (IPv4) or a unique-local IPv6 range.
pub fn is_rfc1918(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_private(),
            None => (v6.segments()[0] & 0xfe00) == 0xfc00,
        },
    }
}

pub fn source(r: &Request) -> Decision {
    let Some(source) = r.source.as_deref() else {
        return match r.action {
            Action::Connect => Decision::Deny("connection without a source address".into()),
            _ => Decision::Abstain,
        };
    };
    let Ok(ip) = source.parse::<IpAddr>() else {
        return Decision::Deny(format!("source {source:?} is not an IP address"));
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if let Some(cidr) = r.allow_only_cidr.as_deref() {
        match cidr.parse::<IpNet>() {
            Ok(net) if net.contains(&ip) => {}
            Ok(_) => {
                return Decision::Deny(format!("source {ip} is outside allow_only_cidr {cidr}"));
            }
            Err(_) => return Decision::Deny(format!("allow_only_cidr {cidr:?} is not a CIDR")),
        }
    }
    if !r.allow_rfc1918 && is_rfc1918(ip) {
        return Decision::Deny(format!(
            "source {ip} is a private (RFC 1918) address and allow_rfc1918 is false"
        ));
    }
    Decision::Allow(Grant::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DeviceRef, Principal, Protocol};

    fn principal(name: &str, groups: &[&str], sudo: bool) -> Principal {
        Principal {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            sudo,
        }
    }

    fn request(action: Action, access: AccessLevel) -> Request {
        Request {
            action,
            requester: principal("alice", &["ops"], false),
            subject: principal("alice", &["ops"], false),
            device: DeviceRef {
                name: "edge-1".into(),
                id: "x".into(),
                tags: vec![],
            },
            protocol: Protocol::Ssh,
            access,
            ttl_seconds: 10,
            source: None,
            allow_only_cidr: None,
            allow_rfc1918: true,
            now_unix_ms: 0,
            request_id: "r".into(),
        }
    }

    fn groups() -> Vec<GroupConfig> {
        vec![
            GroupConfig {
                name: "ops".into(),
                sudo: false,
                devices: vec!["edge-*".into()],
                access: AccessLevel::ReadOnly,
            },
            GroupConfig {
                name: "core".into(),
                sudo: true,
                devices: vec!["core?".into()],
                access: AccessLevel::Full,
            },
        ]
    }

    #[test]
    fn authorize_by_glob_and_level() {
        let r = request(Action::IssueSession, AccessLevel::Full);
        assert_eq!(
            authorize(&groups(), &r),
            Decision::Allow(Grant {
                access: Some(AccessLevel::ReadOnly),
                ..Grant::default()
            })
        );
        let r = request(Action::IssueTransient, AccessLevel::Full);
        assert!(matches!(authorize(&groups(), &r), Decision::Deny(m) if m.contains("read-only")));
        let mut r = request(Action::IssueSession, AccessLevel::ReadOnly);
        r.device.name = "core1".into();
        assert!(matches!(authorize(&groups(), &r), Decision::Deny(m) if m.contains("no group")));
        r.subject.groups.push("core".into());
        assert_eq!(
            authorize(&groups(), &r),
            Decision::Allow(Grant {
                access: Some(AccessLevel::Full),
                ..Grant::default()
            })
        );
    }

    #[test]
    fn sudo_rule() {
        let mut r = request(Action::IssueSession, AccessLevel::Full);
        assert!(matches!(sudo(&r), Decision::Allow(_)));
        r.subject = principal("bob", &[], false);
        assert!(matches!(sudo(&r), Decision::Deny(m) if m.contains("sudo")));
        r.requester.sudo = true;
        assert!(matches!(sudo(&r), Decision::Allow(_)));
    }

    #[test]
    fn source_rules() {
        let mut r = request(Action::Connect, AccessLevel::Full);
        assert!(matches!(source(&r), Decision::Deny(_)));
        r.source = Some("127.0.0.2".into());
        r.allow_only_cidr = Some("127.0.0.1/32".into());
        assert!(matches!(source(&r), Decision::Deny(m) if m.contains("outside")));
        r.source = Some("::ffff:127.0.0.1".into());
        assert!(matches!(source(&r), Decision::Allow(_)));
        r.allow_only_cidr = None;
        r.allow_rfc1918 = false;
        r.source = Some("192.168.1.4".into());
        assert!(matches!(source(&r), Decision::Deny(m) if m.contains("RFC 1918")));
        r.source = Some("127.0.0.1".into());
        assert!(
            matches!(source(&r), Decision::Allow(_)),
            "loopback is not RFC 1918"
        );
        r.source = Some("fd00::1".into());
        assert!(matches!(source(&r), Decision::Deny(_)));
        let mut issue = request(Action::IssueTransient, AccessLevel::Full);
        issue.source = None;
        assert_eq!(source(&issue), Decision::Abstain);
    }
}
