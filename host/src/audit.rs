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
