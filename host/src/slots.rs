//! Counting connections that are open at once, in all and per source address, so a listener
//! can refuse the one over a limit. Shared by the SSH listeners (unauthenticated connections)
//! and the API (every connection).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

#[derive(Debug, Default)]
struct Counts {
    total: AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

/// The open connections of one listener (cheap to clone; clones share the counts).
#[derive(Debug, Clone, Default)]
pub struct Slots(Arc<Counts>);

/// One connection counted in its [`Slots`] (in all and for its source) until dropped.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

/// What a new connection found when it took its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Connections open before this one.
    pub before: usize,
    /// Of those, from the same source address.
    pub before_from_source: usize,
}

impl Slots {
    /// Counts a new connection from `ip`. The slot is taken whatever the counts say, so a
    /// caller that turns the connection away gives it back simply by dropping it.
    pub fn take(&self, ip: IpAddr) -> (Slot, Taken) {
        let before_from_source = {
            let mut m = self.0.per_source.lock();
            let n = m.entry(ip).or_default();
            *n += 1;
            *n - 1
        };
        let before = self.0.total.fetch_add(1, Ordering::AcqRel);
        let slot = Slot {
            counts: self.0.clone(),
            ip,
        };
        (
            slot,
            Taken {
                before,
                before_from_source,
            },
        )
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.0.total.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        let mut m = self.counts.per_source.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_all_and_per_source_and_gives_back_on_drop() {
        let slots = Slots::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let (s1, t1) = slots.take(a);
        assert_eq!(
            t1,
            Taken {
                before: 0,
                before_from_source: 0
            }
        );
        let (s2, t2) = slots.take(a);
        assert_eq!(
            t2,
            Taken {
                before: 1,
                before_from_source: 1
            }
        );
        let (_s3, t3) = slots.take(b);
        assert_eq!(
            t3,
            Taken {
                before: 2,
                before_from_source: 0
            }
        );
        drop(s1);
        drop(s2);
        assert_eq!(slots.open(), 1);
        let (_s4, t4) = slots.take(a);
        assert_eq!(
            t4,
            Taken {
                before: 1,
                before_from_source: 0
            }
        );
        assert_eq!(slots.0.per_source.lock().len(), 2);
    }
}
