//! Credentials and their life cycle: login tickets, Nodegrid open-session one-time keys and
//! Altostrat transient accesses.
//!
//! The issuer validates what the API layer parsed, asks [`Policy`](crate::policy::Policy) for
//! every decision, writes through the [`Store`] (durably, with the audit row in the same
//! transaction) and announces endings on a broadcast channel so that forwarders holding live
//! connections can cut them. It is also the redemption API the SSH and web forwarders call.

mod connect;
pub mod humanize;
pub mod listening;
mod provisioning;
mod refusals;
pub mod seal;
mod sessions;
mod tickets;
pub mod token;
mod transient;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

pub use connect::ConnectGrant;
pub use sessions::DurationInput;
pub use transient::NewTransient;

use crate::audit::{self, now_ms};
use crate::directory::{Device, Directory, User};
use crate::metrics::Metrics;
use crate::policy::{Action, Policy, Protocol, Request};
use crate::secret::Secret;
use crate::store::{AuditEvent, Store, StoreError, Ticket};
use seal::{SealError, Sealer};

/// Why an issuer call failed. The API layer maps each variant to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// The request is malformed or out of range (400).
    #[error("{0}")]
    Invalid(String),
    /// Missing or wrong credentials (401).
    #[error("invalid or missing credentials")]
    Unauthenticated,
    /// A policy said no (403); the reason is safe to show.
    #[error("{0}")]
    Denied(String),
    /// Unknown device, user, site, session or access (404).
    #[error("{0}")]
    NotFound(String),
    /// The state forbids it, e.g. revoking an access that is already over (409).
    #[error("{0}")]
    Conflict(String),
    /// A one-time key that cannot be redeemed. Deliberately one message for every cause
    /// (unknown, reused, expired, terminated, other user or device).
    #[error("the one-time key is invalid, already used, expired or not for this device")]
    Refused,
    /// No transient port is free (503).
    #[error("no free port in the transient port range; try again later")]
    Exhausted,
    /// A device the request depends on failed or could not be reached (502); the message says
    /// why and is safe to show.
    #[error("{0}")]
    BadGateway(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A change that listeners and live connections must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    SessionEnded {
        id: String,
    },
    TransientEnded {
        id: uuid::Uuid,
    },
    /// A transient access was created; its per-access listener must start.
    TransientCreated {
        id: uuid::Uuid,
    },
}

/// Issuer settings taken from `[server]`.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub ports: crate::store::PortPool,
    pub public_host: String,
    pub max_otk_duration_secs: u64,
    pub ticket_ttl_secs: u64,
}

/// How a caller authenticated.
#[derive(Debug)]
pub enum Credentials {
    Ticket(Secret<String>),
    ApiKey {
        user: String,
        key: Secret<String>,
    },
    /// `Authorization: Bearer`: a ticket or an API key.
    Bearer(Secret<String>),
}

