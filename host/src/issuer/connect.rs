//! Connect-time decisions for the forwarders (SSH and Winbox now, the web console later).
//!
//! Before a one-time key is consumed, or a transient access's password accepted, the `source`
//! and `authorize` hooks decide with the peer address (action `connect`). A refusal is always
//! the same [`IssuerError::Refused`] towards the client, so a prober learns nothing about which
//! check failed; the audit row carries the real reason.

use std::net::IpAddr;

use super::refusals::{Admit, ROWS_PER_WINDOW};
use super::{Issuer, IssuerError, token};
use crate::audit::{self, now_ms};
use crate::config::AccessLevel;
use crate::policy::{Action, Protocol, Request, Verdict};
use crate::secret::Secret;
use crate::store::{AuditEvent, TransientAccess, TransientKind};

/// What the connect-time policies allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectGrant {
    /// The most the connection may use; the caller takes the lower of this and what the
    /// session or access was issued with.
    pub access: Option<AccessLevel>,
    /// The longest the connection may last, in seconds; the caller cuts it then.
    pub max_session_seconds: Option<u32>,
    /// Obligations the policies attached (e.g. allowing forwarding); the caller enforces them.
    pub obligations: Vec<String>,
}

impl ConnectGrant {
    /// `level` capped by the grant.
    pub fn cap(&self, level: AccessLevel) -> AccessLevel {
        self.access.map_or(level, |max| level.min(max))
    }
}

impl Issuer {
    /// Asks the `source` then the `authorize` hook whether `user` may connect to `device` over
    /// `protocol` from `source`. Called before a one-time key is redeemed, so a denied
    /// connection does not burn the key. The request asks for `read-only`, the least a
    /// connection needs; the grant's level caps the session's.
    pub async fn authorize_connect(
        &self,
        user: &str,
        device: &str,
        protocol: Protocol,
        source: IpAddr,
    ) -> Result<ConnectGrant, IssuerError> {
        let src = source.to_string();
        let (Some(u), Some(d)) = (self.directory.user(user), self.directory.device(device)) else {
            return Err(self
                .refuse(user, device, &src, "unknown user or device".into())
                .await);
        };
        let mut req = self.request(Action::Connect, u, u, d, protocol);
        req.access = AccessLevel::ReadOnly;
        req.source = Some(src.clone());
        self.decide_connect(&req, user, device, &src).await
    }

    /// Checks a transient access's username and password on the port it was allocated, then
    /// asks the policy as [`Self::admit_transient`] does. Returns the access and the grant.
    pub async fn connect_transient(
        &self,
        username: &str,
        password: &Secret<String>,
        port: u16,
        kind: TransientKind,
        source: IpAddr,
    ) -> Result<(TransientAccess, ConnectGrant), IssuerError> {
        let src = source.to_string();
        let now = now_ms();
        let found = self.store.transient_by_username(username).await?;
        let hash = token::hash(password.expose());
        let access = match found {
            Some(a)
                if token::hashes_equal(&a.password_hash, &hash)
                    && a.port == port
                    && a.kind == kind
                    && !a.expired
                    && a.expires_at > now =>
            {
                a
            }
            _ => {
                return Err(self
                    .refuse(
                        username,
                        "-",
                        &src,
                        "unknown access or wrong password, port or type".into(),
                    )
                    .await);
            }
        };
        let grant = self.admit_transient(&access, source).await?;
        Ok((access, grant))
    }

    /// Winbox: [`Self::admit_transient`] for a connection the caller holds open, plus the one
    /// rule of Winbox's own. Winbox authenticates on the device, so unlike
    /// [`Issuer::connect_transient`] there is no password to check here.
    pub async fn connect_winbox(
        &self,
        access: &TransientAccess,
        source: IpAddr,
    ) -> Result<ConnectGrant, IssuerError> {
        let grant = self.admit_transient(access, source).await?;
        let src = source.to_string();
        // Winbox logs in as the device user made for the access, with the access's level: a
        // grant that caps a full access to read-only cannot be honoured per connection.
        if access.full_access && grant.cap(AccessLevel::Full) != AccessLevel::Full {
            self.metrics.deny("connect", "authorize");
            return Err(self
                .refuse(
                    &access.username,
                    &access.device,
                    &src,
                    "authorize: the policy allows read-only, and this access's device user has \
                     full access"
                        .into(),
                )
                .await);
        }
        Ok(grant)
    }

