//! Unit tests of the built-in source policy, run natively with the SDK's harness.

use super::*;
use sallyport_plugin::testing;

fn connect(source: Option<&str>) -> sallyport_plugin::RequestBuilder {
    let b = Request::builder().action(Action::Connect);
    match source {
        Some(s) => b.source(s),
        None => b,
    }
}

fn decide(b: sallyport_plugin::RequestBuilder) -> Decision {
    DefaultSource::check_source(&b.build())
}

#[test]
fn connect_needs_a_source() {
    assert_eq!(decide(connect(None)), Decision::deny("no source address"));
    assert_eq!(
        decide(connect(Some("not-an-ip"))),
        Decision::deny("source `not-an-ip` is not an IP address")
    );
    assert_eq!(decide(connect(Some("203.0.113.9"))), Decision::allow());
}

#[test]
fn allow_only_cidr_restricts_connections() {
    let only = |s| connect(Some(s)).allow_only_cidr("198.51.100.10/32");
    assert_eq!(decide(only("198.51.100.10")), Decision::allow());
    assert_eq!(decide(only("198.51.100.10:40022")), Decision::allow());
    assert_eq!(
        decide(only("203.0.113.42")),
        Decision::deny("source 203.0.113.42 is outside the allowed 198.51.100.10/32")
    );
    let many = connect(Some("2001:db8::7")).allow_only_cidr("198.51.100.0/24, 2001:db8::/32");
    assert_eq!(decide(many), Decision::allow());
    let bare_ip = connect(Some("203.0.113.42")).allow_only_cidr("203.0.113.42");
    assert_eq!(decide(bare_ip), Decision::allow());
}

#[test]
fn rfc1918_sources_need_allow_rfc1918() {
    let private = |s, allow| connect(Some(s)).allow_rfc1918(allow);
    for s in [
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.0.10",
        "::ffff:192.168.0.10",
    ] {
        assert!(decide(private(s, false)).is_deny(), "{s}");
        assert!(decide(private(s, true)).is_allow(), "{s}");
    }
    assert_eq!(
        decide(private("192.168.0.10", false)),
        Decision::deny("source 192.168.0.10 is a private (RFC 1918) address")
    );
    // Loopback and the neighbours of 172.16/12 are not RFC 1918.
    for s in ["127.0.0.1", "172.15.0.1", "172.32.0.1", "::1"] {
        assert!(decide(private(s, false)).is_allow(), "{s}");
    }
    // Both rules apply: inside the CIDR but private is still refused.
    let both = connect(Some("10.0.0.5"))
        .allow_only_cidr("10.0.0.0/8")
        .allow_rfc1918(false);
    assert!(decide(both).is_deny());
}

#[test]
fn issuance_abstains_unless_asked_to_check() {
    for action in [Action::IssueSession, Action::IssueTransient] {
        let issue = || Request::builder().action(action).allow_rfc1918(false);
        assert_eq!(decide(issue()), Decision::Abstain);
        assert_eq!(decide(issue().source("192.168.1.5")), Decision::Abstain);
        assert!(decide(issue().allow_only_cidr("198.51.100.10/33")).is_deny());
    }
    testing::set_config("check-issuance", "true");
    let issue = || {
        Request::builder()
            .action(Action::IssueTransient)
            .allow_rfc1918(false)
    };
    assert_eq!(decide(issue()), Decision::Abstain);
    assert!(decide(issue().source("192.168.1.5")).is_deny());
    assert!(decide(issue().source("203.0.113.5")).is_allow());
}

#[test]
fn invalid_allow_only_cidr_is_denied() {
    let bad = connect(Some("198.51.100.10")).allow_only_cidr("198.51.100.10/40");
    assert_eq!(
        decide(bad),
        Decision::deny(
            "invalid allow-only-cidr: `198.51.100.10/40` is not an address block like 198.51.100.0/24"
        )
    );
}