/// The credential issuer.
pub struct Issuer {
    store: Arc<dyn Store>,
    directory: Arc<Directory>,
    policy: Arc<Policy>,
    sealer: Sealer,
    metrics: Arc<Metrics>,
    cfg: IssuerConfig,
    events: broadcast::Sender<Lifecycle>,
    /// Device-side users of transient accesses; `None`: no device has a driver.
    provisioner: Option<Arc<crate::provision::Provisioner>>,
    /// Bounds the refusal rows one source can cause.
    refusals: refusals::RefusalLimiter,
    /// Tickets recently found in the store.
    tickets: tickets::TicketCache,
    /// Where [`Issuer::audit_later`] sends rows (the server's batching writer).
    audit_sink: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Vec<AuditEvent>>>,
    /// Which per-access listeners are open, so answers can wait for them.
    listening: listening::Listening,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<Directory>,
        policy: Arc<Policy>,
        sealer: Sealer,
        metrics: Arc<Metrics>,
        cfg: IssuerConfig,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            store,
            directory,
            policy,
            sealer,
            metrics,
            cfg,
            events,
            provisioner: None,
            refusals: refusals::RefusalLimiter::default(),
            tickets: tickets::TicketCache::default(),
            audit_sink: std::sync::OnceLock::new(),
            listening: listening::Listening::default(),
        }
    }

    /// The per-access listeners' reports (see [`listening`]).
    pub fn listening(&self) -> &listening::Listening {
        &self.listening
    }

    /// Creates and removes device-side users of transient accesses with `p`.
    pub fn with_provisioner(mut self, p: Arc<crate::provision::Provisioner>) -> Self {
        self.provisioner = Some(p);
        self
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the initiated session `id` is over (ended, or gone); a store error counts as
    /// not over, so a flaky read never cuts a live connection.
    pub async fn session_is_over(&self, id: &str) -> bool {
        match self.store.session(id).await {
            Ok(Some(s)) => s.state != crate::store::SessionState::Initiated,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Sends rows given to [`Issuer::audit_later`] to `tx` (set once, by the server).
    pub fn set_audit_sink(&self, tx: tokio::sync::mpsc::UnboundedSender<Vec<AuditEvent>>) {
        let _ = self.audit_sink.set(tx);
    }

    /// Traces `e` now and writes its row with the next batch, for events no answer waits on
    /// (a forwarded connection's start and end). Without a sink (tests driving the issuer
    /// directly) the row is written by a task of its own.
    pub fn audit_later(&self, e: AuditEvent) {
        audit::trace(&e);
        let rows = match self.audit_sink.get() {
            Some(tx) => match tx.send(vec![e]) {
                Ok(()) => return,
                Err(tokio::sync::mpsc::error::SendError(rows)) => rows,
            },
            None => vec![e],
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(err) = store.audit_many(rows).await {
                tracing::error!(error = %err, "cannot write an audit row");
            }
        });
    }

    /// Endings of sessions and accesses (and creations of accesses), for forwarders holding
    /// live connections and per-access listeners.
    pub fn subscribe(&self) -> broadcast::Receiver<Lifecycle> {
        self.events.subscribe()
    }

    /// Checks a password and returns a new login ticket.
    pub async fn login(
        &self,
        username: &str,
        password: Secret<String>,
        source: Option<String>,
    ) -> Result<Secret<String>, IssuerError> {
        let dir = self.directory.clone();
        let user = username.to_owned();
        let ok = tokio::task::spawn_blocking(move || dir.verify_password(&user, password.expose()))
            .await
            .map_err(|e| IssuerError::Internal(e.to_string()))?;
        let now = now_ms();
        if !ok {
            self.metrics.deny("ticket", "login");
            // Anyone can fail a login, so these rows are bounded per source like refusals.
            let reason = "invalid username or password".to_string();
            let reason = match &source {
                Some(src) => self.bounded_reason(src, reason),
                None => Some(reason),
            };
            if let Some(reason) = reason {
                self.record(AuditEvent {
                    subject: Some(username.into()),
                    reason: Some(reason),
                    source,
                    ..audit::event(now, "login.denied", Some(username), "deny")
                })
                .await?;
            }
            return Err(IssuerError::Unauthenticated);
        }
        let (ticket, hash) = token::new_ticket();
        let row = Ticket {
            hash,
            username: username.into(),
            created_at: now,
            expires_at: now + (self.cfg.ticket_ttl_secs as i64) * 1000,
        };
        let e = AuditEvent {
            source,
            ..audit::event(now, "login", Some(username), "allow")
        };
        self.store.insert_ticket(row, e.clone()).await?;
        audit::trace(&e);
        self.metrics
            .issued
            .get_or_create(&Metrics::kind("ticket"))
            .inc();
        Ok(ticket)
    }

    /// Deletes a login ticket.
    pub async fn logout(&self, ticket: &Secret<String>, user: &str) -> Result<(), IssuerError> {
        let e = audit::event(now_ms(), "logout", Some(user), "ok");
        let hash = token::hash(ticket.expose());
        self.tickets.forget(&hash);
        let deleted = self.store.delete_ticket(hash, e.clone()).await;
        // Again after the delete, for a lookup that read the row while it was running.
        self.tickets.forget(&hash);
        if deleted? {
            audit::trace(&e);
        }
        Ok(())
    }

    /// Resolves credentials to a user.
    pub async fn authenticate(&self, creds: &Credentials) -> Result<&User, IssuerError> {
        let user = match creds {
            Credentials::Ticket(t) => self.user_by_ticket(t).await?,
            Credentials::ApiKey { user, key } => {
                self.directory.user_for_api_key(key.expose(), Some(user))
            }
            Credentials::Bearer(t) => match self.user_by_ticket(t).await? {
                Some(u) => Some(u),
                None => self.directory.user_for_api_key(t.expose(), None),
            },
        };
        user.ok_or(IssuerError::Unauthenticated)
    }

    async fn user_by_ticket(&self, t: &Secret<String>) -> Result<Option<&User>, IssuerError> {
        let hash = token::hash(t.expose());
        let now = now_ms();
        // A hit means this hash was matched against the store row (in constant time) below.
        if let Some(name) = self.tickets.lookup(&hash, now) {
            return Ok(self.directory.user(&name));
        }
        let seen = self.tickets.generation();
        let found = self.store.ticket(hash, now).await?;
        Ok(found
            .filter(|row| token::hashes_equal(&row.hash, &hash))
            .and_then(|row| {
                self.tickets
                    .remember(seen, hash, &row.username, row.expires_at);
                self.directory.user(&row.username)
            }))
    }

    /// A request record with the fields every hook needs; callers set the rest.
    fn request(
        &self,
        action: Action,
        requester: &User,
        subject: &User,
        device: &Device,
        protocol: Protocol,
    ) -> Request {
        Request {
            action,
            requester: self.directory.principal(requester),
            subject: self.directory.principal(subject),
            device: device.policy_ref(),
            protocol,
            access: crate::config::AccessLevel::Full,
            ttl_seconds: 0,
            source: None,
            allow_only_cidr: None,
            allow_rfc1918: true,
            now_unix_ms: now_ms().max(0) as u64,
            request_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Writes an audit row (and its trace) on its own.
    async fn record(&self, e: AuditEvent) -> Result<(), IssuerError> {
        audit::trace(&e);
        self.store.audit(e).await?;
        Ok(())
    }

    /// Records a policy denial and returns the error to answer with.
    /// `decisions` are the audit rows of the policy decisions behind it, written with it.
    async fn denied(
        &self,
        kind: &str,
        hook: &str,
        e: AuditEvent,
        decisions: Vec<AuditEvent>,
    ) -> IssuerError {
        self.metrics.deny(kind, hook);
        let reason = e.reason.clone().unwrap_or_default();
        audit::trace(&e);
        let mut rows = decisions;
        rows.push(e);
        if let Err(err) = self.store.audit_many(rows).await {
            return err.into();
        }
        IssuerError::Denied(reason)
    }

    /// Expires everything due now and announces it.
    pub async fn sweep(&self) -> Result<usize, IssuerError> {
        let expired = self.store.expire_due(now_ms()).await?;
        for s in &expired.sessions {
            audit::trace(&s.audit_event(now_ms(), "session.expired", None, "ok"));
            self.metrics
                .expired
                .get_or_create(&Metrics::kind("open_session"))
                .inc();
            let _ = self
                .events
                .send(Lifecycle::SessionEnded { id: s.id.clone() });
        }
        for a in &expired.transients {
            audit::trace(&a.audit_event(now_ms(), "transient.expired", None, "ok"));
            self.metrics
                .expired
                .get_or_create(&Metrics::kind("transient"))
                .inc();
            let _ = self.events.send(Lifecycle::TransientEnded { id: a.id });
        }
        Ok(expired.sessions.len() + expired.transients.len())
    }
}

/// Runs the expiry sweeper until `shutdown` resolves. Expiry is stored, so anything that came
/// due while the gateway was down is expired on the first sweep after start.
pub async fn run_sweeper(
    issuer: Arc<Issuer>,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                if let Err(e) = issuer.sweep().await {
                    tracing::error!(error = %e, "expiry sweep failed; retrying on the next tick");
                }
            }
        }
    }
}
