//! A bound on the `connect.refused` audit rows one source address can cause.
//!
//! Every refused connection (a source outside `allow_only_cidr`, a bad one-time key, a policy
//! deny) is audited, but a scanner hammering a transient port would otherwise turn each TCP
//! connect into a durable row. Per source, the first [`ROWS_PER_WINDOW`] refusals of each
//! [`WINDOW_MS`] are recorded; later ones are counted, and the next recorded row from that
//! source says how many were left out. Metrics still count every refusal. The table of
//! sources is bounded too: past [`MAX_SOURCES`] it forgets finished windows first, then all.

use std::collections::HashMap;

use parking_lot::Mutex;

/// Length of a source's counting window.
pub const WINDOW_MS: i64 = 60_000;
/// Refusal rows recorded per source and window.
pub const ROWS_PER_WINDOW: u32 = 20;
/// Sources tracked at once.
const MAX_SOURCES: usize = 10_000;

#[derive(Debug)]
struct Window {
    start_ms: i64,
    rows: u32,
    /// Refusals not recorded since the last recorded one.
    skipped: u64,
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Record it; `skipped` refusals from the same source were left out before it.
    Record { skipped: u64 },
    /// Leave it out; `first` is true for the first one left out in this window.
    Skip { first: bool },
}

/// Per-source refusal counters.
#[derive(Debug, Default)]
pub struct RefusalLimiter {
    sources: Mutex<HashMap<String, Window>>,
}

impl RefusalLimiter {
    /// Decides whether the refusal of `source` at `now_ms` gets an audit row.
    pub fn admit(&self, source: &str, now_ms: i64) -> Admit {
        let mut sources = self.sources.lock();
        if sources.len() >= MAX_SOURCES && !sources.contains_key(source) {
            sources.retain(|_, w| now_ms - w.start_ms < WINDOW_MS);
            if sources.len() >= MAX_SOURCES {
                sources.clear();
            }
        }
        let w = sources.entry(source.to_string()).or_insert(Window {
            start_ms: now_ms,
            rows: 0,
            skipped: 0,
        });
        if now_ms - w.start_ms >= WINDOW_MS {
            w.start_ms = now_ms;
            w.rows = 0;
        }
        if w.rows < ROWS_PER_WINDOW {
            w.rows += 1;
            Admit::Record {
                skipped: std::mem::take(&mut w.skipped),
            }
        } else {
            w.skipped += 1;
            Admit::Skip {
                first: w.skipped == 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_a_bounded_number_of_rows_per_window_and_the_count_of_the_rest() {
        let l = RefusalLimiter::default();
        for _ in 0..ROWS_PER_WINDOW {
            assert_eq!(l.admit("192.0.2.1", 1_000), Admit::Record { skipped: 0 });
        }
        assert_eq!(l.admit("192.0.2.1", 1_001), Admit::Skip { first: true });
        for _ in 0..4 {
            assert_eq!(l.admit("192.0.2.1", 1_002), Admit::Skip { first: false });
        }
        // Another source is not affected.
        assert_eq!(l.admit("192.0.2.2", 1_003), Admit::Record { skipped: 0 });
        // A new window records again, saying how many were left out.
        assert_eq!(
            l.admit("192.0.2.1", 1_000 + WINDOW_MS),
            Admit::Record { skipped: 5 }
        );
        assert_eq!(
            l.admit("192.0.2.1", 1_001 + WINDOW_MS),
            Admit::Record { skipped: 0 }
        );
    }

    #[test]
    fn the_table_of_sources_stays_bounded() {
        let l = RefusalLimiter::default();
        for i in 0..(MAX_SOURCES + 10) {
            l.admit(&format!("source-{i}"), 0);
        }
        assert!(l.sources.lock().len() <= MAX_SOURCES);
        // Finished windows are forgotten first.
        for i in 0..5 {
            l.admit(&format!("late-{i}"), WINDOW_MS * 2);
        }
        assert!(l.sources.lock().len() <= MAX_SOURCES);
    }
}
