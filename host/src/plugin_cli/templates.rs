//! The texts `sallyport plugin new` writes: each hook's `src/lib.rs` (a working policy with its
//! unit tests; `__Policy__` is replaced by the crate's type name) and its request fixtures.
//! Kept apart from `new.rs` so the logic there is not lost between pages of template.

use sallyport::config::Hook;

/// The request fixtures `sallyport plugin test … fixtures/` runs: each one's `[expect]` is what
/// the template's policy answers, so the freshly built component passes them all and a changed
/// policy shows what it changed. The source template is a deny-list that never allows (it has
/// no opinion on other addresses), so its second case is an abstain.
pub fn fixtures(hook: Hook) -> &'static [(&'static str, &'static str)] {
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

pub const AUTHORIZE: &str = r#"//! An authorize policy: devices tagged with the configured tag (`deny-tag`, default
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

pub const SUDO: &str = r#"//! A sudo policy: a user may always issue for themself; issuing for another user needs sudo,
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

pub const SOURCE: &str = r#"//! A source policy: connections from the blocks in config `deny-cidrs` (a comma-separated
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
