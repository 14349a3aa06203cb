//! sallyport's built-in sudo policy (Nodegrid "Sudo permission"): a user may always issue
//! for themself; issuing for another user needs a group with sudo.

use sallyport_plugin::{Decision, Request, Sudo};

/// The built-in sudo policy.
pub struct DefaultSudo;

impl Sudo for DefaultSudo {
    fn sudo(r: &Request) -> Decision {
        if !r.is_on_behalf() || r.requester.sudo {
            Decision::allow()
        } else {
            Decision::deny(format!(
                "{} may not issue for {}: issuing for another user needs a group with sudo",
                r.requester.name, r.subject.name
            ))
        }
    }
}

sallyport_plugin::export_sudo!(DefaultSudo);

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_plugin::Principal;

    #[test]
    fn issuing_for_oneself_needs_no_sudo() {
        let r = Request::builder().user(Principal::new("alice")).build();
        assert_eq!(DefaultSudo::sudo(&r), Decision::allow());
    }

    #[test]
    fn issuing_for_another_user_needs_sudo() {
        let r = Request::builder()
            .requester(
                Principal::new("admin")
                    .with_groups(["admins"])
                    .with_sudo(true),
            )
            .subject(Principal::new("alice"))
            .build();
        assert_eq!(DefaultSudo::sudo(&r), Decision::allow());

        let r = Request::builder()
            .requester(Principal::new("bob").with_groups(["ops"]))
            .subject(Principal::new("alice"))
            .build();
        assert_eq!(
            DefaultSudo::sudo(&r).reason(),
            Some("bob may not issue for alice: issuing for another user needs a group with sudo")
        );
    }
}
