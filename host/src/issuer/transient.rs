//! Altostrat transient accesses: a temporary username and password on a dedicated port of the
//! gateway, for `winbox` or `ssh`, limited by source, revoked at `expires_at` or early.

use ipnet::IpNet;

use super::{Issuer, IssuerError, Lifecycle, token};
use crate::audit::{self, now_ms};
use crate::config::AccessLevel;
use crate::directory::{Device, User};
use crate::metrics::Metrics;
use crate::policy::{Action, Protocol, Verdict};
use crate::secret::Secret;
use crate::store::{AuditEvent, StoreError, TransientAccess, TransientKind};

/// Allowed `expire_after_minutes`, as documented by Altostrat.
pub const EXPIRE_MINUTES: std::ops::RangeInclusive<i64> = 15..=1440;
const PASSWORD_LEN: usize = 24;

/// A validated-by-type creation request; ranges are checked by [`Issuer::create_transient`].
#[derive(Debug, Clone)]
pub struct NewTransient {
    pub expire_after_minutes: i64,
    pub kind: TransientKind,
    pub full_access: bool,
    pub allow_rfc1918: bool,
    pub allow_only_cidr: Option<String>,
}

impl Issuer {
    fn site(&self, site: uuid::Uuid) -> Result<&Device, IssuerError> {
        self.directory
            .device_by_id(site)
            .ok_or_else(|| IssuerError::NotFound(format!("unknown site {site}")))
    }

    /// `POST /control-plane/{siteId}/transient-accesses`.
    pub async fn create_transient(
        &self,
        requester: &User,
        site: uuid::Uuid,
        new: NewTransient,
        source: Option<String>,
    ) -> Result<TransientAccess, IssuerError> {
        if !EXPIRE_MINUTES.contains(&new.expire_after_minutes) {
            return Err(IssuerError::Invalid(format!(
                "expire_after_minutes must be between {} and {}, got {}",
                EXPIRE_MINUTES.start(),
                EXPIRE_MINUTES.end(),
                new.expire_after_minutes
            )));
        }
        // A blank CIDR is refused rather than read as "no restriction": an access open to every
        // source should be asked for by leaving the field out, not by an empty form field.
        let cidr = match new.allow_only_cidr.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(IssuerError::Invalid(
                    "allow_only_cidr is blank: leave it out (or null) for no source restriction"
                        .into(),
                ));
            }
            Some(c) => Some(source_cidr(c).ok_or_else(|| {
                IssuerError::Invalid(format!(
                    "allow_only_cidr {c:?} is not an address or a CIDR such as 203.0.113.42/32"
                ))
            })?),
        };
        let device = self.site(site)?;
        let (address, protocol) = match new.kind {
            TransientKind::Winbox => (&device.winbox, Protocol::Winbox),
            TransientKind::Ssh => (&device.ssh, Protocol::Ssh),
        };
        if address.is_none() {
            return Err(IssuerError::Invalid(format!(
                "device {:?} has no {} address configured",
                device.name,
                new.kind.as_str()
            )));
        }
        let now = now_ms();
        let mut req = self.request(
            Action::IssueTransient,
            requester,
            requester,
            device,
            protocol,
        );
        req.access = AccessLevel::from_full_access(new.full_access);
        req.ttl_seconds = (new.expire_after_minutes * 60) as u32;
        req.allow_only_cidr = cidr.clone();
        req.allow_rfc1918 = new.allow_rfc1918;
        req.source = source.clone();
        let grant = match self.policy.authorize(&req) {
            Verdict::Allow(g) => g,
            Verdict::Deny { reason, .. } => {
                let e = AuditEvent {
                    subject: Some(requester.name.clone()),
                    device: Some(device.name.clone()),
                    reason: Some(format!("authorize: {reason}")),
                    source,
                    ..audit::event(now, "transient.denied", Some(&requester.name), "deny")
                };
                return Err(self.denied("transient", "authorize", e, Vec::new()).await);
            }
        };
        let full_access = new.full_access && grant.access != Some(AccessLevel::ReadOnly);
        // An SSH access logs in to the device with the gateway's stored credential of its
        // level: without one, every login would fail, so the access is not made at all.
        let level = AccessLevel::from_full_access(full_access);
        if new.kind == TransientKind::Ssh && device.credential(level).is_none() {
            return Err(IssuerError::Invalid(format!(
                "device {:?} has no {} credential configured, so an SSH access at that level \
                 could never log in{}",
                device.name,
                level.credential_name(),
                if full_access {
                    ""
                } else {
                    " (ask for full_access, or configure credentials.read_only)"
                }
            )));
        }
        let ttl_ms = grant
            .max_ttl_seconds
            .map_or(req.ttl_seconds, |max| req.ttl_seconds.min(max)) as i64
            * 1000;
        let password = token::new_password(PASSWORD_LEN);
        let access = TransientAccess {
            id: uuid::Uuid::new_v4(),
            site_id: site,
            device: device.name.clone(),
            created_by: requester.name.clone(),
            username: token::new_transient_username(),
            password_hash: token::hash(password.expose()),
            password_sealed: self.sealer.seal(&password)?,
            port: 0,
            kind: new.kind,
            full_access,
            allow_rfc1918: new.allow_rfc1918,
            allow_only_cidr: cidr,
            created_at: now,
            expires_at: now + ttl_ms,
            expired: false,
            revoked_early: false,
            ended_at: None,
        };
        let e = AuditEvent {
            subject: Some(access.username.clone()),
            device: Some(device.name.clone()),
            source,
            ..audit::event(now, "transient.issued", Some(&requester.name), "allow")
        };
        let created = match self
            .store
            .create_transient(access, self.cfg.ports.clone(), e.clone())
            .await
        {
            Ok(a) => a,
            Err(StoreError::NoFreePort) => return Err(IssuerError::Exhausted),
            Err(other) => return Err(other.into()),
        };
        audit::trace(&AuditEvent {
            object: Some(created.id.to_string()),
            ..e
        });
        self.provision_or_discard(&created, &password).await?;
        self.metrics
            .issued
            .get_or_create(&Metrics::kind("transient"))
            .inc();
        // Registered before the listener service hears of the access, so its report is not
        // missed; the answer goes out once the port accepts connections.
        let ready = self.listening.expect(created.kind, created.id);
        let _ = self
            .events
            .send(Lifecycle::TransientCreated { id: created.id });
        if let Some(rx) = ready {
            self.listening.wait(created.id, rx).await;
        }
        Ok(created)
    }

    fn may_see_transient(&self, viewer: &User, a: &TransientAccess) -> bool {
        self.directory.principal(viewer).sudo || a.created_by == viewer.name
    }

    /// `GET /sites/{siteId}/transient-accesses/{accessId}`.
    pub async fn transient(
        &self,
        viewer: &User,
        site: uuid::Uuid,
        id: uuid::Uuid,
    ) -> Result<TransientAccess, IssuerError> {
        self.site(site)?;
        match self.store.transient(site, id).await? {
            Some(a) if self.may_see_transient(viewer, &a) => Ok(a),
            _ => Err(IssuerError::NotFound(format!(
                "unknown transient access {id}"
            ))),
        }
    }

    /// `GET /sites/{siteId}/transient-accesses`: all for sudo users, otherwise the viewer's own.
    pub async fn list_transients(
        &self,
        viewer: &User,
        site: uuid::Uuid,
    ) -> Result<Vec<TransientAccess>, IssuerError> {
        self.site(site)?;
        let own = (!self.directory.principal(viewer).sudo).then_some(viewer.name.as_str());
        Ok(self.store.list_transients(site, own).await?)
    }

    /// `DELETE /sites/{siteId}/transient-accesses/{accessId}`: revoke early.
    pub async fn revoke_transient(
        &self,
        viewer: &User,
        site: uuid::Uuid,
        id: uuid::Uuid,
        source: Option<String>,
    ) -> Result<TransientAccess, IssuerError> {
        let current = self.transient(viewer, site, id).await?;
        let now = now_ms();
        if current.expired || current.expires_at <= now {
            return Err(IssuerError::Conflict(format!(
                "transient access {id} has already expired or been revoked"
            )));
        }
        let revoked = self
            .store
            .revoke_transient(site, id, &viewer.name, source.clone(), now)
            .await?
            .ok_or_else(|| {
                IssuerError::Conflict(format!(
                    "transient access {id} has already expired or been revoked"
                ))
            })?;
        audit::trace(&AuditEvent {
            source,
            ..revoked.audit_event(now, "transient.revoked", Some(&viewer.name), "ok")
        });
        let _ = self.events.send(Lifecycle::TransientEnded { id });
        Ok(revoked)
    }

    /// The access's password, unsealed for the API response.
    pub fn transient_password(&self, a: &TransientAccess) -> Result<Secret<String>, IssuerError> {
        Ok(self.sealer.open_sealed(&a.password_sealed)?)
    }

    pub fn public_host(&self) -> &str {
        &self.cfg.public_host
    }
}

