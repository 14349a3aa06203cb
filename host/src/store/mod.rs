//! Durable state: login tickets, open sessions (one-time keys), transient accesses and the
//! audit log.
//!
//! [`Store`] is the backend-neutral API; [`sqlite::SqliteStore`] is the embedded default. Every
//! state change that must be single-use (redeeming a key, revoking an access, expiring) is one
//! conditional `UPDATE … WHERE state = … RETURNING`, so a PostgreSQL backend serving several
//! gateway nodes can implement the same trait with the same statements and get the same
//! exactly-once guarantee. A write returns only after its transaction is durably committed, and
//! the audit row describing a change is written in the same transaction as the change.

pub mod removals;
mod schema;
pub mod sqlite;

use std::borrow::Cow;
use std::ops::RangeInclusive;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::config::AccessLevel;

/// Milliseconds since the Unix epoch; the store's only clock type.
pub type UnixMs = i64;

/// SHA-256 of a secret token; the store never sees the token itself.
pub type TokenHash = [u8; 32];

/// The ports transient accesses are given from, and which of them can be listened on now.
#[derive(Clone)]
pub struct PortPool {
    pub range: RangeInclusive<u16>,
    /// Whether a port can be bound now; `None` takes every port the store has not given out
    /// as usable.
    usable: Option<Arc<dyn Fn(u16) -> bool + Send + Sync>>,
}

impl PortPool {
    /// Ports of `range` on `ip`: a port some other socket holds (another program's listener,
    /// or an outgoing connection given it as its ephemeral port) is passed over, so an access
    /// is never handed a port whose connections would reach someone else.
    pub fn listening_on(range: RangeInclusive<u16>, ip: std::net::IpAddr) -> Self {
        Self::checked(range, move |port| {
            std::net::TcpListener::bind((ip, port)).is_ok()
        })
    }

    /// Ports of `range` for which `usable` holds when they are given out.
    pub fn checked(
        range: RangeInclusive<u16>,
        usable: impl Fn(u16) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            range,
            usable: Some(Arc::new(usable)),
        }
    }

    pub fn usable(&self, port: u16) -> bool {
        self.usable.as_ref().is_none_or(|f| f(port))
    }
}

impl From<RangeInclusive<u16>> for PortPool {
    fn from(range: RangeInclusive<u16>) -> Self {
        Self {
            range,
            usable: None,
        }
    }
}

impl std::fmt::Debug for PortPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortPool")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("no free port in the transient port range")]
    NoFreePort,
    #[error("the store is shut down")]
    Closed,
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("cannot open the database: {0}")]
    Open(String),
}

/// Life cycle of an open-session key, as shown on the tracking page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Generated,
    Initiated,
    Expired,
    Terminated,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generated => "generated",
            Self::Initiated => "initiated",
            Self::Expired => "expired",
            Self::Terminated => "terminated",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "generated" => Self::Generated,
            "initiated" => Self::Initiated,
            "expired" => Self::Expired,
            "terminated" => Self::Terminated,
            other => return Err(StoreError::Corrupt(format!("session state {other:?}"))),
        })
    }
}

/// An open session: the record behind one one-time key.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSession {
    pub id: String,
    pub token_hash: TokenHash,
    pub user: String,
    pub device: String,
    pub requested_by: String,
    pub access: AccessLevel,
    pub state: SessionState,
    pub created_at: UnixMs,
    pub expires_at: UnixMs,
    pub initiated_at: Option<UnixMs>,
    pub ended_at: Option<UnixMs>,
    pub source: Option<String>,
}

/// Protocol a transient access opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransientKind {
    Winbox,
    Ssh,
}

impl TransientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Winbox => "winbox",
            Self::Ssh => "ssh",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "winbox" => Ok(Self::Winbox),
            "ssh" => Ok(Self::Ssh),
            other => Err(StoreError::Corrupt(format!("transient type {other:?}"))),
        }
    }
}

