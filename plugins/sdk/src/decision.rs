//! Constructors and queries for the generated [`Decision`], [`Grant`] and [`AccessLevel`]
//! types, so a policy reads `Decision::deny("…")` instead of spelling out records.

use crate::{AccessLevel, Decision, Grant};

// Generated type: `derive` is not available here.
#[allow(clippy::derivable_impls)]
impl Default for Grant {
    fn default() -> Self {
        Grant {
            max_ttl_seconds: None,
            access: None,
            obligations: Vec::new(),
        }
    }
}

impl Grant {
    /// A grant that narrows nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps the lifetime at `seconds`.
    pub fn with_max_ttl_seconds(mut self, seconds: u32) -> Self {
        self.max_ttl_seconds = Some(seconds);
        self
    }

    /// Caps the access level at `access`.
    pub fn with_access(mut self, access: AccessLevel) -> Self {
        self.access = Some(access);
        self
    }

    /// Adds an obligation (a named condition the host records with the session).
    pub fn with_obligation(mut self, obligation: impl Into<String>) -> Self {
        self.obligations.push(obligation.into());
        self
    }
}

impl Decision {
    /// Allow with a grant that narrows nothing.
    pub fn allow() -> Self {
        Decision::Allow(Grant::new())
    }

    /// Allow within `grant`.
    pub fn allow_with(grant: Grant) -> Self {
        Decision::Allow(grant)
    }

    /// Deny, with a reason a person can read.
    pub fn deny(reason: impl Into<String>) -> Self {
        Decision::Deny(reason.into())
    }

    /// No opinion: the request is none of this policy's business. The other plugins of the
    /// hook decide (under `deny-overrides` an abstain neither allows nor denies; at least one
    /// plugin must still allow).
    pub fn abstain() -> Self {
        Decision::Abstain
    }

    /// True for [`Decision::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// True for [`Decision::Deny`].
    pub fn is_deny(&self) -> bool {
        matches!(self, Decision::Deny(_))
    }

    /// True for [`Decision::Abstain`].
    pub fn is_abstain(&self) -> bool {
        matches!(self, Decision::Abstain)
    }

    /// The grant of an allow.
    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Decision::Allow(g) => Some(g),
            _ => None,
        }
    }

    /// The reason of a deny.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Decision::Deny(r) => Some(r),
            _ => None,
        }
    }
}

impl AccessLevel {
    /// The WIT name: `full` or `read-only` (also the configuration spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Full => "full",
            AccessLevel::ReadOnly => "read-only",
        }
    }

    /// Parses the WIT name (`full`, `read-only`; `read_only` is accepted too).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(AccessLevel::Full),
            "read-only" | "read_only" => Some(AccessLevel::ReadOnly),
            _ => None,
        }
    }

    /// True if this level is enough for `wanted` (`full` covers `read-only`).
    pub fn covers(self, wanted: AccessLevel) -> bool {
        self == AccessLevel::Full || wanted == AccessLevel::ReadOnly
    }

    /// The more powerful of the two levels.
    pub fn higher(self, other: AccessLevel) -> AccessLevel {
        if self.covers(other) { self } else { other }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_levels_order_by_power() {
        assert!(AccessLevel::Full.covers(AccessLevel::ReadOnly));
        assert!(!AccessLevel::ReadOnly.covers(AccessLevel::Full));
        assert_eq!(
            AccessLevel::ReadOnly.higher(AccessLevel::Full),
            AccessLevel::Full
        );
        assert_eq!(AccessLevel::parse("read-only"), Some(AccessLevel::ReadOnly));
        assert_eq!(
            AccessLevel::parse(AccessLevel::Full.as_str()),
            Some(AccessLevel::Full)
        );
        assert_eq!(AccessLevel::parse("root"), None);
    }

    #[test]
    fn decisions_answer_queries() {
        let d = Decision::allow_with(
            Grant::new()
                .with_max_ttl_seconds(60)
                .with_obligation("audit"),
        );
        assert!(d.is_allow() && !d.is_deny() && !d.is_abstain());
        assert_eq!(d.grant().and_then(|g| g.max_ttl_seconds), Some(60));
        assert_eq!(Decision::deny("no").reason(), Some("no"));
        assert!(Decision::abstain().is_abstain() && !Decision::abstain().is_allow());
        assert_eq!(Decision::abstain(), Decision::Abstain);
    }
}
