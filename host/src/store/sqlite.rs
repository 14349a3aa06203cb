//! The embedded SQLite backend of [`Store`].
//!
//! One writer thread owns the only read-write connection and commits in groups: it takes every
//! write that is waiting, runs each inside its own savepoint (so one failing write does not undo
//! the others), commits once with `synchronous = FULL` in WAL mode, and only then answers each
//! caller. An acknowledged write therefore survives `kill -9` and power loss, and under load one
//! fsync covers many writes. Reads use a small pool of read-only connections and never wait for
//! the writer (WAL readers see the last commit).
//!
//! The database file is opened through the data directory's `cap-std` handle
//! (`/proc/self/fd/<dirfd>/sallyport.db`), so its location derives only from that handle.

use std::os::fd::AsRawFd;
use std::sync::mpsc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use super::schema;
use super::{
    AuditEvent, Expired, OpenSession, PortPool, SessionState, Store, StoreError, Ticket, TokenHash,
    TransientAccess, UnixMs,
};

const DB_FILE: &str = "sallyport.db";
const READERS: usize = 4;
/// Most writes one commit covers; bounds the latency a single group adds.
const MAX_GROUP: usize = 1024;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(Option<&Connection>) -> Completion + Send>;

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    readers: Vec<Mutex<Connection>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn db_path(dir: &cap_std::fs::Dir) -> String {
    format!("/proc/self/fd/{}/{DB_FILE}", dir.as_raw_fd())
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `dir` and runs migrations.
    pub fn open(dir: &cap_std::fs::Dir) -> Result<Self, StoreError> {
        let path = db_path(dir);
        let mut writer = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer.pragma_update(None, "foreign_keys", "ON")?;
        // Checkpoints run on their own thread (below) so no commit waits for one.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut writer)?;
        let checkpointer = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        checkpointer.pragma_update(None, "synchronous", "FULL")?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            readers.push(Mutex::new(r));
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let (stop_checkpoints, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("sallyport-store-writer".into())
            .spawn(move || {
                writer_loop(writer, rx);
                let _ = stop_checkpoints.send(());
            })
            .map_err(|e| StoreError::Open(format!("cannot start writer thread: {e}")))?;
        std::thread::Builder::new()
            .name("sallyport-store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, stopped))
            .map_err(|e| StoreError::Open(format!("cannot start checkpoint thread: {e}")))?;
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            readers,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Stops accepting writes, lets the writer commit what it has and waits for it.
    pub fn close(&self) {
        self.jobs.lock().take();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
    }

    /// Runs `f` in the next group commit and resolves once that commit is durable.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(StoreError::Closed),
            };
            Box::new(move |commit: Result<(), StoreError>| {
                let _ = tx.send(commit.and(result));
            })
        });
        let sender = self.jobs.lock().clone().ok_or(StoreError::Closed)?;
        sender.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read on a pooled read-only connection. Reads are point lookups or short scans,
    /// so they run inline rather than on a blocking thread.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        for r in &self.readers {
            if let Some(conn) = r.try_lock() {
                return f(&conn);
            }
        }
        let conn = self.readers[0].lock();
        f(&conn)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Cached statements: every write of a group runs these, so they are not parsed each time.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match f(conn) {
        Ok(v) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let began = conn.execute_batch("BEGIN IMMEDIATE");
        let live = began.is_ok().then_some(&conn);
        let completions: Vec<Completion> = group.into_iter().map(|job| job(live)).collect();
        let committed = match began {
            Err(e) => Err(StoreError::Db(e)),
            Ok(()) => conn.execute_batch("COMMIT").map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                StoreError::Db(e)
            }),
        };
        if let Err(e) = &committed {
            tracing::error!(error = %e, "store commit failed; {} writes answered with an error", completions.len());
        }
        for done in completions {
            done(match &committed {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Open(format!("commit failed: {e}"))),
            });
        }
    }
}

/// WAL frames (of 4 KiB pages by default: 64 MiB) above which a checkpoint also restarts the WAL.
const WAL_TRUNCATE_FRAMES: i64 = 16_384;

/// Copies committed WAL frames into the database file every 250 ms, and truncates the WAL once
/// when the store closes.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    loop {
        match stop.recv_timeout(std::time::Duration::from_millis(250)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = checkpoint_once(&conn, WAL_TRUNCATE_FRAMES) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                }
            }
            _ => {
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                return;
            }
        }
    }
}