/// A transient access (Altostrat semantics). `port` is 0 until the store allocates one.
#[derive(Debug, Clone, PartialEq)]
pub struct TransientAccess {
    pub id: uuid::Uuid,
    pub site_id: uuid::Uuid,
    pub device: String,
    pub created_by: String,
    pub username: String,
    pub password_hash: TokenHash,
    /// The password sealed with the data directory's key (GET must return it, as in the seed).
    pub password_sealed: Vec<u8>,
    pub port: u16,
    pub kind: TransientKind,
    pub full_access: bool,
    pub allow_rfc1918: bool,
    pub allow_only_cidr: Option<String>,
    pub created_at: UnixMs,
    pub expires_at: UnixMs,
    pub expired: bool,
    pub revoked_early: bool,
    pub ended_at: Option<UnixMs>,
}

impl OpenSession {
    /// An audit row about this session (user, device and id filled in).
    pub fn audit_event(
        &self,
        at: UnixMs,
        name: &str,
        actor: Option<&str>,
        outcome: &str,
    ) -> AuditEvent {
        AuditEvent {
            subject: Some(self.user.clone()),
            device: Some(self.device.clone()),
            object: Some(self.id.clone()),
            ..crate::audit::event(at, name, actor, outcome)
        }
    }
}

impl TransientAccess {
    /// An audit row about this access (username, device and id filled in).
    pub fn audit_event(
        &self,
        at: UnixMs,
        name: &str,
        actor: Option<&str>,
        outcome: &str,
    ) -> AuditEvent {
        AuditEvent {
            subject: Some(self.username.clone()),
            device: Some(self.device.clone()),
            object: Some(self.id.to_string()),
            ..crate::audit::event(at, name, actor, outcome)
        }
    }
}

/// A login ticket (`POST /api/v1/Session`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub hash: TokenHash,
    pub username: String,
    pub created_at: UnixMs,
    pub expires_at: UnixMs,
}

/// One row of the audit log. Never holds a token or password.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditEvent {
    pub at: UnixMs,
    /// e.g. `session.issued`, `session.denied`, `session.redeemed`, `transient.expired`.
    pub event: String,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub device: Option<String>,
    /// Id of the session or access concerned.
    pub object: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub source: Option<String>,
}

impl AuditEvent {
    /// Longest text, in bytes, an audit field keeps. Names and reasons can come from
    /// unauthenticated callers (a 100 kB user name in a failed login), and rows are durable.
    pub const FIELD_MAX: usize = 1024;

    /// `s`, cut at [`Self::FIELD_MAX`] bytes (on a character boundary) with a note of how much
    /// was left out.
    pub fn clip(s: &str) -> Cow<'_, str> {
        if s.len() <= Self::FIELD_MAX {
            return Cow::Borrowed(s);
        }
        let mut end = Self::FIELD_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Cow::Owned(format!("{}… ({} more bytes)", &s[..end], s.len() - end))
    }

    /// [`Self::clip`] of an optional field.
    pub fn clipped(f: &Option<String>) -> Option<Cow<'_, str>> {
        f.as_deref().map(Self::clip)
    }
}

/// What a sweep expired.
#[derive(Debug, Default)]
pub struct Expired {
    pub sessions: Vec<OpenSession>,
    pub transients: Vec<TransientAccess>,
}

