//! Unit tests of the SQLite store: group-commit isolation, the live-port invariant, expiry
//! sweeps and persistence across reopen.

use super::*;
use crate::config::AccessLevel;
use crate::store::TransientKind;
use crate::store::{PortPool, Store};

fn open() -> (tempfile::TempDir, cap_std::fs::Dir, SqliteStore) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = cap_std::fs::Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
    let store = SqliteStore::open(&dir).unwrap();
    (tmp, dir, store)
}

fn session(id: &str, expires_at: i64) -> OpenSession {
    OpenSession {
        id: id.into(),
        token_hash: crate::issuer::token::hash(id),
        user: "u".into(),
        device: "d".into(),
        requested_by: "u".into(),
        access: AccessLevel::Full,
        state: SessionState::Generated,
        created_at: 0,
        expires_at,
        initiated_at: None,
        ended_at: None,
        source: None,
    }
}

fn access(expires_at: i64) -> TransientAccess {
    TransientAccess {
        id: uuid::Uuid::new_v4(),
        site_id: uuid::Uuid::nil(),
        device: "d".into(),
        created_by: "u".into(),
        username: crate::issuer::token::new_transient_username(),
        password_hash: [0; 32],
        password_sealed: vec![1, 2, 3],
        port: 0,
        kind: TransientKind::Winbox,
        full_access: false,
        allow_rfc1918: false,
        allow_only_cidr: Some("10.0.0.0/8".into()),
        created_at: 0,
        expires_at,
        expired: false,
        revoked_early: false,
        ended_at: None,
    }
}

