//! The device-facing half: log in to a managed device's SSH service with its stored credential
//! (password, or a key file read through the data directory), after verifying its host key
//! against the pinned `host_key` fingerprint, or — for a device without one — against the key
//! recorded on first use. A mismatch is refused and audited; there is no silent trust.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Channel, client};

use super::relay::{Opened, Relay, prohibit};
use super::{SshError, SshService};
use crate::audit::{self, now_ms};
use crate::config::AccessLevel;
use crate::directory::Device;
use crate::issuer::Issuer;
use crate::store::AuditEvent;

/// How long reaching and logging in to a device may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// An authenticated connection to a device.
pub type DeviceLink = client::Handle<DeviceHandler>;

/// Why the gateway could not log in to a device; shown to the user, so never secret.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device {0:?} has no SSH address configured")]
    NoAddress(String),
    #[error("device {device:?} has no {level} credential configured")]
    NoCredential { device: String, level: &'static str },
    #[error("cannot read the key file of device {device:?}: {message}")]
    KeyFile { device: String, message: String },
    #[error(
        "the host key of device {device:?} does not match the trusted key (expected {expected}, got {found}); refusing to connect"
    )]
    HostKeyMismatch {
        device: String,
        expected: String,
        found: String,
    },
    #[error("cannot reach device {device:?}: {message}")]
    Connect { device: String, message: String },
    #[error("device {device:?} refused the stored {level} credential")]
    AuthFailed { device: String, level: &'static str },
}

/// The russh client configuration towards devices.
pub fn config() -> client::Config {
    client::Config {
        nodelay: true,
        // Devices that die silently are noticed within ~90 s.
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        inactivity_timeout: None,
        // Larger buffers keep bulk copies (scp, rsync) moving while the user side catches up.
        channel_buffer_size: 256,
        // AES-GCM first on the device leg: with AES-NI it costs the gateway (and the device)
        // far less CPU per byte than ChaCha20-Poly1305, which user clients usually pick.
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(&[
                russh::cipher::AES_256_GCM,
                russh::cipher::AES_128_GCM,
                russh::cipher::CHACHA20_POLY1305,
                russh::cipher::AES_256_CTR,
                russh::cipher::AES_128_CTR,
            ]),
            ..russh::Preferred::default()
        },
        ..client::Config::default()
    }
}

/// A pinned fingerprint in the form OpenSSH prints: `SHA256:` and unpadded base64.
fn normalise(fingerprint: &str) -> String {
    let f = fingerprint.trim().trim_end_matches('=');
    match f.strip_prefix("SHA256:") {
        Some(rest) => format!("SHA256:{rest}"),
        None => format!("SHA256:{f}"),
    }
}

/// Verifies the device's host key during the handshake.
pub struct DeviceHandler {
    device: String,
    pinned: Option<String>,
    issuer: Arc<Issuer>,
    /// Who the connection is for and from where, for the audit rows.
    actor: String,
    source: String,
    /// Set when the key did not match, so the caller can say so.
    mismatch: Arc<Mutex<Option<(String, String)>>>,
    /// Where channels the device opens back (agent, remote forwarding) go, if allowed.
    relay: Relay,
}

impl DeviceHandler {
    fn audit(&self, name: &str, outcome: &str, reason: String) -> AuditEvent {
        AuditEvent {
            device: Some(self.device.clone()),
            reason: Some(reason),
            source: Some(self.source.clone()),
            ..audit::event(now_ms(), name, Some(&self.actor), outcome)
        }
    }
}

