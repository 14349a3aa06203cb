//! The audit trail: every issuance, denial (with reason), redemption, termination and expiry
//! is a row in the store (written in the same transaction as the change it describes) and a
//! `tracing` event on target `audit`. Neither ever carries a token or password: events are
//! built from names, ids and reasons only.

use crate::store::{AuditEvent, UnixMs};
use std::borrow::Cow;

/// Starts an event; fill the optional fields with struct update syntax.
pub fn event(at: UnixMs, name: &str, actor: Option<&str>, outcome: &str) -> AuditEvent {
    AuditEvent {
        at,
        event: name.into(),
        actor: actor.map(Into::into),
        outcome: outcome.into(),
        ..AuditEvent::default()
    }
}

/// Emits the `tracing` half of an audit record.
pub fn trace(e: &AuditEvent) {
    tracing::info!(
        target: "audit",
        event = %e.event,
        outcome = %e.outcome,
        actor = &*AuditEvent::clipped(&e.actor).unwrap_or(Cow::Borrowed("-")),
        subject = &*AuditEvent::clipped(&e.subject).unwrap_or(Cow::Borrowed("-")),
        device = &*AuditEvent::clipped(&e.device).unwrap_or(Cow::Borrowed("-")),
        object = &*AuditEvent::clipped(&e.object).unwrap_or(Cow::Borrowed("-")),
        source = &*AuditEvent::clipped(&e.source).unwrap_or(Cow::Borrowed("-")),
        reason = &*AuditEvent::clipped(&e.reason).unwrap_or(Cow::Borrowed("")),
    );
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as UnixMs)
}

/// How long [`drain`] keeps collecting after the first row of a batch arrives. Rows that no
/// answer waits for (policy decisions, connection starts and ends) thus cost one commit per
/// few milliseconds under load instead of one per event, and their commits stay off the
/// path of the connection that caused them.
pub const COALESCE: std::time::Duration = std::time::Duration::from_millis(2);

/// Writes the audit rows sent on `rx` (policy decisions no caller wrote with its own change,
/// connection starts and ends) until every sender is gone or `stop` resolves, then writes
/// what is still queued. Rows arriving within [`COALESCE`] of each other go into one store
/// write, so the rows of many requests join one group commit.
pub async fn drain(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<AuditEvent>>,
    store: std::sync::Arc<dyn crate::store::Store>,
    stop: impl std::future::Future<Output = ()>,
) {
    const MAX_BATCH: usize = 256;
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    tokio::pin!(stop);
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            n = rx.recv_many(&mut waiting, MAX_BATCH) => {
                if n == 0 {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(COALESCE) => {}
                    _ = &mut stop => stopping = true,
                }
            }
            _ = &mut stop => stopping = true,
        }
        while let Ok(rows) = rx.try_recv() {
            waiting.push(rows);
        }
        let rows: Vec<AuditEvent> = waiting.drain(..).flatten().collect();
        if rows.is_empty() {
            continue;
        }
        if let Err(err) = store.audit_many(rows).await {
            tracing::error!(error = %err, "cannot write audit rows");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn drain_writes_what_is_queued_when_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir =
            cap_std::fs::Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir).unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(drain(rx, store.clone(), async move {
            let _ = stop_rx.await;
        }));
        for i in 0..10 {
            tx.send(vec![event(i, "test.row", None, "ok")]).unwrap();
        }
        // The sender stays alive (as the gateway's does); only the stop signal ends the task.
        stop_tx.send(()).unwrap();
        task.await.unwrap();
        let rows = store.audit_log(100).await.unwrap();
        assert_eq!(rows.iter().filter(|r| r.event == "test.row").count(), 10);
        drop(tx);
    }
}
