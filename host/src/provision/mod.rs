//! Device-side users for transient accesses.
//!
//! Winbox authenticates on the device itself, so the username and password a transient access
//! hands out must exist on the device for the access's lifetime. A device's `provision` setting
//! picks the driver:
//! - absent or `"none"`: no device-side user is managed; the access only opens the forwarded
//!   port (useful when the device authenticates some other way, e.g. RADIUS);
//! - `"routeros"`: [`routeros::RouterOs`], MikroTik RouterOS v7's REST API.
//!
//! [`Provisioner::create_user`] runs inside `Issuer::create_transient`; the removal queue
//! (see [`crate::store::removals`]) is worked off by [`run`], which retries an unreachable device
//! with exponential backoff and is woken by every ending the issuer announces.

pub mod routeros;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::audit::{self, now_ms};
use crate::config::DeviceConfig;
use crate::issuer::Lifecycle;
use crate::secret::Secret;
use crate::store::removals::{DeviceUserRemoval, ProvisionStore};
use crate::store::{AuditEvent, StoreError, TransientAccess, UnixMs};
use routeros::{RouterOs, RouterOsError};

/// First retry delay of a failed removal; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often the queue is looked at even when nothing woke the worker.
const POLL: Duration = Duration::from_secs(1);
const BATCH: u32 = 64;

/// Why a device user could not be created or removed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    RouterOs(#[from] RouterOsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a device's provisioning settings (called from `Config::validate`).
pub fn validate_device(d: &DeviceConfig) -> Result<(), String> {
    let routeros_keys =
        d.routeros_url.is_some() || d.routeros_cert_sha256.is_some() || d.routeros_insecure;
    match d.provision.as_deref() {
        None | Some("none") if routeros_keys => Err(format!(
            "device {:?}: routeros_* settings need provision = \"routeros\"",
            d.name
        )),
        None | Some("none") => Ok(()),
        Some("routeros") => {
            let url = routeros::base_url(d)?;
            let has_password = d
                .credentials
                .full
                .as_ref()
                .is_some_and(|c| c.password.is_some());
            if !has_password {
                return Err(format!(
                    "device {:?}: provision = \"routeros\" logs in with credentials.full, which needs a password",
                    d.name
                ));
            }
            if let Some(pin) = &d.routeros_cert_sha256 {
                routeros::parse_pin(pin)
                    .map_err(|e| format!("device {:?}: routeros_cert_sha256: {e}", d.name))?;
            }
            if url.starts_with("http://")
                && !(d.routeros_insecure && d.routeros_cert_sha256.is_none())
            {
                return Err(format!(
                    "device {:?}: routeros_url {url:?} would send the device's credentials in clear; use https:// with routeros_cert_sha256, or set routeros_insecure = true (labs only, no pin)",
                    d.name
                ));
            }
            if url.starts_with("https://")
                && d.routeros_cert_sha256.is_some() == d.routeros_insecure
            {
                return Err(format!(
                    "device {:?}: HTTPS to RouterOS needs exactly one of routeros_cert_sha256 (the certificate's SHA-256) or routeros_insecure = true",
                    d.name
                ));
            }
            Ok(())
        }
        Some(other) => Err(format!(
            "device {:?}: unknown provision driver {other:?} (expected \"none\" or \"routeros\")",
            d.name
        )),
    }
}

/// The drivers by device name, and the removal queue.
pub struct Provisioner {
    drivers: HashMap<String, RouterOs>,
    store: Arc<dyn ProvisionStore>,
    wake: Notify,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("drivers", &self.drivers)
            .finish_non_exhaustive()
    }
}

impl Provisioner {
    /// Builds a driver for every device with `provision = "routeros"`.
    pub fn new(
        devices: &[DeviceConfig],
        store: Arc<dyn ProvisionStore>,
    ) -> Result<Self, ProvisionError> {
        let mut drivers = HashMap::new();
        for d in devices {
            if d.provision.as_deref() == Some("routeros") {
                drivers.insert(d.name.clone(), RouterOs::new(d)?);
            }
        }
        Ok(Self {
            drivers,
            store,
            wake: Notify::new(),
        })
    }

