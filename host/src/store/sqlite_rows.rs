//! Rows of the SQLite backend: the audit insert and the mapping of `open_sessions` and
//! `transient_accesses` rows to their types (a row that does not decode is reported as
//! [`StoreError::Corrupt`], never a panic).

use rusqlite::{Connection, Row, params};

use crate::config::AccessLevel;
use crate::store::{
    AuditEvent, OpenSession, SessionState, StoreError, TokenHash, TransientAccess, TransientKind,
};

/// The audit table's columns, in the order of [`AuditEvent`]'s fields.
pub(super) const AUDIT_COLS: &str =
    "at, event, actor, subject, device, object, outcome, reason, source";

pub(super) fn insert_audit(conn: &Connection, e: &AuditEvent) -> Result<(), StoreError> {
    let clip = AuditEvent::clipped;
    conn.prepare_cached(&format!(
        "INSERT INTO audit ({AUDIT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        e.at,
        e.event,
        clip(&e.actor),
        clip(&e.subject),
        clip(&e.device),
        clip(&e.object),
        e.outcome,
        clip(&e.reason),
        clip(&e.source)
    ])?;
    Ok(())
}

pub(super) fn audit_row(r: &Row<'_>) -> rusqlite::Result<Result<AuditEvent, StoreError>> {
    Ok(Ok(AuditEvent {
        at: r.get(0)?,
        event: r.get(1)?,
        actor: r.get(2)?,
        subject: r.get(3)?,
        device: r.get(4)?,
        object: r.get(5)?,
        outcome: r.get(6)?,
        reason: r.get(7)?,
        source: r.get(8)?,
    }))
}

pub(super) fn access_str(a: AccessLevel) -> &'static str {
    match a {
        AccessLevel::Full => "full",
        AccessLevel::ReadOnly => "read-only",
    }
}

pub(super) fn hash_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<TokenHash> {
    let v: Vec<u8> = row.get(idx)?;
    v.try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(idx, "hash".into(), rusqlite::types::Type::Blob)
    })
}

pub(super) const SESSION_COLS: &str = "id, token_hash, username, device, requested_by, access, state, created_at, expires_at, initiated_at, ended_at, source";

pub(super) fn session_row(row: &Row<'_>) -> rusqlite::Result<Result<OpenSession, StoreError>> {
    let access: String = row.get(5)?;
    let state: String = row.get(6)?;
    let access = match access.as_str() {
        "full" => AccessLevel::Full,
        "read-only" => AccessLevel::ReadOnly,
        other => return Ok(Err(StoreError::Corrupt(format!("access {other:?}")))),
    };
    let state = match SessionState::parse(&state) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(OpenSession {
        id: row.get(0)?,
        token_hash: hash_col(row, 1)?,
        user: row.get(2)?,
        device: row.get(3)?,
        requested_by: row.get(4)?,
        access,
        state,
        created_at: row.get(7)?,
        expires_at: row.get(8)?,
        initiated_at: row.get(9)?,
        ended_at: row.get(10)?,
        source: row.get(11)?,
    }))
}

pub(super) const TRANSIENT_COLS: &str = "id, site_id, device, created_by, username, password_hash, password_sealed, port, kind, \
     full_access, allow_rfc1918, allow_only_cidr, created_at, expires_at, expired, revoked_early, ended_at";

pub(super) fn transient_row(
    row: &Row<'_>,
) -> rusqlite::Result<Result<TransientAccess, StoreError>> {
    let id: String = row.get(0)?;
    let site: String = row.get(1)?;
    let kind: String = row.get(8)?;
    let (id, site_id, kind) = match (id.parse(), site.parse(), TransientKind::parse(&kind)) {
        (Ok(i), Ok(s), Ok(k)) => (i, s, k),
        _ => return Ok(Err(StoreError::Corrupt(format!("transient access {id}")))),
    };
    Ok(Ok(TransientAccess {
        id,
        site_id,
        device: row.get(2)?,
        created_by: row.get(3)?,
        username: row.get(4)?,
        password_hash: hash_col(row, 5)?,
        password_sealed: row.get(6)?,
        port: row.get(7)?,
        kind,
        full_access: row.get(9)?,
        allow_rfc1918: row.get(10)?,
        allow_only_cidr: row.get(11)?,
        created_at: row.get(12)?,
        expires_at: row.get(13)?,
        expired: row.get(14)?,
        revoked_early: row.get(15)?,
        ended_at: row.get(16)?,
    }))
}

/// Collects rows mapped by a `*_row` function, surfacing both SQL and decoding errors.
pub(super) fn collect<T>(
    rows: impl Iterator<Item = rusqlite::Result<Result<T, StoreError>>>,
) -> Result<Vec<T>, StoreError> {
    rows.map(|r| r.map_err(StoreError::from).and_then(|x| x))
        .collect()
}

/// `SELECT {cols} FROM {from} {filter}`, each row mapped by `row` (a `*_row` function).
pub(super) fn select_where<T>(
    conn: &Connection,
    (cols, from): (&str, &str),
    filter: &str,
    args: impl rusqlite::Params,
    row: fn(&Row<'_>) -> rusqlite::Result<Result<T, StoreError>>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {cols} FROM {from} {filter}"))?;
    let rows = stmt.query_map(args, row)?;
    collect(rows)
}

pub(super) fn sessions_where(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<OpenSession>, StoreError> {
    select_where(
        conn,
        (SESSION_COLS, "open_sessions"),
        filter,
        args,
        session_row,
    )
}

pub(super) fn transients_where(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<TransientAccess>, StoreError> {
    select_where(
        conn,
        (TRANSIENT_COLS, "transient_accesses"),
        filter,
        args,
        transient_row,
    )
}
