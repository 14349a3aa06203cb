//! Unit tests of the built-in authorize policy, run natively with the SDK's harness.

use super::*;
use sallyport_plugin::{Principal, testing};

const GROUPS: &str = r#"[
    {"name":"admins","sudo":true,"devices":["*"],"access":"full"},
    {"name":"ops","sudo":false,"devices":["core-*","edge-??"],"access":"full"},
    {"name":"viewers","devices":["core-*","lab-*"],"access":"read-only"},
    {"name":"nobody"}
]"#;

fn decide(user: &str, groups: &[&str], device: &str, access: AccessLevel) -> Decision {
    decide_action(Action::IssueTransient, user, groups, device, access)
}

fn decide_action(
    action: Action,
    user: &str,
    groups: &[&str],
    device: &str,
    access: AccessLevel,
) -> Decision {
    testing::set_config("groups", GROUPS);
    let r = Request::builder()
        .action(action)
        .user(Principal::new(user).with_groups(groups.iter().copied()))
        .device_name(device)
        .access(access)
        .build();
    DefaultAuthorize::authorize(&r)
}

fn allowed_at(access: AccessLevel) -> Decision {
    Decision::allow_with(Grant::new().with_access(access))
}

#[test]
fn a_matching_group_glob_allows() {
    assert_eq!(
        decide("admin", &["admins"], "anything", AccessLevel::Full),
        allowed_at(AccessLevel::Full)
    );
    assert_eq!(
        decide("olga", &["ops"], "core-1", AccessLevel::Full),
        allowed_at(AccessLevel::Full)
    );
    assert_eq!(
        decide("olga", &["ops"], "edge-42", AccessLevel::Full),
        allowed_at(AccessLevel::Full)
    );
    assert!(decide("olga", &["ops"], "edge-420", AccessLevel::Full).is_deny());
}

#[test]
fn the_best_access_of_the_matching_groups_is_granted() {
    // viewers alone: read-only, granted as read-only.
    assert_eq!(
        decide("vic", &["viewers"], "lab-7", AccessLevel::ReadOnly),
        allowed_at(AccessLevel::ReadOnly)
    );
    // viewers and ops both reach core-1: full wins, even for a read-only request.
    assert_eq!(
        decide("vic", &["viewers", "ops"], "core-1", AccessLevel::ReadOnly),
        allowed_at(AccessLevel::Full)
    );
    // ops does not reach lab-7, so only viewers counts.
    assert_eq!(
        decide("vic", &["ops", "viewers"], "lab-7", AccessLevel::ReadOnly),
        allowed_at(AccessLevel::ReadOnly)
    );
}

#[test]
fn full_access_through_read_only_groups_is_denied() {
    assert_eq!(
        decide("vic", &["viewers"], "lab-7", AccessLevel::Full),
        Decision::deny("user vic may reach device lab-7 only read-only, not with full access")
    );
}

#[test]
fn open_sessions_are_narrowed_to_the_groups_level_not_denied() {
    assert_eq!(
        decide_action(
            Action::IssueSession,
            "vic",
            &["viewers"],
            "lab-7",
            AccessLevel::Full
        ),
        allowed_at(AccessLevel::ReadOnly)
    );
    assert!(
        decide_action(
            Action::Connect,
            "vic",
            &["viewers"],
            "lab-7",
            AccessLevel::Full
        )
        .is_deny()
    );
}

#[test]
fn no_matching_group_is_denied() {
    let expected = Decision::deny("user eve has no group that reaches device core-1");
    assert_eq!(
        decide("eve", &[], "core-1", AccessLevel::ReadOnly),
        expected
    );
    assert_eq!(
        decide(
            "eve",
            &["nobody", "unknown"],
            "core-1",
            AccessLevel::ReadOnly
        ),
        expected
    );
    // Group names are exact: "admins" in the config does not make "Admins" an admin.
    assert!(decide("eve", &["Admins"], "core-1", AccessLevel::ReadOnly).is_deny());
}

#[test]
fn missing_access_defaults_to_read_only() {
    testing::set_config("groups", r#"[{"name":"g","devices":["*"]}]"#);
    let r = |a| {
        Request::builder()
            .action(Action::IssueTransient)
            .user(Principal::new("u").with_groups(["g"]))
            .access(a)
            .build()
    };
    assert_eq!(
        DefaultAuthorize::authorize(&r(AccessLevel::ReadOnly)),
        allowed_at(AccessLevel::ReadOnly)
    );
    assert!(DefaultAuthorize::authorize(&r(AccessLevel::Full)).is_deny());
}

#[test]
fn bad_or_missing_configuration_denies() {
    let r = Request::builder()
        .user(Principal::new("admin").with_groups(["admins"]))
        .build();
    testing::reset();
    assert_eq!(
        DefaultAuthorize::authorize(&r),
        Decision::deny("default-authorize: no `groups` configured")
    );
    testing::set_config("groups", r#"{"name":"admins"}"#);
    assert!(
        DefaultAuthorize::authorize(&r)
            .reason()
            .is_some_and(|m| m.contains("expected JSON shape"))
    );
    testing::set_config(
        "groups",
        r#"[{"name":"admins","devices":["*"],"access":"root"}]"#,
    );
    assert_eq!(
        DefaultAuthorize::authorize(&r),
        Decision::deny("default-authorize: group admins has an unknown access level")
    );
}
