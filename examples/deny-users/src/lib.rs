//! Example authorize plugin: a deny-list of target users. Sessions and transient accesses
//! for the listed users (e.g. `root`) may only be issued by a requester with sudo.
//!
//! Configuration (the `config` table of its `[[plugins]]` entry):
//! `users = ["root", "svc-*"]` (names or `*`/`?` globs; a comma-separated string works too),
//! optional `otherwise = "abstain"` (default) or `"allow"`.
//!
//! Why the authorize hook and not the sudo hook: the host consults sudo only when requester
//! and subject differ, so a sudo plugin never sees `root` issuing a key for itself. On the
//! authorize hook every issuance passes, and the rule becomes: if the subject is listed and
//! the requester has no sudo, deny.
//!
//! Only issuance is checked. On `connect` the requester is the connecting user itself, so
//! the rule would refuse every listed user's connection, including those a sudo user issued
//! the key for; the issuance was the decision that mattered, and `connect` abstains.
//!
//! For everyone not listed it abstains: a deny-list must never be the reason a request is
//! allowed (with `builtin_policies = false` and this plugin alone, an allow would open every
//! device). Under `policy_combine = "unanimous"` an abstain is a deny; set
//! `otherwise = "allow"` there (the other plugins on the hook still decide).

use sallyport_plugin::{Authorize, Decision, Request};

/// The deny-list policy.
pub struct DenyUsers;

struct Settings {
    users: Vec<String>,
    allow_otherwise: bool,
}

fn settings() -> Result<Settings, String> {
    let raw = sallyport_plugin::config("users")
        .ok_or_else(|| "deny-users: `users` is not configured".to_string())?;
    let users: Vec<String> = if raw.trim_start().starts_with('[') {
        sallyport_plugin::config_json::<Vec<String>>("users")
            .map_err(|_| format!("deny-users: `users` must be a list of names, not {raw}"))?
            .unwrap_or_default()
    } else {
        raw.split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect()
    };
    if users.is_empty() {
        return Err("deny-users: `users` is empty; list at least one user".into());
    }
    let allow_otherwise = match sallyport_plugin::config("otherwise").as_deref() {
        None | Some("abstain") => false,
        Some("allow") => true,
        Some(other) => {
            return Err(format!(
                "deny-users: `otherwise` must be \"abstain\" or \"allow\", not {other:?}"
            ));
        }
    };
    Ok(Settings {
        users,
        allow_otherwise,
    })
}

impl Authorize for DenyUsers {
    fn authorize(r: &Request) -> Decision {
        let s = match settings() {
            Ok(s) => s,
            Err(e) => return Decision::deny(e),
        };
        let listed = s
            .users
            .iter()
            .any(|u| sallyport_plugin::glob::matches(u, &r.subject.name));
        if r.action.is_issuance() && listed && !r.requester.sudo {
            return Decision::deny(format!(
                "{} is a protected user: only a requester with sudo may issue access for them",
                r.subject.name
            ));
        }
        if s.allow_otherwise {
            Decision::allow()
        } else {
            Decision::Abstain
        }
    }
}

sallyport_plugin::export_authorize!(DenyUsers);

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_plugin::{Action, Principal, testing};

    fn root() -> Principal {
        Principal::new("root").with_groups(["ops"])
    }

    fn admin() -> Principal {
        Principal::new("admin")
            .with_groups(["admins"])
            .with_sudo(true)
    }

    fn configure(users: &str) {
        testing::reset();
        testing::set_config("users", users);
    }

    #[test]
    fn listed_subjects_need_a_requester_with_sudo() {
        configure(r#"["root","svc-*"]"#);
        let own = Request::builder().user(root()).build();
        assert_eq!(
            DenyUsers::authorize(&own),
            Decision::deny(
                "root is a protected user: only a requester with sudo may issue access for them"
            )
        );
        let by_admin = Request::builder()
            .requester(admin())
            .subject(root())
            .build();
        assert_eq!(DenyUsers::authorize(&by_admin), Decision::Abstain);
        let transient = Request::builder()
            .action(Action::IssueTransient)
            .user(Principal::new("svc-backup"))
            .build();
        assert!(DenyUsers::authorize(&transient).is_deny(), "globs match");
    }

    #[test]
    fn others_and_connections_abstain() {
        configure("root, toor");
        let alice = Request::builder().user(Principal::new("alice")).build();
        assert_eq!(DenyUsers::authorize(&alice), Decision::Abstain);
        let toor = Request::builder().user(Principal::new("toor")).build();
        assert!(
            DenyUsers::authorize(&toor).is_deny(),
            "comma-separated list"
        );
        let connect = Request::builder()
            .action(Action::Connect)
            .user(root())
            .build();
        assert_eq!(DenyUsers::authorize(&connect), Decision::Abstain);
        testing::set_config("otherwise", "allow");
        assert_eq!(DenyUsers::authorize(&alice), Decision::allow());
        assert!(DenyUsers::authorize(&toor).is_deny());
    }

    #[test]
    fn bad_configuration_denies() {
        testing::reset();
        let r = Request::builder().user(Principal::new("alice")).build();
        assert_eq!(
            DenyUsers::authorize(&r),
            Decision::deny("deny-users: `users` is not configured")
        );
        configure("[1,2]");
        assert_eq!(
            DenyUsers::authorize(&r),
            Decision::deny("deny-users: `users` must be a list of names, not [1,2]")
        );
        configure("[]");
        assert!(
            DenyUsers::authorize(&r)
                .reason()
                .is_some_and(|m| m.contains("is empty"))
        );
        configure("root");
        testing::set_config("otherwise", "deny");
        assert!(
            DenyUsers::authorize(&r)
                .reason()
                .is_some_and(|m| m.contains("`otherwise`"))
        );
    }
}
