//! Listeners of transient accesses, as the issuer sees them: so that a port the API hands out
//! accepts connections by the time the answer arrives.
//!
//! A listener service (`tcp::listeners::Listeners`, one per kind of access) says it serves a
//! kind ([`Listening::serve`]), then reports each access whose listener it opened, or failed to
//! open ([`Listening::opened`]). Creating an access waits for that report, at most
//! [`LISTEN_WAIT`], before answering; with no service for the kind (a test driving the issuer
//! alone), it does not wait. At start, [`Listening::restored`] resolves once every service has
//! reopened the listeners of accesses still live, so the gateway says it is up only then.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use crate::store::TransientKind;

/// The longest an API answer waits for the new access's listener.
pub const LISTEN_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Listening {
    /// Services running, per kind (a count, so a service restarting in a test is fine).
    served: Mutex<HashMap<&'static str, usize>>,
    /// Answers waiting for a listener, by access id.
    waiting: Mutex<HashMap<uuid::Uuid, oneshot::Sender<()>>>,
    /// Kinds whose service has restored the listeners of live accesses.
    restored: watch::Sender<Vec<&'static str>>,
}

impl Default for Listening {
    fn default() -> Self {
        Self {
            served: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            restored: watch::channel(Vec::new()).0,
        }
    }
}

/// Held by a running listener service; the kind is no longer served once it is dropped.
#[derive(Debug)]
pub struct Serving<'a> {
    listening: &'a Listening,
    kind: &'static str,
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        let mut served = self.listening.served.lock();
        if let Some(n) = served.get_mut(self.kind) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                served.remove(self.kind);
            }
        }
    }
}

impl Listening {
    /// A listener service for `kind` starts.
    pub fn serve(&self, kind: TransientKind) -> Serving<'_> {
        *self.served.lock().entry(kind.as_str()).or_default() += 1;
        Serving {
            listening: self,
            kind: kind.as_str(),
        }
    }

    /// The service for `kind` has reopened the listeners of every live access.
    pub fn mark_restored(&self, kind: TransientKind) {
        self.restored.send_modify(|r| {
            if !r.contains(&kind.as_str()) {
                r.push(kind.as_str());
            }
        });
    }

    /// Resolves once every kind in `kinds` has been restored.
    pub async fn restored(&self, kinds: &[TransientKind]) {
        let mut rx = self.restored.subscribe();
        let _ = rx
            .wait_for(|r| kinds.iter().all(|k| r.contains(&k.as_str())))
            .await;
    }

    /// Registers a wait for the listener of access `id`, before the service is told about it;
    /// `None` if no service serves `kind`.
    pub fn expect(&self, kind: TransientKind, id: uuid::Uuid) -> Option<oneshot::Receiver<()>> {
        if !self.served.lock().contains_key(kind.as_str()) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(id, tx);
        Some(rx)
    }

    /// Waits for the listener `rx` was registered for, at most [`LISTEN_WAIT`].
    pub async fn wait(&self, id: uuid::Uuid, rx: oneshot::Receiver<()>) {
        /// Removes the registration however the wait ends (also when the caller goes away).
        struct Forget<'a>(&'a Listening, uuid::Uuid);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.waiting.lock().remove(&self.1);
            }
        }
        let _forget = Forget(self, id);
        if tokio::time::timeout(LISTEN_WAIT, rx).await.is_err() {
            tracing::warn!(access = %id, "the access's listener did not report within {LISTEN_WAIT:?}; answering anyway");
        }
    }

    /// The listener of access `id` was opened, or its first attempt failed (it is retried):
    /// either way, the answer need not wait longer.
    pub fn opened(&self, id: uuid::Uuid) {
        if let Some(tx) = self.waiting.lock().remove(&id) {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_only_for_served_kinds_and_until_the_listener_reports() {
        let l = Listening::default();
        let id = uuid::Uuid::new_v4();
        assert!(
            l.expect(TransientKind::Ssh, id).is_none(),
            "nobody serves ssh"
        );
        let serving = l.serve(TransientKind::Ssh);
        let mut rx = l.expect(TransientKind::Ssh, id).unwrap();
        assert!(rx.try_recv().is_err(), "no report yet");
        l.opened(id);
        assert!(rx.try_recv().is_ok());
        drop(serving);
        assert!(
            l.expect(TransientKind::Ssh, id).is_none(),
            "the service stopped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_listener_that_never_reports_costs_at_most_the_wait() {
        let l = Listening::default();
        let _serving = l.serve(TransientKind::Winbox);
        let id = uuid::Uuid::new_v4();
        let rx = l.expect(TransientKind::Winbox, id).unwrap();
        let start = tokio::time::Instant::now();
        l.wait(id, rx).await;
        assert_eq!(start.elapsed(), LISTEN_WAIT);
        assert!(l.waiting.lock().is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_wait_leaves_nothing_behind() {
        let l = Listening::default();
        let _serving = l.serve(TransientKind::Ssh);
        let id = uuid::Uuid::new_v4();
        let rx = l.expect(TransientKind::Ssh, id).unwrap();
        // The caller (an HTTP request) goes away mid-wait.
        let _ = tokio::time::timeout(Duration::from_millis(10), l.wait(id, rx)).await;
        assert!(l.waiting.lock().is_empty());
    }

    #[tokio::test]
    async fn restored_resolves_when_every_kind_is() {
        let l = std::sync::Arc::new(Listening::default());
        let both = [TransientKind::Ssh, TransientKind::Winbox];
        l.mark_restored(TransientKind::Ssh);
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.restored(&both).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        l.mark_restored(TransientKind::Winbox);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
