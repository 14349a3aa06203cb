//! sallyport's built-in source policy (Altostrat transient-access semantics): a connection
//! must come from a known address, inside `allow-only-cidr` if one is set, and not from an
//! RFC 1918 range unless `allow-rfc1918`.
//!
//! Issuance is not checked by default: `allow-only-cidr` and `allow-rfc1918` restrict the
//! connections made later, not the API client that creates the access, so the plugin
//! abstains (it still denies an `allow-only-cidr` that is not a CIDR, so a bad restriction
//! is refused when it is made, not when the user first connects). With the config key
//! `check-issuance = "true"` issuance gets the same checks as a connection, except that an
//! unknown source abstains.

use sallyport_plugin::net::{self, Cidr};
use sallyport_plugin::{Action, CheckSource, Decision, Request};

/// The built-in source policy.
pub struct DefaultSource;

impl CheckSource for DefaultSource {
    fn check_source(r: &Request) -> Decision {
        let only = match r
            .allow_only_cidr
            .as_deref()
            .map(net::parse_cidr_list)
            .transpose()
        {
            Ok(list) => list.filter(|l| !l.is_empty()),
            Err(e) => return Decision::deny(format!("invalid allow-only-cidr: {e}")),
        };
        let check_issuance =
            sallyport_plugin::config("check-issuance").is_some_and(|v| v == "true");
        if r.action != Action::Connect && !check_issuance {
            return Decision::Abstain;
        }
        let Some(source) = r.source.as_deref() else {
            return match r.action {
                Action::Connect => Decision::deny("no source address"),
                _ => Decision::Abstain,
            };
        };
        let Some(ip) = net::parse_source(source) else {
            return Decision::deny(format!("source `{source}` is not an IP address"));
        };
        if let Some(only) = only
            && !only.iter().any(|c| c.contains(ip))
        {
            return Decision::deny(format!(
                "source {ip} is outside the allowed {}",
                join(&only)
            ));
        }
        if !r.allow_rfc1918 && net::is_rfc1918(ip) {
            return Decision::deny(format!("source {ip} is a private (RFC 1918) address"));
        }
        Decision::allow()
    }
}

fn join(cidrs: &[Cidr]) -> String {
    cidrs
        .iter()
        .map(Cidr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

sallyport_plugin::export_check_source!(DefaultSource);

#[cfg(test)]
mod tests;
