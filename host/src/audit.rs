//! The audit trail: every issuance, denial (with reason), redemption, termination and expiry
//! is a row in the store (written in the same transaction as the change it describes) and a
//! `tracing` event on target `audit`. Neither ever carries a token or password: events are
//! built from names, ids and reasons only.

use crate::store::{AuditEvent, UnixMs};

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
        actor = e.actor.as_deref().unwrap_or("-"),
        subject = e.subject.as_deref().unwrap_or("-"),
        device = e.device.as_deref().unwrap_or("-"),
        object = e.object.as_deref().unwrap_or("-"),
        source = e.source.as_deref().unwrap_or("-"),
        reason = e.reason.as_deref().unwrap_or(""),
    );
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as UnixMs)
}

/// Writes the audit rows sent on `rx` (policy decisions no caller wrote with its own change)
/// until every sender is gone: whatever is waiting goes into one store write, so the rows of
/// many requests join one group commit instead of queueing one commit each.
pub async fn drain(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<AuditEvent>>,
    store: std::sync::Arc<dyn crate::store::Store>,
) {
    const MAX_BATCH: usize = 256;
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        let rows: Vec<AuditEvent> = waiting.drain(..).flatten().collect();
        if let Err(err) = store.audit_many(rows).await {
            tracing::error!(error = %err, "cannot write policy decisions to the audit log");
        }
    }
}