/// `allow_only_cidr` as stored. A single address is its own /32 (or /128): the Altostrat
/// seed describes the field as "a single source IP address or CIDR range". An IPv4-mapped
/// IPv6 network (`::ffff:203.0.113.0/120`) is stored as the IPv4 network it names, since
/// IPv4 peers are seen as IPv4 addresses; kept as IPv6 it would match no peer at all.
fn source_cidr(text: &str) -> Option<String> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(text.parse::<std::net::IpAddr>().ok()?),
    };
    let net = match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            // Shorter than /96 it is not an IPv4 network at all, and matches no peer.
            Some(_) if v6.prefix_len() < 96 => return None,
            Some(v4) => IpNet::V4(ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok()?),
            None => net,
        },
        other => other,
    };
    Some(net.to_string())
}

#[cfg(test)]
mod tests {
    use super::source_cidr;

    #[test]
    fn source_cidrs_are_stored_as_the_networks_peers_are_matched_against() {
        for (given, stored) in [
            ("203.0.113.42/32", Some("203.0.113.42/32")),
            ("10.1.2.3/8", Some("10.1.2.3/8")),
            ("203.0.113.42", Some("203.0.113.42/32")),
            ("2001:db8::1", Some("2001:db8::1/128")),
            ("2001:db8::/32", Some("2001:db8::/32")),
            ("::ffff:127.0.0.2/128", Some("127.0.0.2/32")),
            ("::ffff:192.0.2.0/120", Some("192.0.2.0/24")),
            ("::ffff:127.0.0.2/90", None),
            ("nope", None),
            ("10.0.0.0/33", None),
        ] {
            assert_eq!(source_cidr(given).as_deref(), stored, "{given}");
        }
    }
}