    /// Asks the `source` hook (with the access's `allow_only_cidr` / `allow_rfc1918`) and the
    /// `authorize` hook (for the user who created it) whether `source` may connect to the port
    /// of `access`. Asked when the connection is accepted (Winbox, SSH: a refused source is
    /// closed before any login) and, for SSH, again at login.
    pub async fn admit_transient(
        &self,
        access: &TransientAccess,
        source: IpAddr,
    ) -> Result<ConnectGrant, IssuerError> {
        let src = source.to_string();
        let now = now_ms();
        if access.expired || access.expires_at <= now {
            return Err(self
                .refuse(
                    &access.username,
                    &access.device,
                    &src,
                    "the access is over".into(),
                )
                .await);
        }
        let (Some(creator), Some(device)) = (
            self.directory.user(&access.created_by),
            self.directory.device(&access.device),
        ) else {
            return Err(self
                .refuse(
                    &access.username,
                    &access.device,
                    &src,
                    "the access's creator or device no longer exists".into(),
                )
                .await);
        };
        let protocol = match access.kind {
            TransientKind::Ssh => Protocol::Ssh,
            TransientKind::Winbox => Protocol::Winbox,
        };
        let mut req = self.request(Action::Connect, creator, creator, device, protocol);
        req.access = AccessLevel::from_full_access(access.full_access);
        req.ttl_seconds =
            u32::try_from((access.expires_at - now).max(0) / 1000).unwrap_or(u32::MAX);
        req.source = Some(src.clone());
        req.allow_only_cidr = access.allow_only_cidr.clone();
        req.allow_rfc1918 = access.allow_rfc1918;
        self.decide_connect(&req, &access.username, &access.device, &src)
            .await
    }

    async fn decide_connect(
        &self,
        req: &Request,
        user: &str,
        device: &str,
        src: &str,
    ) -> Result<ConnectGrant, IssuerError> {
        // Both hooks in one store; its audit rows go to the sink when it is dropped, before
        // anything here waits.
        let verdict = {
            let mut d = self.policy.decisions(req);
            match d.source() {
                Verdict::Deny { policy, reason } => Err(("source", policy, reason)),
                Verdict::Allow(_) => match d.authorize() {
                    Verdict::Allow(g) => Ok(g),
                    Verdict::Deny { policy, reason } => Err(("authorize", policy, reason)),
                },
            }
        };
        match verdict {
            Ok(g) => Ok(ConnectGrant {
                access: g.access,
                max_session_seconds: g.max_ttl_seconds,
                obligations: g.obligations,
            }),
            Err((hook, policy, reason)) => {
                self.metrics.deny("connect", hook);
                Err(self
                    .refuse(user, device, src, format!("{hook} ({policy}): {reason}"))
                    .await)
            }
        }
    }

    /// The reason to record for a refusal from `src`, or `None` if this source's rows are
    /// used up for the minute (see [`super::refusals`]).
    pub(super) fn bounded_reason(&self, src: &str, reason: String) -> Option<String> {
        match self.refusals.admit(src, now_ms()) {
            Admit::Record { skipped: 0 } => Some(reason),
            Admit::Record { skipped } => Some(format!(
                "{reason} (after {skipped} more refusals from this source that were not recorded)"
            )),
            Admit::Skip { first } => {
                if first {
                    tracing::warn!(
                        source = src,
                        "over {ROWS_PER_WINDOW} refused connections from one source within a minute; not recording more of them this minute"
                    );
                }
                None
            }
        }
    }

    /// Audits a connection turned away before any login (a penalised source, too many
    /// unauthenticated connections): bounded per source like every refusal, and written with
    /// the next batch, so an accept loop under a flood never waits on the store.
    pub fn refused_before_login(&self, event: &str, src: &str, reason: String) {
        if let Some(reason) = self.bounded_reason(src, reason) {
            self.audit_later(AuditEvent {
                source: Some(src.into()),
                reason: Some(reason),
                ..audit::event(now_ms(), event, None, "deny")
            });
        }
    }

    /// Audits a refused connection and returns the one error every refusal gives.
    /// Rows are bounded per source (see [`super::refusals`]).
    async fn refuse(&self, user: &str, device: &str, src: &str, reason: String) -> IssuerError {
        self.refuse_login(user, Some(device), src, reason).await
    }

    /// [`Self::refuse`] for a login that may name no device (an SSH login name without the
    /// `:`/`#` separator): the same bounded row, the same error.
    pub async fn refuse_login(
        &self,
        user: &str,
        device: Option<&str>,
        src: &str,
        reason: String,
    ) -> IssuerError {
        let Some(reason) = self.bounded_reason(src, reason) else {
            return IssuerError::Refused;
        };
        let e = AuditEvent {
            subject: Some(user.into()),
            device: device.map(Into::into),
            reason: Some(reason),
            source: Some(src.into()),
            ..audit::event(now_ms(), "connect.refused", Some(user), "deny")
        };
        match self.record(e).await {
            Ok(()) => IssuerError::Refused,
            Err(e) => e,
        }
    }

    /// Writes a forwarder's own audit event (login, session start and end, host keys).
    pub async fn audit_event(&self, e: AuditEvent) -> Result<(), IssuerError> {
        self.record(e).await
    }
}
