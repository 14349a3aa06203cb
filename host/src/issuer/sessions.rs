//! Nodegrid open sessions: issuing one-time keys, redeeming them once, listing and
//! terminating them.

use serde::Deserialize;

use super::{Issuer, IssuerError, Lifecycle, token};
use crate::audit::{self, now_ms};
use crate::config::AccessLevel;
use crate::directory::User;
use crate::metrics::Metrics;
use crate::policy::{Action, Protocol, Verdict};
use crate::secret::Secret;
use crate::store::{AuditEvent, OpenSession, SessionState};

/// Default key lifetime when `duration` is absent (Nodegrid: 10 s).
pub const DEFAULT_DURATION_SECS: u64 = 10;

/// `duration` as sent: the Nodegrid sample sends `"600"` (a string), others send `600`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DurationInput {
    Number(serde_json::Number),
    Text(String),
}

impl DurationInput {
    /// Whole seconds in `1..=max`, or a message saying what is wrong.
    pub fn seconds(&self, max: u64) -> Result<u64, String> {
        let text = match self {
            Self::Number(n) => n.to_string(),
            Self::Text(s) => s.trim().to_string(),
        };
        let secs: i128 = text
            .parse()
            .map_err(|_| format!("duration must be a whole number of seconds, got {text:?}"))?;
        if secs <= 0 {
            return Err(format!("duration must be at least 1 second, got {secs}"));
        }
        if secs > max as i128 {
            return Err(format!(
                "duration must be at most {max} seconds, got {secs}"
            ));
        }
        Ok(secs as u64)
    }
}

impl Issuer {
    /// `POST /api/v1/opensession`: a one-time key for `user` on `target_device`.
    pub async fn issue_session(
        &self,
        requester: &User,
        target_device: &str,
        user: &str,
        duration: Option<&DurationInput>,
        source: Option<String>,
    ) -> Result<Secret<String>, IssuerError> {
        let secs = match duration {
            None => DEFAULT_DURATION_SECS,
            Some(d) => d
                .seconds(self.cfg.max_otk_duration_secs)
                .map_err(IssuerError::Invalid)?,
        };
        let device = self
            .directory
            .device(target_device)
            .ok_or_else(|| IssuerError::NotFound(format!("unknown device {target_device:?}")))?;
        let subject = self
            .directory
            .user(user)
            .ok_or_else(|| IssuerError::NotFound(format!("unknown user {user:?}")))?;
        let mut req = self.request(
            Action::IssueSession,
            requester,
            subject,
            device,
            Protocol::Ssh,
        );
        req.ttl_seconds = u32::try_from(secs).unwrap_or(u32::MAX);
        req.source = source.clone();
        let now = now_ms();
        let denial = |hook: &str, reason: String| AuditEvent {
            subject: Some(subject.name.clone()),
            device: Some(device.name.clone()),
            reason: Some(format!("{hook}: {reason}")),
            source: source.clone(),
            ..audit::event(now, "session.denied", Some(&requester.name), "deny")
        };
        // One request, one store: `sudo` and `authorize` share it. Its audit rows go into the
        // transaction that writes the outcome.
        let (verdict, decisions) = {
            let mut d = self.policy.decisions(&req);
            let sudo = if requester.name == subject.name {
                None
            } else {
                match d.sudo() {
                    Verdict::Deny { reason, .. } => Some(("sudo", reason)),
                    Verdict::Allow(_) => None,
                }
            };
            let verdict = match sudo {
                Some(denied) => Err(denied),
                None => match d.authorize() {
                    Verdict::Allow(g) => Ok(g),
                    Verdict::Deny { reason, .. } => Err(("authorize", reason)),
                },
            };
            (verdict, d.take_audit())
        };
        let grant = match verdict {
            Ok(g) => g,
            Err((hook, reason)) => {
                return Err(self
                    .denied("open_session", hook, denial(hook, reason), decisions)
                    .await);
            }
        };
        let secs = grant
            .max_ttl_seconds
            .map_or(secs, |max| secs.min(u64::from(max)));
        let (otk, hash) = token::new_otk();
        let session = OpenSession {
            // Time-ordered (v7): each new id lands at the end of the primary-key index, so an
            // issuance dirties one random index page (the token hash's) instead of two.
            id: uuid::Uuid::now_v7().to_string(),
            token_hash: hash,
            user: subject.name.clone(),
            device: device.name.clone(),
            requested_by: requester.name.clone(),
            // Least privilege when a policy allows without naming a level.
            access: grant.access.unwrap_or(AccessLevel::ReadOnly),
            state: SessionState::Generated,
            created_at: now,
            expires_at: now + (secs as i64) * 1000,
            initiated_at: None,
            ended_at: None,
            source: None,
        };
        let e = AuditEvent {
            subject: Some(session.user.clone()),
            device: Some(session.device.clone()),
            object: Some(session.id.clone()),
            source,
            ..audit::event(now, "session.issued", Some(&requester.name), "allow")
        };
        audit::trace(&e);
        let mut rows = decisions;
        rows.push(e);
        self.store.insert_session(session, rows).await?;
        self.metrics
            .issued
            .get_or_create(&Metrics::kind("open_session"))
            .inc();
        Ok(otk)
    }

