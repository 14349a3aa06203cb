//! sallyport's built-in authorize policy (Nodegrid semantics): a user reaches a device if one
//! of their groups has a device glob matching the device name, at the best access level
//! among those groups (`full` above `read-only`).
//!
//! An open session (`issue-session`) asks for no level of its own: the groups decide, so a
//! read-only user is allowed with the grant narrowed to `read-only`. A transient access or a
//! connection that asks for more than the groups give is denied.
//!
//! The request carries group names only; the group table comes from `config("groups")`,
//! JSON written by the host from its `[[groups]]`:
//! `[{"name":"admins","sudo":true,"devices":["*"],"access":"full"}, …]` (`devices` defaults
//! to none, `access` to `read-only`, other keys are ignored).

use sallyport_plugin::{AccessLevel, Action, Authorize, ConfigError, Decision, Grant, Request};

mod groups;

/// The built-in authorize policy.
pub struct DefaultAuthorize;

impl Authorize for DefaultAuthorize {
    fn authorize(r: &Request) -> Decision {
        let Some(text) = sallyport_plugin::config("groups") else {
            return Decision::deny("default-authorize: no `groups` configured");
        };
        let (user, device) = (&r.subject.name, &r.device.name);
        let mut best: Option<AccessLevel> = None;
        // The first matching group whose level is not a level (the table is read to its end
        // first: a malformed table is reported as such).
        let mut unknown_level: Option<String> = None;
        let read = groups::for_each(&text, |g| {
            if unknown_level.is_some() || !r.subject.in_group(&g.name) || !g.reaches(device) {
                return;
            }
            match g.access.as_deref().map(AccessLevel::parse) {
                None => {
                    best = Some(
                        best.map_or(AccessLevel::ReadOnly, |b| b.higher(AccessLevel::ReadOnly)),
                    )
                }
                Some(Some(a)) => best = Some(best.map_or(a, |b| b.higher(a))),
                Some(None) => unknown_level = Some(g.name.into_owned()),
            }
        });
        if read.is_err() {
            let e = ConfigError {
                key: "groups".into(),
                value: text,
            };
            return Decision::deny(format!("default-authorize: {e}"));
        }
        if let Some(name) = unknown_level {
            return Decision::deny(format!(
                "default-authorize: group {name} has an unknown access level"
            ));
        }
        match best {
            None => Decision::deny(format!(
                "user {user} has no group that reaches device {device}"
            )),
            Some(best) if !best.covers(r.access) && r.action != Action::IssueSession => {
                Decision::deny(format!(
                    "user {user} may reach device {device} only read-only, not with {} access",
                    r.access.as_str()
                ))
            }
            Some(best) => Decision::allow_with(Grant::new().with_access(best)),
        }
    }
}

sallyport_plugin::export_authorize!(DefaultAuthorize);

#[cfg(test)]
mod tests;
