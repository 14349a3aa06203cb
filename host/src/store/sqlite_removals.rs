//! [`ProvisionStore`] for the SQLite backend (table `device_user_removals`, migration 3).

use async_trait::async_trait;
use rusqlite::{Connection, Row, params};

use super::{SqliteStore, insert_audit};
use crate::store::removals::{DeviceUserRemoval, ProvisionStore};
use crate::store::{AuditEvent, StoreError, UnixMs};

const COLS: &str =
    "r.username, r.device, r.access_id, r.created_at, r.attempts, r.next_attempt_at, r.last_error";

/// An access is live while it is not expired and not due; removals of other accesses are over.
const ACCESS_OVER: &str = "NOT EXISTS (SELECT 1 FROM transient_accesses a
     WHERE a.id = r.access_id AND a.expired = 0 AND a.expires_at > ?1)";

fn removal_row(row: &Row<'_>) -> rusqlite::Result<Result<DeviceUserRemoval, StoreError>> {
    let access: String = row.get(2)?;
    let Ok(access_id) = access.parse() else {
        return Ok(Err(StoreError::Corrupt(format!(
            "device user removal for access {access}"
        ))));
    };
    Ok(Ok(DeviceUserRemoval {
        username: row.get(0)?,
        device: row.get(1)?,
        access_id,
        created_at: row.get(3)?,
        attempts: row.get(4)?,
        next_attempt_at: row.get(5)?,
        last_error: row.get(6)?,
    }))
}

fn removals_where(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<DeviceUserRemoval>, StoreError> {
    super::select_where(
        conn,
        (COLS, "device_user_removals r"),
        filter,
        args,
        removal_row,
    )
}

#[async_trait]
impl ProvisionStore for SqliteStore {
    async fn discard_transient(
        &self,
        id: uuid::Uuid,
        audit: AuditEvent,
    ) -> Result<bool, StoreError> {
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM transient_accesses WHERE id = ?1")?
                .execute(params![id.to_string()])?;
            insert_audit(c, &audit)?;
            Ok(n > 0)
        })
        .await
    }

    async fn schedule_removal(&self, r: DeviceUserRemoval) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO device_user_removals
                 (username, device, access_id, created_at, attempts, next_attempt_at, last_error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                r.username,
                r.device,
                r.access_id.to_string(),
                r.created_at,
                r.attempts,
                r.next_attempt_at,
                r.last_error
            ])?;
            Ok(())
        })
        .await
    }

    async fn removal_due_now(&self, access_id: uuid::Uuid, now: UnixMs) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE device_user_removals SET next_attempt_at = ?2
                 WHERE access_id = ?1 AND attempts = 0 AND next_attempt_at > ?2",
            )?
            .execute(params![access_id.to_string(), now])?;
            Ok(())
        })
        .await
    }

    async fn due_removals(
        &self,
        now: UnixMs,
        limit: u32,
    ) -> Result<Vec<DeviceUserRemoval>, StoreError> {
        self.read(|c| {
            removals_where(
                c,
                &format!(
                    "WHERE r.next_attempt_at <= ?1 OR (r.attempts = 0 AND {ACCESS_OVER})
                     ORDER BY r.next_attempt_at LIMIT ?2"
                ),
                params![now, limit],
            )
        })
    }

    async fn removal_done(&self, username: &str, audit: AuditEvent) -> Result<(), StoreError> {
        let username = username.to_owned();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM device_user_removals WHERE username = ?1")?
                .execute(params![username])?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn removal_failed(
        &self,
        username: &str,
        next_attempt_at: UnixMs,
        error: &str,
        audit: AuditEvent,
    ) -> Result<(), StoreError> {
        let (username, error) = (username.to_owned(), error.to_owned());
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE device_user_removals
                 SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3
                 WHERE username = ?1",
            )?
            .execute(params![username, next_attempt_at, error])?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn pending_removals(
        &self,
        device: &str,
        created_by: Option<&str>,
        now: UnixMs,
    ) -> Result<Vec<DeviceUserRemoval>, StoreError> {
        self.read(|c| match created_by {
            Some(u) => removals_where(
                c,
                &format!(
                    "WHERE r.device = ?2 AND {ACCESS_OVER} AND EXISTS (SELECT 1 FROM
                     transient_accesses o WHERE o.id = r.access_id AND o.created_by = ?3)
                     ORDER BY r.created_at"
                ),
                params![now, device, u],
            ),
            None => removals_where(
                c,
                &format!("WHERE r.device = ?2 AND {ACCESS_OVER} ORDER BY r.created_at"),
                params![now, device],
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removal(access_id: uuid::Uuid, name: &str, at: UnixMs) -> DeviceUserRemoval {
        DeviceUserRemoval {
            username: name.into(),
            device: "d".into(),
            access_id,
            created_at: 0,
            attempts: 0,
            next_attempt_at: at,
            last_error: None,
        }
    }

    #[tokio::test]
    async fn removals_come_due_at_expiry_on_ending_and_after_backoff() {
        let tmp = tempfile::tempdir().unwrap();
        let dir =
            cap_std::fs::Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        let store = SqliteStore::open(&dir).unwrap();
        // No access row: the access is over (e.g. discarded), so the first attempt is due now.
        let gone = uuid::Uuid::new_v4();
        store
            .schedule_removal(removal(gone, "u-gone", 10_000))
            .await
            .unwrap();
        let due = store.due_removals(5_000, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            store
                .pending_removals("d", None, 5_000)
                .await
                .unwrap()
                .len(),
            1
        );
        // Made due explicitly, then failing: backs off until next_attempt_at, stays pending.
        store.removal_due_now(gone, 1_000).await.unwrap();
        store
            .removal_failed("u-gone", 9_000, "unreachable", AuditEvent::default())
            .await
            .unwrap();
        assert!(store.due_removals(5_000, 10).await.unwrap().is_empty());
        let due = store.due_removals(9_000, 10).await.unwrap();
        assert_eq!(due[0].attempts, 1);
        assert_eq!(due[0].last_error.as_deref(), Some("unreachable"));
        store
            .removal_done("u-gone", AuditEvent::default())
            .await
            .unwrap();
        assert!(store.due_removals(i64::MAX, 10).await.unwrap().is_empty());
        assert!(
            store
                .pending_removals("d", None, 5_000)
                .await
                .unwrap()
                .is_empty()
        );
        store.close();
    }
}
