//! Live web consoles by the open session they redeemed, so that terminating the session (REST
//! or the tracking page) cuts them. Like the SSH registry, a console registers after redemption
//! and is then checked against the store once: a termination announced in between would
//! otherwise be missed.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::issuer::Issuer;

/// One live console: who it is for, and the channel its task watches for a cut.
#[derive(Debug)]
pub struct Console {
    pub session: String,
    cut: watch::Sender<Option<String>>,
}

impl Console {
    pub fn new(session: String) -> Self {
        Self {
            session,
            cut: watch::Sender::new(None),
        }
    }

    /// Asks the console's task to end with `message`.
    pub fn cut(&self, message: &str) {
        self.cut.send_replace(Some(message.to_string()));
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.cut.subscribe()
    }
}

/// The registry; entries are weak, a console that ended simply drops out.
#[derive(Debug, Default)]
pub struct Consoles {
    by_session: Mutex<HashMap<String, Vec<Weak<Console>>>>,
}

impl Consoles {
    /// Registers `console`, then cuts it at once if its session already ended.
    pub async fn register(&self, console: &Arc<Console>, issuer: &Issuer) {
        {
            let mut map = self.by_session.lock();
            map.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
            map.entry(console.session.clone())
                .or_default()
                .push(Arc::downgrade(console));
        }
        if issuer.session_is_over(&console.session).await {
            console.cut("sallyport: the session has ended");
        }
    }

    /// Cuts every console of `session`.
    pub fn cut(&self, session: &str, message: &str) {
        let list = self.by_session.lock().remove(session).unwrap_or_default();
        for c in list.iter().filter_map(Weak::upgrade) {
            c.cut(message);
        }
    }

    /// Cuts every console (gateway shutdown).
    pub fn cut_all(&self, message: &str) {
        let all: Vec<_> = self.by_session.lock().drain().collect();
        for c in all.iter().flat_map(|(_, v)| v).filter_map(Weak::upgrade) {
            c.cut(message);
        }
    }

    /// Checks every console against the store; used when lifecycle events were lost.
    pub async fn recheck(&self, issuer: &Issuer) {
        let all: Vec<Arc<Console>> = self
            .by_session
            .lock()
            .values()
            .flatten()
            .filter_map(Weak::upgrade)
            .collect();
        for c in all {
            if issuer.session_is_over(&c.session).await {
                c.cut("sallyport: the session has ended");
            }
        }
    }

    /// How many consoles are open.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.by_session
            .lock()
            .values()
            .flatten()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

/// Whether the session is over per the store; a read failure does not cut a healthy console.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_reaches_every_console_of_the_session_only() {
        let consoles = Consoles::default();
        let a = Arc::new(Console::new("s1".into()));
        let b = Arc::new(Console::new("s1".into()));
        let c = Arc::new(Console::new("s2".into()));
        for x in [&a, &b, &c] {
            consoles
                .by_session
                .lock()
                .entry(x.session.clone())
                .or_default()
                .push(Arc::downgrade(x));
        }
        let (ra, rb, rc) = (a.subscribe(), b.subscribe(), c.subscribe());
        consoles.cut("s1", "bye");
        assert_eq!(ra.borrow().as_deref(), Some("bye"));
        assert_eq!(rb.borrow().as_deref(), Some("bye"));
        assert_eq!(rc.borrow().as_deref(), None);
        assert_eq!(consoles.open(), 1);
        consoles.cut_all("down");
        assert_eq!(rc.borrow().as_deref(), Some("down"));
    }
}