    pub fn store(&self) -> &Arc<dyn ProvisionStore> {
        &self.store
    }

    /// Whether accesses to `device` get a device-side user.
    pub fn manages(&self, device: &str) -> bool {
        self.drivers.contains_key(device)
    }

    /// Creates the access's user on its device. The removal is queued first, so a crash at any
    /// point leaves the store knowing the user may exist. On error the device holds no user of
    /// this access, or (device unreachable mid-request) its removal is due now.
    pub async fn create_user(
        &self,
        a: &TransientAccess,
        password: &Secret<String>,
    ) -> Result<(), ProvisionError> {
        let Some(driver) = self.drivers.get(&a.device) else {
            return Ok(());
        };
        let now = now_ms();
        self.store
            .schedule_removal(DeviceUserRemoval {
                username: a.username.clone(),
                device: a.device.clone(),
                access_id: a.id,
                created_at: now,
                attempts: 0,
                next_attempt_at: a.expires_at,
                last_error: None,
            })
            .await?;
        let group = if a.full_access { "full" } else { "read" };
        let comment = format!("sallyport transient access {}", a.id);
        let Err(cause) = driver
            .create_user(&a.username, password, group, &comment)
            .await
        else {
            self.audit(AuditEvent {
                subject: Some(a.username.clone()),
                device: Some(a.device.clone()),
                object: Some(a.id.to_string()),
                reason: Some(format!("group {group}")),
                ..audit::event(now_ms(), "device_user.created", None, "ok")
            })
            .await;
            return Ok(());
        };
        if cause.nothing_sent() {
            self.finished(a.id, &a.username, &a.device, "never created")
                .await?;
        } else {
            // The device may have acted before the failure: make sure the user is gone.
            self.store.removal_due_now(a.id, now_ms()).await?;
            self.remove(&self.removal_of(a)).await;
        }
        Err(cause.into())
    }

    fn removal_of(&self, a: &TransientAccess) -> DeviceUserRemoval {
        DeviceUserRemoval {
            username: a.username.clone(),
            device: a.device.clone(),
            access_id: a.id,
            created_at: now_ms(),
            attempts: 0,
            next_attempt_at: now_ms(),
            last_error: None,
        }
    }

    /// Device users still present past their access's end, for the API.
    pub async fn pending(
        &self,
        device: &str,
        created_by: Option<&str>,
    ) -> Result<Vec<DeviceUserRemoval>, StoreError> {
        self.store
            .pending_removals(device, created_by, now_ms())
            .await
    }

    /// One removal attempt; failures are recorded with the next attempt's time.
    async fn remove(&self, r: &DeviceUserRemoval) {
        let Some(driver) = self.drivers.get(&r.device) else {
            // The device lost its driver in the configuration: nothing can remove the user.
            let why = "the device no longer has a provisioning driver; remove the user by hand";
            if let Err(e) = self
                .finished(r.access_id, &r.username, &r.device, why)
                .await
            {
                tracing::error!(error = %e, "cannot record a device user removal");
            }
            return;
        };
        let result = match driver.remove_user(&r.username).await {
            Ok(0) => {
                self.finished(r.access_id, &r.username, &r.device, "not present")
                    .await
            }
            Ok(_) => {
                self.finished(r.access_id, &r.username, &r.device, "removed")
                    .await
            }
            Err(e) => {
                let next = now_ms() + backoff_ms(r.attempts);
                let event = AuditEvent {
                    subject: Some(r.username.clone()),
                    device: Some(r.device.clone()),
                    object: Some(r.access_id.to_string()),
                    reason: Some(format!("attempt {}: {e}", r.attempts + 1)),
                    ..audit::event(now_ms(), "device_user.remove_failed", None, "error")
                };
                audit::trace(&event);
                self.store
                    .removal_failed(&r.username, next, &e.to_string(), event)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot record a device user removal");
        }
    }

    async fn finished(
        &self,
        access: uuid::Uuid,
        username: &str,
        device: &str,
        how: &str,
    ) -> Result<(), StoreError> {
        let event = AuditEvent {
            subject: Some(username.into()),
            device: Some(device.into()),
            object: Some(access.to_string()),
            reason: Some(how.into()),
            ..audit::event(now_ms(), "device_user.removed", None, "ok")
        };
        audit::trace(&event);
        self.store.removal_done(username, event).await
    }

    async fn audit(&self, e: AuditEvent) {
        audit::trace(&e);
        if let Err(err) = self.store.audit(e).await {
            tracing::error!(error = %err, "cannot write an audit row");
        }
    }

    /// Works off every removal due now.
    async fn work(&self) {
        loop {
            let due = match self.store.due_removals(now_ms(), BATCH).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the device user removal queue");
                    return;
                }
            };
            let n = due.len();
            for r in &due {
                self.remove(r).await;
            }
            if n < BATCH as usize {
                return;
            }
        }
    }
}