/// One checkpoint. PASSIVE never blocks the writer or readers, but it never resets the WAL
/// either: under steady load some reader always holds a read mark, and the WAL file grows
/// without bound (~400 MB in a 10 s issuance benchmark). So once the WAL holds more than
/// `restart_above` frames, a RESTART checkpoint waits (busy timeout) for the readers of the
/// moment to finish — their transactions are single queries — so the next commit writes the
/// WAL from its start again. RESTART rather than TRUNCATE: the file keeps its size (bounded by
/// the threshold plus one burst) and no commit waits for a truncation and its fsync.
fn checkpoint_once(conn: &Connection, restart_above: i64) -> Result<(), rusqlite::Error> {
    let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    if frames > restart_above {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_ticket(&self, t: Ticket, audit: AuditEvent) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("INSERT INTO tickets (hash, username, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![&t.hash[..], t.username, t.created_at, t.expires_at])?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn ticket(&self, hash: TokenHash, now: UnixMs) -> Result<Option<Ticket>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT hash, username, created_at, expires_at FROM tickets WHERE hash = ?1 AND expires_at > ?2",
            )?
            .query_row(params![&hash[..], now], |r| {
                Ok(Ticket { hash: hash_col(r, 0)?, username: r.get(1)?, created_at: r.get(2)?, expires_at: r.get(3)? })
            })
            .optional()?)
        })
    }

    async fn delete_ticket(&self, hash: TokenHash, audit: AuditEvent) -> Result<bool, StoreError> {
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM tickets WHERE hash = ?1")?
                .execute(params![&hash[..]])?;
            if n > 0 {
                insert_audit(c, &audit)?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn insert_session(
        &self,
        s: OpenSession,
        audit: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached(&format!(
                "INSERT INTO open_sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?
            .execute(params![
                s.id,
                &s.token_hash[..],
                s.user,
                s.device,
                s.requested_by,
                access_str(s.access),
                s.state.as_str(),
                s.created_at,
                s.expires_at,
                s.initiated_at,
                s.ended_at,
                s.source
            ])?;
            audit.iter().try_for_each(|e| insert_audit(c, e))
        })
        .await
    }

    async fn redeem_session(
        &self,
        hash: TokenHash,
        user: &str,
        device: &str,
        now: UnixMs,
        source: Option<String>,
    ) -> Result<Option<OpenSession>, StoreError> {
        let (user, device) = (user.to_owned(), device.to_owned());
        self.write(move |c| {
            let mut found = sessions_where(
                c,
                "WHERE token_hash = ?1 AND state = 'generated' AND expires_at > ?2 AND username = ?3 AND device = ?4",
                params![&hash[..], now, user, device],
            )?;
            let Some(mut s) = found.pop() else { return Ok(None) };
            // The conditional update is the single-use guarantee; the SELECT above only
            // fetches the row to return.
            let n = c
                .prepare_cached(
                    "UPDATE open_sessions SET state = 'initiated', initiated_at = ?2, source = ?3
                     WHERE id = ?1 AND state = 'generated'",
                )?
                .execute(params![s.id, now, source])?;
            if n != 1 {
                return Ok(None);
            }
            s.state = SessionState::Initiated;
            s.initiated_at = Some(now);
            s.source = source.clone();
            let mut e = s.audit_event(now, "session.redeemed", Some(&s.user), "allow");
            e.source = source;
            insert_audit(c, &e)?;
            Ok(Some(s))
        })
        .await
    }

    async fn terminate_sessions(
        &self,
        ids: Vec<String>,
        actor: &str,
        source: Option<String>,
        now: UnixMs,
    ) -> Result<Vec<OpenSession>, StoreError> {
        let actor = actor.to_owned();
        self.write(move |c| {
            let mut done = Vec::new();
            for id in ids {
                let mut rows = sessions_where(
                    c,
                    "WHERE id = ?1 AND state IN ('generated', 'initiated')",
                    params![id],
                )?;
                let Some(mut s) = rows.pop() else { continue };
                c.prepare_cached(
                    "UPDATE open_sessions SET state = 'terminated', ended_at = ?2
                     WHERE id = ?1 AND state IN ('generated', 'initiated')",
                )?
                .execute(params![s.id, now])?;
                s.state = SessionState::Terminated;
                s.ended_at = Some(now);
                let e = AuditEvent {
                    source: source.clone(),
                    ..s.audit_event(now, "session.terminated", Some(&actor), "ok")
                };
                insert_audit(c, &e)?;
                done.push(s);
            }
            Ok(done)
        })
        .await
    }

    async fn close_session(
        &self,
        id: &str,
        now: UnixMs,
    ) -> Result<Option<OpenSession>, StoreError> {
        let id = id.to_owned();
        self.write(move |c| {
            let live = "WHERE id = ?1 AND state = 'initiated'";
            let Some(mut s) = sessions_where(c, live, params![id])?.pop() else {
                return Ok(None);
            };
            c.prepare_cached(&format!(
                "UPDATE open_sessions SET state = 'expired', ended_at = ?2 {live}"
            ))?
            .execute(params![s.id, now])?;
            s.state = SessionState::Expired;
            s.ended_at = Some(now);
            insert_audit(
                c,
                &s.audit_event(now, "session.closed", Some(&s.user), "ok"),
            )?;
            Ok(Some(s))
        })
        .await
    }

    async fn session(&self, id: &str) -> Result<Option<OpenSession>, StoreError> {
        self.read(|c| Ok(sessions_where(c, "WHERE id = ?1", params![id])?.pop()))
    }

    async fn list_sessions(&self, user: Option<&str>) -> Result<Vec<OpenSession>, StoreError> {
        self.read(|c| match user {
            Some(u) => sessions_where(
                c,
                "WHERE username = ?1 OR requested_by = ?1 ORDER BY created_at DESC",
                params![u],
            ),
            None => sessions_where(c, "ORDER BY created_at DESC", []),
        })
    }

    async fn create_transient(
        &self,
        mut a: TransientAccess,
        ports: PortPool,
        audit: AuditEvent,
    ) -> Result<TransientAccess, StoreError> {
        self.write(move |c| {
            let used: std::collections::HashSet<u16> = c
                .prepare_cached("SELECT port FROM transient_accesses WHERE expired = 0")?
                .query_map([], |r| r.get::<_, u16>(0))?
                .collect::<Result<_, _>>()?;
            let mut free: Vec<u16> = ports.range.clone().filter(|p| !used.contains(p)).collect();
            // Spread allocations over the range so a just-freed port is not reused at once.
            a.port = loop {
                if free.is_empty() {
                    return Err(StoreError::NoFreePort);
                }
                let port = free.swap_remove(crate::issuer::token::random_index(free.len()));
                if ports.usable(port) {
                    break port;
                }
                tracing::warn!(port, "a transient port is held by another socket; choosing another");
            };
            c.prepare_cached(&format!(
                "INSERT INTO transient_accesses ({TRANSIENT_COLS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ))?
            .execute(params![
                a.id.to_string(),
                a.site_id.to_string(),
                a.device,
                a.created_by,
                a.username,
                &a.password_hash[..],
                a.password_sealed,
                a.port,
                a.kind.as_str(),
                a.full_access,
                a.allow_rfc1918,
                a.allow_only_cidr,
                a.created_at,
                a.expires_at,
                a.expired,
                a.revoked_early,
                a.ended_at
            ])?;
            let mut audit = audit;
            audit.object = Some(a.id.to_string());
            insert_audit(c, &audit)?;
            Ok(a)
        })
        .await
    }

    async fn transient(
        &self,
        site: uuid::Uuid,
        id: uuid::Uuid,
    ) -> Result<Option<TransientAccess>, StoreError> {
        self.read(|c| {
            Ok(transients_where(
                c,
                "WHERE site_id = ?1 AND id = ?2",
                params![site.to_string(), id.to_string()],
            )?
            .pop())
        })
    }

    async fn list_transients(
        &self,
        site: uuid::Uuid,
        created_by: Option<&str>,
    ) -> Result<Vec<TransientAccess>, StoreError> {
        self.read(|c| match created_by {
            Some(u) => transients_where(
                c,
                "WHERE site_id = ?1 AND created_by = ?2 ORDER BY created_at DESC",
                params![site.to_string(), u],
            ),
            None => transients_where(
                c,
                "WHERE site_id = ?1 ORDER BY created_at DESC",
                params![site.to_string()],
            ),
        })
    }

    async fn revoke_transient(
        &self,
        site: uuid::Uuid,
        id: uuid::Uuid,
        actor: &str,
        source: Option<String>,
        now: UnixMs,
    ) -> Result<Option<TransientAccess>, StoreError> {
        let actor = actor.to_owned();
        self.write(move |c| {
            let mut rows = transients_where(
                c,
                "WHERE site_id = ?1 AND id = ?2 AND expired = 0 AND expires_at > ?3",
                params![site.to_string(), id.to_string(), now],
            )?;
            let Some(mut a) = rows.pop() else { return Ok(None) };
            c.prepare_cached(
                "UPDATE transient_accesses SET expired = 1, revoked_early = 1, ended_at = ?2 WHERE id = ?1 AND expired = 0",
            )?
            .execute(params![a.id.to_string(), now])?;
            a.expired = true;
            a.revoked_early = true;
            a.ended_at = Some(now);
            let e = AuditEvent {
                source,
                ..a.audit_event(now, "transient.revoked", Some(&actor), "ok")
            };
            insert_audit(c, &e)?;
            Ok(Some(a))
        })
        .await
    }

    async fn live_transients(&self, now: UnixMs) -> Result<Vec<TransientAccess>, StoreError> {
        self.read(|c| {
            transients_where(
                c,
                "WHERE expired = 0 AND expires_at > ?1 ORDER BY created_at",
                params![now],
            )
        })
    }

    async fn transient_by_username(
        &self,
        username: &str,
    ) -> Result<Option<TransientAccess>, StoreError> {
        self.read(|c| Ok(transients_where(c, "WHERE username = ?1", params![username])?.pop()))
    }

    async fn device_host_key(&self, device: &str) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT fingerprint FROM device_host_keys WHERE device = ?1")?
                    .query_row(params![device], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    async fn trust_device_host_key(
        &self,
        device: &str,
        fingerprint: &str,
        now: UnixMs,
        audit: AuditEvent,
    ) -> Result<String, StoreError> {
        let (device, fingerprint) = (device.to_owned(), fingerprint.to_owned());
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "INSERT INTO device_host_keys (device, fingerprint, first_seen) VALUES (?1, ?2, ?3)
                     ON CONFLICT (device) DO NOTHING",
                )?
                .execute(params![device, fingerprint, now])?;
            if n == 1 {
                insert_audit(c, &audit)?;
            }
            Ok(c.prepare_cached("SELECT fingerprint FROM device_host_keys WHERE device = ?1")?
                .query_row(params![device], |r| r.get(0))?)
        })
        .await
    }

    async fn expire_due(&self, now: UnixMs) -> Result<Expired, StoreError> {
        self.write(move |c| {
            let mut out = Expired::default();
            for mut s in sessions_where(c, "WHERE state = 'generated' AND expires_at <= ?1", params![now])? {
                c.prepare_cached("UPDATE open_sessions SET state = 'expired', ended_at = ?2 WHERE id = ?1 AND state = 'generated'")?
                    .execute(params![s.id, now])?;
                s.state = SessionState::Expired;
                s.ended_at = Some(now);
                let e = s.audit_event(now, "session.expired", None, "ok");
                insert_audit(c, &e)?;
                out.sessions.push(s);
            }
            for mut a in transients_where(c, "WHERE expired = 0 AND expires_at <= ?1", params![now])? {
                c.prepare_cached("UPDATE transient_accesses SET expired = 1, ended_at = ?2 WHERE id = ?1 AND expired = 0")?
                    .execute(params![a.id.to_string(), now])?;
                a.expired = true;
                a.ended_at = Some(now);
                let e = a.audit_event(now, "transient.expired", None, "ok");
                insert_audit(c, &e)?;
                out.transients.push(a);
            }
            Ok(out)
        })
        .await
    }

    async fn audit(&self, e: AuditEvent) -> Result<(), StoreError> {
        self.write(move |c| insert_audit(c, &e)).await
    }

    async fn audit_many(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.write(move |c| events.iter().try_for_each(|e| insert_audit(c, e)))
            .await
    }

    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(move |c| {
            select_where(
                c,
                (AUDIT_COLS, "audit"),
                "ORDER BY id DESC LIMIT ?1",
                params![limit],
                audit_row,
            )
        })
    }
}

#[path = "sqlite_rows.rs"]
mod rows;
use rows::{
    AUDIT_COLS, SESSION_COLS, TRANSIENT_COLS, access_str, audit_row, hash_col, insert_audit,
    select_where, sessions_where, transients_where,
};

#[path = "sqlite_removals.rs"]
mod removals;

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