impl client::Handler for DeviceHandler {
    type Error = SshError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        let found = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        let expected = match &self.pinned {
            Some(pinned) => normalise(pinned),
            None => match self.issuer.store().device_host_key(&self.device).await? {
                Some(stored) => stored,
                None => {
                    let e = self.audit(
                        "ssh.host_key_trusted",
                        "ok",
                        format!("trusted on first use: {found}"),
                    );
                    let stored = self
                        .issuer
                        .store()
                        .trust_device_host_key(&self.device, &found, now_ms(), e.clone())
                        .await?;
                    if stored == found {
                        audit::trace(&e);
                    }
                    stored
                }
            },
        };
        if expected == found {
            return Ok(true);
        }
        let e = self.audit(
            "ssh.host_key_mismatch",
            "deny",
            format!("expected {expected}, got {found}"),
        );
        self.issuer.audit_event(e).await?;
        *self.mismatch.lock() = Some((expected, found));
        Ok(false)
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), SshError> {
        self.relay.open(Opened::Agent, channel, reply);
        Ok(())
    }

    // Channels a device has no business opening towards an SSH client are refused, rather
    // than accepted and left unread (russh's default).
    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), SshError> {
        prohibit(reply).await;
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<client::Msg>,
        _host: &str,
        _port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), SshError> {
        prohibit(reply).await;
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<client::Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), SshError> {
        prohibit(reply).await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<client::Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), SshError> {
        prohibit(reply).await;
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        channel: Channel<client::Msg>,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), SshError> {
        let kind = Opened::X11 {
            originator_address: originator_address.to_string(),
            originator_port,
        };
        self.relay.open(kind, channel, reply);
        Ok(())
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), SshError> {
        let kind = Opened::ForwardedTcpip {
            connected_address: connected_address.to_string(),
            connected_port,
            originator_address: originator_address.to_string(),
            originator_port,
        };
        self.relay.open(kind, channel, reply);
        Ok(())
    }
}

/// Connects to `device` and logs in with its credential for `level`. `actor` and `source`
/// name the user connection this is for, in audit rows.
pub async fn connect(
    service: &SshService,
    device: &Device,
    level: AccessLevel,
    actor: &str,
    source: &str,
    relay: Relay,
) -> Result<DeviceLink, DeviceError> {
    let name = device.name.clone();
    let addr = device
        .ssh
        .clone()
        .ok_or_else(|| DeviceError::NoAddress(name.clone()))?;
    let credential = device
        .credential(level)
        .ok_or_else(|| DeviceError::NoCredential {
            device: name.clone(),
            level: level.credential_name(),
        })?;
    let key = match &credential.key_file {
        None => None,
        Some(path) => {
            let bad = |message: String| DeviceError::KeyFile {
                device: name.clone(),
                message,
            };
            // Through the data directory handle: relative paths only, nothing outside it.
            let text = service
                .data
                .read_to_string(path)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            let key = russh::keys::decode_secret_key(&text, None)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            Some(Arc::new(key))
        }
    };
    let mismatch = Arc::new(Mutex::new(None));
    let handler = DeviceHandler {
        device: name.clone(),
        pinned: device.host_key.clone(),
        issuer: service.issuer.clone(),
        actor: actor.to_string(),
        source: source.to_string(),
        mismatch: mismatch.clone(),
        relay,
    };
    let connect_err = |message: String| DeviceError::Connect {
        device: name.clone(),
        message,
    };
    let login = async {
        let mut handle = client::connect(service.client_config.clone(), addr.as_str(), handler)
            .await
            .map_err(|e| match mismatch.lock().take() {
                Some((expected, found)) => DeviceError::HostKeyMismatch {
                    device: name.clone(),
                    expected,
                    found,
                },
                None => connect_err(e.to_string()),
            })?;
        let result = match (&key, &credential.password) {
            (Some(key), _) => {
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| connect_err(e.to_string()))?
                    .flatten();
                handle
                    .authenticate_publickey(
                        credential.user.clone(),
                        PrivateKeyWithHashAlg::new(key.clone(), hash),
                    )
                    .await
            }
            (None, Some(password)) => {
                handle
                    .authenticate_password(credential.user.clone(), password.expose().clone())
                    .await
            }
            (None, None) => {
                return Err(DeviceError::NoCredential {
                    device: name.clone(),
                    level: level.credential_name(),
                });
            }
        };
        match result {
            Ok(r) if r.success() => Ok(handle),
            Ok(_) => Err(DeviceError::AuthFailed {
                device: name.clone(),
                level: level.credential_name(),
            }),
            Err(e) => Err(connect_err(e.to_string())),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, login)
        .await
        .map_err(|_| connect_err(format!("no login within {CONNECT_TIMEOUT:?}")))?
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn fingerprints_compare_in_openssh_form() {
        assert_eq!(normalise(" SHA256:abc= "), "SHA256:abc");
        assert_eq!(normalise("abc"), "SHA256:abc");
    }
}
