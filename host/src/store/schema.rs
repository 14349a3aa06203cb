//! SQLite schema migrations, applied in order on start. `PRAGMA user_version` records how many
//! have run, so a newer binary upgrades an older data directory in place.

use rusqlite::Connection;

use super::StoreError;

/// Each entry is one migration; never edit a released one, append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tickets (
    hash        BLOB PRIMARY KEY,
    username    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE TABLE open_sessions (
    id            TEXT PRIMARY KEY,
    token_hash    BLOB NOT NULL UNIQUE,
    username      TEXT NOT NULL,
    device        TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    access        TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    initiated_at  INTEGER,
    ended_at      INTEGER,
    source        TEXT
);
CREATE INDEX open_sessions_due ON open_sessions(expires_at) WHERE state = 'generated';
CREATE TABLE transient_accesses (
    id               TEXT PRIMARY KEY,
    site_id          TEXT NOT NULL,
    device           TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    username         TEXT NOT NULL UNIQUE,
    password_hash    BLOB NOT NULL,
    password_sealed  BLOB NOT NULL,
    port             INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    full_access      INTEGER NOT NULL,
    allow_rfc1918    INTEGER NOT NULL,
    allow_only_cidr  TEXT,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    expired          INTEGER NOT NULL DEFAULT 0,
    revoked_early    INTEGER NOT NULL DEFAULT 0,
    ended_at         INTEGER
);
-- The database itself guarantees that no two live accesses share a port.
CREATE UNIQUE INDEX transient_live_port ON transient_accesses(port) WHERE expired = 0;
CREATE INDEX transient_site ON transient_accesses(site_id, created_at);
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    event    TEXT NOT NULL,
    actor    TEXT,
    subject  TEXT,
    device   TEXT,
    object   TEXT,
    outcome  TEXT NOT NULL,
    reason   TEXT,
    source   TEXT
);
"#,
    // 2: device host keys trusted on first use (devices configured without `host_key`).
    r#"
CREATE TABLE device_host_keys (
    device       TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    first_seen   INTEGER NOT NULL
);
"#,
    // 3: device-side users of transient accesses still to be removed (see store::removals).
    r#"
CREATE TABLE device_user_removals (
    username         TEXT PRIMARY KEY,
    device           TEXT NOT NULL,
    access_id        TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT
);
CREATE INDEX device_user_removals_due ON device_user_removals(next_attempt_at);
CREATE INDEX device_user_removals_access ON device_user_removals(access_id);
"#,
];

/// Brings the schema up to date inside one transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Open(format!(
            "database schema version {current} is newer than this binary knows ({})",
            MIGRATIONS.len()
        )));
    }
    let tx = conn.transaction()?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}
