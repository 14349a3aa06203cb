//! Abuse limits on the SSH listeners, in the spirit of OpenSSH's `PerSourcePenalties`,
//! `MaxStartups` and `PerSourceMaxStartups`: a source address that fails to log in too often
//! (a wrong key or password, or letting the login grace time run out) is refused for a while
//! (the period doubling on each repeat, capped at 10 minutes); at most a fixed number of
//! connections may be unauthenticated at once, and at most a smaller number from one source,
//! so one address cannot hold every slot and lock everyone else out. The login grace timeout
//! is applied by the connection task in [`super::conn`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::slots::{Slot, Slots};

/// Longest a source is refused for.
const MAX_PENALTY: Duration = Duration::from_secs(600);
/// A source with no failure for this long starts over with a clean record.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Prune forgotten sources when the table grows past this.
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone)]
pub struct LimitConfig {
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_source: usize,
    pub penalty_failures: u32,
    pub penalty: Duration,
}

#[derive(Debug)]
struct SourceRecord {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
    /// How many penalties this source has served; each doubles the next.
    strikes: u32,
}

/// Why a connection was turned away before the SSH handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Penalised { remaining: Duration },
    TooManyUnauthenticated,
    TooManyFromSource,
}

/// Counts as one unauthenticated connection (in all and for its source) until dropped.
pub type UnauthGuard = Slot;

#[derive(Debug)]
pub struct Limits {
    cfg: LimitConfig,
    sources: Mutex<HashMap<IpAddr, SourceRecord>>,
    unauthenticated: Slots,
}

impl Limits {
    pub fn new(cfg: LimitConfig) -> Self {
        Self {
            cfg,
            sources: Mutex::new(HashMap::new()),
            unauthenticated: Slots::default(),
        }
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<UnauthGuard, Refusal> {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(&self, ip: IpAddr, now: Instant) -> Result<UnauthGuard, Refusal> {
        if let Some(until) = self.sources.lock().get(&ip).and_then(|r| r.blocked_until)
            && until > now
        {
            return Err(Refusal::Penalised {
                remaining: until - now,
            });
        }
        // Taken before the checks, so a refused connection gives its counts back on return.
        let (guard, taken) = self.unauthenticated.take(ip);
        if taken.before_from_source >= self.cfg.max_unauthenticated_per_source {
            return Err(Refusal::TooManyFromSource);
        }
        if taken.before >= self.cfg.max_unauthenticated {
            return Err(Refusal::TooManyUnauthenticated);
        }
        Ok(guard)
    }

    /// Records a failed login from `ip`; returns the penalty if this failure started one.
    pub fn failure(&self, ip: IpAddr) -> Option<Duration> {
        self.failure_at(ip, Instant::now())
    }

    fn failure_at(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut sources = self.sources.lock();
        if sources.len() >= PRUNE_AT {
            sources.retain(|_, r| {
                now.duration_since(r.last_failure) < FORGET_AFTER
                    || r.blocked_until.is_some_and(|u| u > now)
            });
        }
        let r = sources.entry(ip).or_insert(SourceRecord {
            failures: 0,
            last_failure: now,
            blocked_until: None,
            strikes: 0,
        });
        if now.duration_since(r.last_failure) >= FORGET_AFTER {
            r.failures = 0;
            r.strikes = 0;
        }
        r.last_failure = now;
        r.failures += 1;
        if r.failures < self.cfg.penalty_failures {
            return None;
        }
        let penalty = self
            .cfg
            .penalty
            .saturating_mul(1u32 << r.strikes.min(16))
            .min(MAX_PENALTY);
        r.failures = 0;
        r.strikes = r.strikes.saturating_add(1);
        r.blocked_until = Some(now + penalty);
        Some(penalty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits::new(LimitConfig {
            max_unauthenticated: max,
            max_unauthenticated_per_source: usize::MAX,
            penalty_failures: 3,
            penalty: Duration::from_secs(10),
        })
    }

    #[test]
    fn penalty_after_failures_doubles_and_expires() {
        let l = limits(100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(l.failure_at(ip, t0), None);
        assert_eq!(l.failure_at(ip, t0), None);
        assert_eq!(l.failure_at(ip, t0), Some(Duration::from_secs(10)));
        assert!(matches!(
            l.admit_at(ip, t0 + Duration::from_secs(5)),
            Err(Refusal::Penalised { .. })
        ));
        assert!(
            l.admit_at(other, t0).is_ok(),
            "other sources are unaffected"
        );
        let t1 = t0 + Duration::from_secs(11);
        assert!(l.admit_at(ip, t1).is_ok());
        for _ in 0..2 {
            assert_eq!(l.failure_at(ip, t1), None);
        }
        assert_eq!(l.failure_at(ip, t1), Some(Duration::from_secs(20)));
    }

    #[test]
    fn unauthenticated_cap_counts_live_guards() {
        let l = limits(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = l.admit(ip).unwrap();
        let _b = l.admit(ip).unwrap();
        assert_eq!(l.admit(ip).unwrap_err(), Refusal::TooManyUnauthenticated);
        drop(a);
        assert!(l.admit(ip).is_ok());
    }

    #[test]
    fn one_source_cannot_hold_every_unauthenticated_slot() {
        let l = Limits::new(LimitConfig {
            max_unauthenticated: 4,
            max_unauthenticated_per_source: 2,
            penalty_failures: 3,
            penalty: Duration::from_secs(10),
        });
        let (busy, other): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let a = l.admit(busy).unwrap();
        let _b = l.admit(busy).unwrap();
        assert_eq!(l.admit(busy).unwrap_err(), Refusal::TooManyFromSource);
        // The refusal gave its counts back: the others still get in.
        assert!(l.admit(other).is_ok());
        let _c = l.admit(other).unwrap();
        drop(a);
        assert!(l.admit(busy).is_ok());
        // Every refused or finished admission gave its slot back.
        assert_eq!(l.unauthenticated.open(), 2);
    }
}
