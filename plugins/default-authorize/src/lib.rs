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

use miniserde::Deserialize;
use sallyport_plugin::{AccessLevel, Action, Authorize, Decision, Grant, Request, glob};

/// The built-in authorize policy.
pub struct DefaultAuthorize;

/// One entry of the `groups` configuration.
#[derive(Deserialize, Debug)]
struct Group {
    name: String,
    devices: Option<Vec<String>>,
    access: Option<String>,
}

impl Authorize for DefaultAuthorize {
    fn authorize(r: &Request) -> Decision {
        let groups: Vec<Group> = match sallyport_plugin::config_json("groups") {
            Ok(Some(groups)) => groups,
            Ok(None) => return Decision::deny("default-authorize: no `groups` configured"),
            Err(e) => return Decision::deny(format!("default-authorize: {e}")),
        };
        let (user, device) = (&r.subject.name, &r.device.name);
        let mut best: Option<AccessLevel> = None;
        for g in groups.iter().filter(|g| r.subject.in_group(&g.name)) {
            if !glob::matches_any(g.devices.as_deref().unwrap_or_default(), device) {
                continue;
            }
            let access = match g.access.as_deref().map(AccessLevel::parse) {
                None => AccessLevel::ReadOnly,
                Some(Some(a)) => a,
                Some(None) => {
                    return Decision::deny(format!(
                        "default-authorize: group {} has an unknown access level",
                        g.name
                    ));
                }
            };
            best = Some(best.map_or(access, |b| b.higher(access)));
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