fn backoff_ms(attempts: u32) -> UnixMs {
    let ms = FIRST_BACKOFF
        .as_millis()
        .saturating_mul(1u128 << attempts.min(20))
        .min(MAX_BACKOFF.as_millis());
    ms as UnixMs
}

/// Removes device users as their accesses end, until `shutdown` resolves. Subscribe `events`
/// before accesses can end so none is missed; the queue also catches up on start.
pub async fn run(
    p: Arc<Provisioner>,
    mut events: broadcast::Receiver<Lifecycle>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    if p.drivers.is_empty() {
        return;
    }
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
            _ = p.wake.notified() => {}
            e = events.recv() => match e {
                Ok(Lifecycle::TransientEnded { id }) => {
                    if let Err(e) = p.store.removal_due_now(id, now_ms()).await {
                        tracing::error!(error = %e, "cannot queue a device user removal");
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                // The issuer is gone; keep polling the queue until shutdown.
                Err(broadcast::error::RecvError::Closed) => events = broadcast::channel(1).1,
            },
        }
        p.work().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(0), 1_000);
        assert_eq!(backoff_ms(1), 2_000);
        assert_eq!(backoff_ms(3), 8_000);
        assert_eq!(backoff_ms(30), 300_000);
    }

    fn device(extra: &str) -> DeviceConfig {
        let text = format!(
            "name = \"r1\"\nid = \"d290f1ee-6c54-4b01-90e6-d701748f0851\"\nwinbox = \"192.0.2.1:8291\"\n\
             credentials.full = {{ user = \"admin\", password = \"pw\" }}\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn provisioning_settings_are_checked() {
        assert!(validate_device(&device("")).is_ok());
        assert!(validate_device(&device("provision = \"none\"")).is_ok());
        let pin = format!("routeros_cert_sha256 = \"{}\"", "00".repeat(32));
        assert!(validate_device(&device(&format!("provision = \"routeros\"\n{pin}"))).is_ok());
        assert!(
            validate_device(&device(
                "provision = \"routeros\"\nrouteros_insecure = true"
            ))
            .is_ok()
        );
        assert!(
            validate_device(&device(
                "provision = \"routeros\"\nrouteros_url = \"http://192.0.2.1\"\nrouteros_insecure = true"
            ))
            .is_ok()
        );
        for (extra, needle) in [
            ("provision = \"routeros\"", "exactly one of"),
            (
                "provision = \"routeros\"\nrouteros_url = \"http://192.0.2.1\"",
                "in clear",
            ),
            (
                &format!("provision = \"routeros\"\nrouteros_url = \"http://192.0.2.1\"\n{pin}"),
                "in clear",
            ),
            ("provision = \"ftp\"", "unknown provision driver"),
            ("routeros_insecure = true", "need provision"),
            (
                "provision = \"routeros\"\nrouteros_url = \"ftp://x\"\nrouteros_insecure = true",
                "must start with",
            ),
            (
                "provision = \"routeros\"\nrouteros_cert_sha256 = \"abc\"",
                "routeros_cert_sha256",
            ),
        ] {
            let msg = validate_device(&device(extra)).unwrap_err();
            assert!(msg.contains(needle), "{extra}: {msg}");
        }
    }
}