#[tokio::test]
async fn a_failing_write_does_not_undo_its_group() {
    let (_t, _d, store) = open();
    // Same id twice: the second insert violates the primary key. Sent concurrently, they very
    // likely share a commit group; either way exactly the first survives.
    let (a, b, c) = tokio::join!(
        store.insert_session(session("s1", 10), vec![AuditEvent::default()]),
        store.insert_session(session("s1", 10), vec![AuditEvent::default()]),
        store.insert_session(session("s2", 10), vec![AuditEvent::default()]),
    );
    assert!(a.is_ok() && b.is_err() && c.is_ok(), "{a:?} {b:?} {c:?}");
    assert_eq!(store.list_sessions(None).await.unwrap().len(), 2);
    // The audit row of the failed write was rolled back with it.
    assert_eq!(store.audit_log(10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_port_that_cannot_be_listened_on_is_never_given_out() {
    let (_t, _d, store) = open();
    let pool = PortPool::checked(7000..=7002, |p| p != 7001);
    let mut given = Vec::new();
    for _ in 0..2 {
        let a = store
            .create_transient(access(5_000), pool.clone(), AuditEvent::default())
            .await
            .unwrap();
        given.push(a.port);
    }
    given.sort();
    assert_eq!(given, [7000, 7002]);
    assert!(matches!(
        store
            .create_transient(access(5_000), pool, AuditEvent::default())
            .await,
        Err(StoreError::NoFreePort)
    ));
}

#[tokio::test]
async fn live_accesses_never_share_a_port_and_expiry_frees_it() {
    let (_t, _d, store) = open();
    let a = store
        .create_transient(access(1_000), (7000..=7001).into(), AuditEvent::default())
        .await
        .unwrap();
    let b = store
        .create_transient(access(5_000), (7000..=7001).into(), AuditEvent::default())
        .await
        .unwrap();
    assert_ne!(a.port, b.port);
    assert!(matches!(
        store
            .create_transient(access(5_000), (7000..=7001).into(), AuditEvent::default())
            .await,
        Err(StoreError::NoFreePort)
    ));
    let expired = store.expire_due(1_000).await.unwrap();
    assert_eq!(expired.transients.len(), 1);
    assert_eq!(expired.transients[0].id, a.id);
    let c = store
        .create_transient(access(5_000), (7000..=7001).into(), AuditEvent::default())
        .await
        .unwrap();
    assert_eq!(c.port, a.port);
    // Nothing more is due; a second sweep is a no-op.
    assert!(store.expire_due(1_000).await.unwrap().transients.is_empty());
    let log = store.audit_log(10).await.unwrap();
    assert!(
        log.iter().any(|e| e.event == "transient.expired"
            && e.object.as_deref() == Some(&a.id.to_string()[..]))
    );
}

#[tokio::test]
async fn sweeps_expire_only_due_generated_sessions() {
    let (_t, _d, store) = open();
    for (id, exp) in [("due", 100), ("later", 10_000), ("used", 100)] {
        store
            .insert_session(session(id, exp), vec![AuditEvent::default()])
            .await
            .unwrap();
    }
    let used = store
        .redeem_session(crate::issuer::token::hash("used"), "u", "d", 50, None)
        .await
        .unwrap();
    assert!(used.is_some());
    let out = store.expire_due(200).await.unwrap();
    assert_eq!(
        out.sessions
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["due"]
    );
    assert_eq!(
        store.session("used").await.unwrap().unwrap().state,
        SessionState::Initiated
    );
    assert_eq!(
        store.session("later").await.unwrap().unwrap().state,
        SessionState::Generated
    );
    assert!(
        store
            .redeem_session(crate::issuer::token::hash("due"), "u", "d", 50, None)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn closing_ends_only_initiated_sessions() {
    let (_t, _d, store) = open();
    for id in ["open", "unused", "cut"] {
        store
            .insert_session(session(id, 10_000), vec![AuditEvent::default()])
            .await
            .unwrap();
    }
    for id in ["open", "cut"] {
        let hash = crate::issuer::token::hash(id);
        assert!(
            store
                .redeem_session(hash, "u", "d", 50, None)
                .await
                .unwrap()
                .is_some()
        );
    }
    store
        .terminate_sessions(vec!["cut".into()], "admin", Some("192.0.2.1".into()), 60)
        .await
        .unwrap();
    let log = store.audit_log(50).await.unwrap();
    let row = log
        .iter()
        .find(|e| e.event == "session.terminated")
        .unwrap();
    assert_eq!(
        row.source.as_deref(),
        Some("192.0.2.1"),
        "who cut it, from where"
    );
    let closed = store.close_session("open", 70).await.unwrap().unwrap();
    assert_eq!(
        (closed.state, closed.ended_at),
        (SessionState::Expired, Some(70))
    );
    // Only once; a session never used, or terminated, keeps its state.
    assert!(store.close_session("open", 80).await.unwrap().is_none());
    assert!(store.close_session("unused", 80).await.unwrap().is_none());
    assert!(store.close_session("cut", 80).await.unwrap().is_none());
    let state = |s: Option<OpenSession>| s.map(|s| (s.state, s.ended_at));
    assert_eq!(
        state(store.session("open").await.unwrap()),
        Some((SessionState::Expired, Some(70)))
    );
    assert_eq!(
        state(store.session("unused").await.unwrap()),
        Some((SessionState::Generated, None))
    );
    assert_eq!(
        state(store.session("cut").await.unwrap()),
        Some((SessionState::Terminated, Some(60)))
    );
}

#[tokio::test]
async fn data_survives_reopen_and_writes_after_close_fail_cleanly() {
    let (_t, dir, store) = open();
    store
        .insert_session(session("keep", 10_000), vec![AuditEvent::default()])
        .await
        .unwrap();
    store.close();
    assert!(matches!(
        store
            .insert_session(session("late", 1), vec![AuditEvent::default()])
            .await,
        Err(StoreError::Closed)
    ));
    let again = SqliteStore::open(&dir).unwrap();
    assert!(again.session("keep").await.unwrap().is_some());
    assert!(again.session("late").await.unwrap().is_none());
}

/// Under steady reads a PASSIVE checkpoint never lets the WAL reset; past the threshold the
/// checkpoint empties it anyway, without failing the readers.
#[test]
fn a_large_wal_is_truncated_even_while_readers_keep_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.db");
    let writer = Connection::open(&path).unwrap();
    writer.pragma_update(None, "journal_mode", "WAL").unwrap();
    writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    writer
        .busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    writer.execute("CREATE TABLE t (v BLOB)", []).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let r = Connection::open(&path).unwrap();
                r.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _: i64 = r
                        .query_row("SELECT count(*) FROM t", [], |x| x.get(0))
                        .unwrap();
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let checkpointer = Connection::open(&path).unwrap();
    checkpointer
        .busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    let wal = path.with_extension("db-wal");
    for _ in 0..300 {
        writer
            .execute("INSERT INTO t VALUES (zeroblob(8192))", [])
            .unwrap();
    }
    let frames = || -> i64 {
        checkpointer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap()
    };
    // Below the threshold: frames are copied, the WAL keeps growing. A reader holding its
    // snapshot meanwhile makes that certain: without one, a commit that happens to come
    // between two of the readers' queries may restart the WAL itself (SQLite does when
    // every frame is copied and no reader uses the WAL), as it did once in CI.
    let pinned = Connection::open(&path).unwrap();
    pinned.execute_batch("BEGIN").unwrap();
    let _: i64 = pinned
        .query_row("SELECT count(*) FROM t", [], |x| x.get(0))
        .unwrap();
    checkpoint_once(&checkpointer, 1_000_000).unwrap();
    writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
    assert!(frames() > 300, "the WAL was restarted below the threshold");
    pinned.execute_batch("COMMIT").unwrap();
    let size = std::fs::metadata(&wal).unwrap().len();
    // Above it: restarted while the readers go on, so the next commit writes from its start
    // and the file does not grow.
    checkpoint_once(&checkpointer, 100).unwrap();
    writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
    assert!(frames() <= 4, "the WAL was not restarted");
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), size);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}
