//! The issuer's side of device-side users: create the access's user on the device as part of
//! creating the access, and undo the whole creation if the device fails.

use std::sync::Arc;

use super::{Issuer, IssuerError, Lifecycle};
use crate::audit::{self, now_ms};
use crate::provision::{ProvisionError, Provisioner};
use crate::secret::Secret;
use crate::store::{AuditEvent, TransientAccess};

impl Issuer {
    pub fn provisioner(&self) -> Option<&Arc<Provisioner>> {
        self.provisioner.as_ref()
    }

    /// Creates the device user of a just-stored access. If the device fails, the access is
    /// deleted (its port is free again), the failure audited, and the caller gets
    /// [`IssuerError::BadGateway`] with the device's answer.
    pub(super) async fn provision_or_discard(
        &self,
        access: &TransientAccess,
        password: &Secret<String>,
    ) -> Result<(), IssuerError> {
        let Some(p) = self
            .provisioner
            .as_ref()
            .filter(|p| p.manages(&access.device))
        else {
            return Ok(());
        };
        let cause = match p.create_user(access, password).await {
            Ok(()) => return Ok(()),
            Err(cause) => cause,
        };
        let e = AuditEvent {
            subject: Some(access.username.clone()),
            device: Some(access.device.clone()),
            object: Some(access.id.to_string()),
            reason: Some(cause.to_string()),
            ..audit::event(
                now_ms(),
                "transient.provision_failed",
                Some(&access.created_by),
                "error",
            )
        };
        audit::trace(&e);
        p.store().discard_transient(access.id, e).await?;
        // A listener manager may have picked the row up while the device was asked.
        let _ = self
            .events
            .send(Lifecycle::TransientEnded { id: access.id });
        if let ProvisionError::Store(e) = cause {
            // Our own store failing is not the device's fault: a 500, not a 502.
            return Err(e.into());
        }
        Err(IssuerError::BadGateway(format!(
            "could not create the transient user on device {:?}: {cause}",
            access.device
        )))
    }
}

impl Issuer {
    /// Device users of `site` still present past their access's end (removal pending): all for
    /// sudo users, otherwise those of the viewer's own accesses.
    pub async fn pending_removals(
        &self,
        viewer: &crate::directory::User,
        site: uuid::Uuid,
    ) -> Result<Vec<crate::store::removals::DeviceUserRemoval>, IssuerError> {
        let device = self
            .directory
            .device_by_id(site)
            .ok_or_else(|| IssuerError::NotFound(format!("unknown site {site}")))?;
        let Some(p) = &self.provisioner else {
            return Ok(Vec::new());
        };
        let own = (!self.directory.principal(viewer).sudo).then_some(viewer.name.as_str());
        Ok(p.pending(&device.name, own).await?)
    }
}