    /// Redeems a one-time key exactly once for `user` on `device` (called by the SSH and web
    /// forwarders at login). Every failure is the same [`IssuerError::Refused`].
    pub async fn redeem(
        &self,
        otk: &Secret<String>,
        user: &str,
        device: &str,
        source: Option<String>,
    ) -> Result<OpenSession, IssuerError> {
        let now = now_ms();
        let hash = token::hash(otk.expose());
        let redeemed = if token::looks_like_otk(otk.expose()) {
            self.store
                .redeem_session(hash, user, device, now, source.clone())
                .await?
        } else {
            None
        };
        match redeemed {
            Some(s) if token::hashes_equal(&s.token_hash, &hash) => {
                audit::trace(&AuditEvent {
                    source,
                    ..s.audit_event(now, "session.redeemed", Some(user), "allow")
                });
                self.metrics
                    .redeemed
                    .get_or_create(&Metrics::kind("open_session"))
                    .inc();
                Ok(s)
            }
            _ => {
                self.metrics.deny("open_session", "redeem");
                self.record(AuditEvent {
                    subject: Some(user.into()),
                    device: Some(device.into()),
                    reason: Some(IssuerError::Refused.to_string()),
                    source,
                    ..audit::event(now, "session.redeem_refused", Some(user), "deny")
                })
                .await?;
                Err(IssuerError::Refused)
            }
        }
    }

    fn sees_everything(&self, viewer: &User) -> bool {
        self.directory.principal(viewer).sudo
    }

    fn may_see(&self, viewer: &User, s: &OpenSession) -> bool {
        self.sees_everything(viewer) || s.user == viewer.name || s.requested_by == viewer.name
    }

    /// Sessions the viewer may see: everyone's for sudo users, otherwise their own.
    pub async fn list_sessions(&self, viewer: &User) -> Result<Vec<OpenSession>, IssuerError> {
        let filter = (!self.sees_everything(viewer)).then_some(viewer.name.as_str());
        Ok(self.store.list_sessions(filter).await?)
    }

    /// Terminates sessions named in `"id[,id…]"`. All ids must exist and be visible to the
    /// viewer, or nothing is terminated. Already-ended sessions are accepted and left as they are.
    /// `source`: the address the viewer asked from (for the audit rows).
    pub async fn terminate(
        &self,
        viewer: &User,
        ids: &str,
        source: Option<String>,
    ) -> Result<Vec<String>, IssuerError> {
        let ids: Vec<String> = ids
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if ids.is_empty() {
            return Err(IssuerError::Invalid(
                "sessions must name at least one session id".into(),
            ));
        }
        let mut unknown = Vec::new();
        for id in &ids {
            match self.store.session(id).await? {
                Some(s) if self.may_see(viewer, &s) => {}
                _ => unknown.push(id.as_str()),
            }
        }
        if !unknown.is_empty() {
            return Err(IssuerError::NotFound(format!(
                "unknown session(s): {}",
                unknown.join(",")
            )));
        }
        let ended = self
            .store
            .terminate_sessions(ids, &viewer.name, source.clone(), now_ms())
            .await?;
        for s in &ended {
            audit::trace(&AuditEvent {
                source: source.clone(),
                ..s.audit_event(now_ms(), "session.terminated", Some(&viewer.name), "ok")
            });
            let _ = self
                .events
                .send(Lifecycle::SessionEnded { id: s.id.clone() });
        }
        Ok(ended.into_iter().map(|s| s.id).collect())
    }

    /// The connection an initiated session opened has ended (the user logged out, the
    /// connection dropped, the device failed): the session is over, and tracking shows it
    /// `expired` with its `ended_at`. A session terminated meanwhile keeps `terminated`.
    /// Called as a connection winds down, with nobody to answer: a store error is logged.
    pub async fn session_closed(&self, id: &str) {
        let now = now_ms();
        match self.store.close_session(id, now).await {
            Ok(Some(s)) => {
                audit::trace(&s.audit_event(now, "session.closed", Some(&s.user), "ok"));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(session = id, error = %e, "cannot mark the open session closed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<u64, String> {
        let d: DurationInput = serde_json::from_str(json).map_err(|e| e.to_string())?;
        d.seconds(86400)
    }

    #[test]
    fn duration_accepts_integers_and_numeric_strings() {
        assert_eq!(parse("600"), Ok(600));
        assert_eq!(parse("\"600\""), Ok(600));
        assert_eq!(parse("\" 30 \""), Ok(30));
    }

    #[test]
    fn duration_rejects_bad_values() {
        for bad in [
            "0",
            "-5",
            "\"-5\"",
            "\"abc\"",
            "1.5",
            "\"1e3\"",
            "86401",
            "99999999999999999999999",
            "\"\"",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}