/// The backend-neutral store API. Every mutating call is durable when it returns `Ok`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn insert_ticket(&self, ticket: Ticket, audit: AuditEvent) -> Result<(), StoreError>;
    /// The ticket with this hash if it exists and has not expired at `now`.
    async fn ticket(&self, hash: TokenHash, now: UnixMs) -> Result<Option<Ticket>, StoreError>;
    /// Deletes a ticket; true if it existed.
    async fn delete_ticket(&self, hash: TokenHash, audit: AuditEvent) -> Result<bool, StoreError>;

    /// Inserts a session with the audit rows describing its issuance (the issuance and the
    /// policy decisions behind it), in one transaction.
    async fn insert_session(
        &self,
        session: OpenSession,
        audit: Vec<AuditEvent>,
    ) -> Result<(), StoreError>;
    /// Single-use redemption: moves the session whose key hashes to `hash` from `generated` to
    /// `initiated` if it belongs to `user` and `device` and is not expired at `now`. Exactly one
    /// of any number of concurrent callers gets `Some`.
    async fn redeem_session(
        &self,
        hash: TokenHash,
        user: &str,
        device: &str,
        now: UnixMs,
        source: Option<String>,
    ) -> Result<Option<OpenSession>, StoreError>;
    /// Marks live (`generated`/`initiated`) sessions among `ids` terminated; returns those.
    /// `source` is the address the actor asked from, for the audit rows.
    async fn terminate_sessions(
        &self,
        ids: Vec<String>,
        actor: &str,
        source: Option<String>,
        now: UnixMs,
    ) -> Result<Vec<OpenSession>, StoreError>;
    /// Marks an `initiated` session `expired` with `ended_at` (the connection it opened has
    /// ended); returns it if it was initiated.
    async fn close_session(&self, id: &str, now: UnixMs)
    -> Result<Option<OpenSession>, StoreError>;
    async fn session(&self, id: &str) -> Result<Option<OpenSession>, StoreError>;
    /// Sessions, newest first; only `user`'s if given.
    async fn list_sessions(&self, user: Option<&str>) -> Result<Vec<OpenSession>, StoreError>;

    /// Inserts a transient access on a free port of `ports` (never one held by a live access).
    async fn create_transient(
        &self,
        access: TransientAccess,
        ports: PortPool,
        audit: AuditEvent,
    ) -> Result<TransientAccess, StoreError>;
    async fn transient(
        &self,
        site: uuid::Uuid,
        id: uuid::Uuid,
    ) -> Result<Option<TransientAccess>, StoreError>;
    async fn list_transients(
        &self,
        site: uuid::Uuid,
        created_by: Option<&str>,
    ) -> Result<Vec<TransientAccess>, StoreError>;
    /// Revokes a live access early; `None` if it is unknown or already over.
    async fn revoke_transient(
        &self,
        site: uuid::Uuid,
        id: uuid::Uuid,
        actor: &str,
        source: Option<String>,
        now: UnixMs,
    ) -> Result<Option<TransientAccess>, StoreError>;

    /// Accesses of every site that are live at `now` (not expired, revoked or due).
    async fn live_transients(&self, now: UnixMs) -> Result<Vec<TransientAccess>, StoreError>;
    /// The access with this username, live or not (usernames are unique).
    async fn transient_by_username(
        &self,
        username: &str,
    ) -> Result<Option<TransientAccess>, StoreError>;

    /// The host-key fingerprint trusted on first use for `device`, if one was recorded.
    async fn device_host_key(&self, device: &str) -> Result<Option<String>, StoreError>;
    /// Records `fingerprint` as `device`'s host key unless one is already recorded, and returns
    /// the recorded one, so concurrent first connections agree on a single key. `audit` is
    /// written only when this call recorded the key.
    async fn trust_device_host_key(
        &self,
        device: &str,
        fingerprint: &str,
        now: UnixMs,
        audit: AuditEvent,
    ) -> Result<String, StoreError>;

    /// Expires every generated key and live access due at `now`, auditing each.
    async fn expire_due(&self, now: UnixMs) -> Result<Expired, StoreError>;
    async fn audit(&self, event: AuditEvent) -> Result<(), StoreError>;
    /// Several audit rows in one transaction.
    async fn audit_many(&self, events: Vec<AuditEvent>) -> Result<(), StoreError>;
    /// The newest `limit` audit rows, newest first.
    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEvent>, StoreError>;
}
