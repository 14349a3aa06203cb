//! Device-side users of transient accesses and their removal queue.
//!
//! When a device has a provisioning driver, a removal row is written *before* the user is created
//! on the device, due at the access's `expires_at`. So from the moment a device user may exist,
//! the store knows it must be removed: an ending announced while the gateway was down, a crash
//! between creation and a failed rollback, or a device unreachable at expiry all end in the same
//! queue, which the provisioner works off with backoff. A row is deleted only once the device
//! confirmed the user is gone.

use async_trait::async_trait;
use serde::Serialize;

use super::{AuditEvent, Store, StoreError, UnixMs};

/// One device user that must be removed when its access ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeviceUserRemoval {
    /// The device-side username (the access's `username`).
    pub username: String,
    pub device: String,
    pub access_id: uuid::Uuid,
    pub created_at: UnixMs,
    /// Failed removal attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (the access's `expires_at` until it ends).
    pub next_attempt_at: UnixMs,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// Store operations of provisioning. Implemented by every [`Store`] backend.
#[async_trait]
pub trait ProvisionStore: Store {
    /// Deletes an access whose device-side provisioning failed, so that it leaves no port and no
    /// row behind; `audit` is written in the same transaction. True if it existed.
    async fn discard_transient(
        &self,
        id: uuid::Uuid,
        audit: AuditEvent,
    ) -> Result<bool, StoreError>;
    /// Records that `r.username` must be removed from `r.device` (replacing an earlier row).
    async fn schedule_removal(&self, r: DeviceUserRemoval) -> Result<(), StoreError>;
    /// Makes the removals of an access that just ended due at `now` (unless retries are already
    /// backing off).
    async fn removal_due_now(&self, access_id: uuid::Uuid, now: UnixMs) -> Result<(), StoreError>;
    /// Removals due at `now`: those whose time came, and first attempts for accesses that are
    /// no longer live (ended while nobody was listening), at most `limit`.
    async fn due_removals(
        &self,
        now: UnixMs,
        limit: u32,
    ) -> Result<Vec<DeviceUserRemoval>, StoreError>;
    /// The device confirmed the user is gone: deletes the row and writes `audit`.
    async fn removal_done(&self, username: &str, audit: AuditEvent) -> Result<(), StoreError>;
    /// An attempt failed: records it and when to try again, and writes `audit`.
    async fn removal_failed(
        &self,
        username: &str,
        next_attempt_at: UnixMs,
        error: &str,
        audit: AuditEvent,
    ) -> Result<(), StoreError>;
    /// Removals still outstanding for accesses of `device` that are over at `now` (users left on
    /// the device past their access's end); only accesses created by `created_by` if given.
    async fn pending_removals(
        &self,
        device: &str,
        created_by: Option<&str>,
        now: UnixMs,
    ) -> Result<Vec<DeviceUserRemoval>, StoreError>;
}
