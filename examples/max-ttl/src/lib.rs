//! Example authorize plugin: a lifetime clamp. Every request is allowed with a grant whose
//! `max-ttl-seconds` is the configured bound, so no session key or transient access lives
//! longer than that, whatever the caller asked for (the host takes the smaller of the two).
//!
//! Configuration (the `config` table of its `[[plugins]]` entry): `max_ttl_seconds = 900`
//! (a whole number of seconds, at least 1; a numeric string such as `"900"` works too).
//! A missing or malformed bound denies: a clamp that silently stopped clamping would be
//! worse than one that refuses.
//!
//! It allows rather than abstains because the grant is its whole point, and an abstain
//! carries none. It therefore grants nothing on its own: the built-in authorize policy (or
//! another plugin on the hook) still decides who may reach which device, and under the
//! default combination rule any deny there wins.

use sallyport_plugin::{Authorize, Decision, Grant, Request};

/// The lifetime clamp.
pub struct MaxTtl;

const KEY: &str = "max_ttl_seconds";

fn bound() -> Result<u32, String> {
    let raw = sallyport_plugin::config(KEY).ok_or(format!("max-ttl: `{KEY}` is not configured"))?;
    match raw.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "max-ttl: `{KEY}` must be a whole number of seconds from 1 to {}, not {raw}",
            u32::MAX
        )),
    }
}

impl Authorize for MaxTtl {
    fn authorize(r: &Request) -> Decision {
        match bound() {
            Ok(max) => {
                if r.ttl_seconds > max {
                    sallyport_plugin::log(
                        sallyport_plugin::Level::Debug,
                        &format!("lifetime {} s clamped to {max} s", r.ttl_seconds),
                    );
                }
                Decision::allow_with(Grant::new().with_max_ttl_seconds(max))
            }
            Err(e) => Decision::deny(e),
        }
    }
}

sallyport_plugin::export_authorize!(MaxTtl);

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_plugin::{Action, Level, testing};

    fn decide(ttl: u32) -> Decision {
        MaxTtl::authorize(&Request::builder().ttl_seconds(ttl).build())
    }

    #[test]
    fn every_request_is_allowed_with_the_bound() {
        testing::reset();
        testing::set_config(KEY, "900");
        let clamp = Decision::allow_with(Grant::new().with_max_ttl_seconds(900));
        assert_eq!(decide(3600), clamp);
        assert_eq!(
            decide(60),
            clamp,
            "a shorter request keeps its own lifetime host-side"
        );
        let transient = Request::builder()
            .action(Action::IssueTransient)
            .ttl_seconds(86_400)
            .build();
        assert_eq!(MaxTtl::authorize(&transient), clamp);
    }

    #[test]
    fn clamping_is_logged_at_debug() {
        testing::reset();
        testing::set_config(KEY, "60");
        decide(600);
        decide(30);
        assert_eq!(
            testing::take_logs(),
            [(Level::Debug, "lifetime 600 s clamped to 60 s".to_string())]
        );
    }

    #[test]
    fn a_missing_or_bad_bound_denies() {
        testing::reset();
        assert_eq!(
            decide(10),
            Decision::deny("max-ttl: `max_ttl_seconds` is not configured")
        );
        for bad in ["0", "-5", "ten", "1.5", "99999999999"] {
            testing::set_config(KEY, bad);
            let d = decide(10);
            assert!(
                d.reason()
                    .is_some_and(|r| r.ends_with(&format!("not {bad}"))),
                "{bad}: {d:?}"
            );
        }
        // A TOML string is passed through verbatim, so `"120"` works as well as `120`.
        testing::set_config(KEY, " 120 ");
        assert_eq!(
            decide(10),
            Decision::allow_with(Grant::new().with_max_ttl_seconds(120))
        );
    }
}
