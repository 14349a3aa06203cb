//! A short-lived memory of login tickets already found in the store, so that an automation
//! client sending thousands of requests a second with one ticket does not cost a SQLite read
//! (and its hash lookup) each time.
//!
//! What is remembered is the ticket's hash, its user and its expiry, for at most [`MAX_AGE`]:
//! a ticket past its own `expires_at` is never answered from here, and logout on this gateway
//! forgets the ticket before it answers. Logout runs through [`TicketCache::forget`], which
//! also bumps a generation counter so that a lookup that read the row *before* the delete
//! cannot put it back afterwards. The bound on staleness is there for a store shared by
//! several gateways (a later PostgreSQL deployment): a logout on another instance is seen here
//! within [`MAX_AGE`]. The table is bounded by [`MAX_ENTRIES`]; when full it is cleared.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::store::{TokenHash, UnixMs};

/// Longest time a ticket is answered from memory before the store is asked again.
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// Most tickets remembered at once.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug)]
struct Entry {
    username: String,
    expires_at: UnixMs,
    cached_at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<TokenHash, Entry>,
    /// Bumped by every `forget`; see the module docs.
    generation: u64,
}

/// Recently seen tickets: hash → user.
#[derive(Debug, Default)]
pub struct TicketCache {
    inner: Mutex<Inner>,
}

/// Taken before the store is read; [`TicketCache::remember`] ignores the row if a ticket was
/// forgotten since.
#[derive(Debug, Clone, Copy)]
pub struct Generation(u64);

impl TicketCache {
    /// The user of `hash` if it was found in the store less than [`MAX_AGE`] ago and has not
    /// expired at `now`.
    pub fn lookup(&self, hash: &TokenHash, now: UnixMs) -> Option<String> {
        let inner = self.inner.lock();
        let e = inner.entries.get(hash)?;
        (e.expires_at > now && e.cached_at.elapsed() < MAX_AGE).then(|| e.username.clone())
    }

    pub fn generation(&self) -> Generation {
        Generation(self.inner.lock().generation)
    }

    /// Remembers a row just read from the store, unless a ticket was forgotten after `seen`.
    pub fn remember(&self, seen: Generation, hash: TokenHash, username: &str, expires_at: UnixMs) {
        let mut inner = self.inner.lock();
        if inner.generation != seen.0 {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(
            hash,
            Entry {
                username: username.to_owned(),
                expires_at,
                cached_at: Instant::now(),
            },
        );
    }

    /// Forgets `hash` (logout).
    pub fn forget(&self, hash: &TokenHash) {
        let mut inner = self.inner.lock();
        inner.entries.remove(hash);
        inner.generation = inner.generation.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_until_expiry() {
        let c = TicketCache::default();
        let g = c.generation();
        c.remember(g, [1; 32], "alice", 1_000);
        assert_eq!(c.lookup(&[1; 32], 999).as_deref(), Some("alice"));
        assert_eq!(
            c.lookup(&[1; 32], 1_000),
            None,
            "expired at its own expires_at"
        );
        assert_eq!(c.lookup(&[2; 32], 0), None);
    }

    #[test]
    fn forget_wins_over_a_lookup_that_read_before_it() {
        let c = TicketCache::default();
        let before = c.generation();
        // A logout completes between the lookup's store read and its remember.
        c.forget(&[1; 32]);
        c.remember(before, [1; 32], "alice", i64::MAX);
        assert_eq!(c.lookup(&[1; 32], 0), None);
        let g = c.generation();
        c.remember(g, [1; 32], "alice", i64::MAX);
        assert_eq!(c.lookup(&[1; 32], 0).as_deref(), Some("alice"));
        c.forget(&[1; 32]);
        assert_eq!(c.lookup(&[1; 32], 0), None);
    }

    #[test]
    fn bounded() {
        let c = TicketCache::default();
        let g = c.generation();
        for i in 0..=MAX_ENTRIES {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            c.remember(g, h, "u", i64::MAX);
        }
        assert!(c.inner.lock().entries.len() <= MAX_ENTRIES);
    }
}
