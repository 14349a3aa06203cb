//! The MikroTik RouterOS v7 REST driver: creates and removes the `transient-…` users that Winbox
//! (which authenticates on the device itself) logs in with.
//!
//! Requests, with HTTP basic auth as the device's `credentials.full` user:
//! - create: `PUT /rest/user` `{"name", "group": "full"|"read", "password", "comment"}`;
//! - remove: `GET /rest/user?name=NAME` for the `.id`, then `DELETE /rest/user/*ID` per match.
//!
//! RouterOS certificates are nearly always self-signed, so HTTPS is verified by pinning the
//! certificate's SHA-256 (`routeros_cert_sha256`) rather than by a CA; `routeros_insecure`
//! accepts any certificate (labs only). Either way the TLS handshake signature is checked, so a
//! pinned certificate proves the peer holds its key.

use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::DeviceConfig;
use crate::secret::Secret;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong talking to a RouterOS device. Messages never carry a password: the
/// device's own words are kept, with any password of the request blanked out (a device that
/// echoes the request body in its error would otherwise put it in the log and the 502).
#[derive(Debug, thiserror::Error)]
pub enum RouterOsError {
    /// No answer. `sent` is false when the connection itself failed, so the request cannot
    /// have had an effect on the device.
    #[error("cannot reach the RouterOS REST API at {url}: {message}")]
    Unreachable {
        url: String,
        message: String,
        sent: bool,
    },
    #[error("RouterOS refused {method} {path} with HTTP {status}: {detail}")]
    Rejected {
        method: &'static str,
        path: String,
        status: u16,
        detail: String,
    },
    #[error("unexpected RouterOS answer to {method} {path}: {message}")]
    Protocol {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Setup(String),
}

impl RouterOsError {
    /// True when the device certainly did not act on the request.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, Self::Unreachable { sent: false, .. })
    }

    /// The same error with every occurrence of `secret` in the device's words blanked out.
    fn redacted(self, secret: &str) -> Self {
        match self {
            Self::Rejected {
                method,
                path,
                status,
                detail,
            } if !secret.is_empty() && detail.contains(secret) => Self::Rejected {
                method,
                path,
                status,
                detail: detail.replace(secret, "********"),
            },
            other => other,
        }
    }
}

/// One device's REST API.
pub struct RouterOs {
    base: String,
    user: String,
    password: Secret<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for RouterOs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterOs")
            .field("base", &self.base)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The base URL for a device: `routeros_url`, or HTTPS on the host of its winbox address.
pub fn base_url(d: &DeviceConfig) -> Result<String, String> {
    let url = match (&d.routeros_url, &d.winbox) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(w)) => {
            let host = w.rsplit_once(':').map_or(w.as_str(), |(h, _)| h);
            format!("https://{host}")
        }
        (None, None) => {
            return Err(format!(
                "device {:?}: provision = \"routeros\" needs routeros_url or a winbox address",
                d.name
            ));
        }
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(format!(
            "device {:?}: routeros_url {url:?} must start with https:// or http://",
            d.name
        ));
    }
    Ok(url)
}

/// Parses `routeros_cert_sha256` (hex, colons allowed).
pub fn parse_pin(pin: &str) -> Result<[u8; 32], String> {
    let hex: String = pin.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(hex.trim()).map_err(|e| format!("not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "expected 32 bytes (a SHA-256)".to_string())
}

#[derive(Deserialize)]
struct Found {
    #[serde(rename = ".id")]
    id: String,
}

#[derive(Deserialize)]
struct RosError {
    message: Option<String>,
    detail: Option<String>,
}

impl RouterOs {
    /// The driver for a device configured with `provision = "routeros"` (already validated).
    pub fn new(d: &DeviceConfig) -> Result<Self, RouterOsError> {
        let base = base_url(d).map_err(RouterOsError::Setup)?;
        let cred = d
            .credentials
            .full
            .as_ref()
            .and_then(|c| c.password.as_ref().map(|p| (c.user.clone(), p.clone())))
            .ok_or_else(|| {
                RouterOsError::Setup(format!(
                    "device {:?}: the RouterOS driver needs credentials.full with a password",
                    d.name
                ))
            })?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30));
        if base.starts_with("https://") {
            let pin = match &d.routeros_cert_sha256 {
                Some(p) => Some(parse_pin(p).map_err(|e| {
                    RouterOsError::Setup(format!("device {:?}: routeros_cert_sha256: {e}", d.name))
                })?),
                None => None,
            };
            builder = builder.use_preconfigured_tls(tls_config(pin)?);
        }
        let client = builder
            .build()
            .map_err(|e| RouterOsError::Setup(format!("device {:?}: {e}", d.name)))?;
        Ok(Self {
            base,
            user: cred.0,
            password: cred.1,
            client,
        })
    }

    /// Creates `name` in `group` with `password`.
    pub async fn create_user(
        &self,
        name: &str,
        password: &Secret<String>,
        group: &str,
        comment: &str,
    ) -> Result<(), RouterOsError> {
        let path = "/rest/user".to_string();
        let body = serde_json::json!({
            "name": name,
            "group": group,
            "password": password.expose(),
            "comment": comment,
        });
        let req = self.client.put(self.url(&path)).json(&body);
        let created: serde_json::Value = self
            .send("PUT", &path, req)
            .await
            .map_err(|e| e.redacted(password.expose()))?;
        if created.get(".id").is_none() {
            return Err(RouterOsError::Protocol {
                method: "PUT",
                path,
                message: "the created user has no .id".into(),
            });
        }
        Ok(())
    }

    /// Removes every user called `name`; returns how many there were (0: already gone).
    pub async fn remove_user(&self, name: &str) -> Result<usize, RouterOsError> {
        let path = "/rest/user".to_string();
        let req = self.client.get(self.url(&path)).query(&[("name", name)]);
        let found: Vec<Found> = self.send("GET", &path, req).await?;
        for user in &found {
            let path = format!("/rest/user/{}", user.id);
            let req = self.client.delete(self.url(&path));
            match self.send::<serde_json::Value>("DELETE", &path, req).await {
                // Removed meanwhile by someone else: the goal is reached.
                Ok(_) | Err(RouterOsError::Rejected { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found.len())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, RouterOsError> {
        let resp = req
            .basic_auth(&self.user, Some(self.password.expose()))
            .send()
            .await
            .map_err(|e| RouterOsError::Unreachable {
                url: self.base.clone(),
                message: error_chain(&e),
                sent: !e.is_connect(),
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| RouterOsError::Unreachable {
            url: self.base.clone(),
            message: error_chain(&e),
            sent: true,
        })?;
        if !(200..300).contains(&status) {
            let detail = serde_json::from_str::<RosError>(&text)
                .ok()
                .and_then(|e| e.detail.or(e.message))
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(RouterOsError::Rejected {
                method,
                path: path.to_string(),
                status,
                detail,
            }
            .redacted(self.password.expose()));
        }
        // DELETE answers 204 with no body.
        let text = if text.trim().is_empty() {
            "null"
        } else {
            &text
        };
        serde_json::from_str(text).map_err(|e| RouterOsError::Protocol {
            method,
            path: path.to_string(),
            message: e.to_string(),
        })
    }
}

/// reqwest's top-level message is often just "error sending request"; the cause is below it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn tls_config(pin: Option<[u8; 32]>) -> Result<rustls::ClientConfig, RouterOsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedCert {
        pin,
        algorithms: provider.signature_verification_algorithms,
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RouterOsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Accepts the one certificate whose SHA-256 is pinned (or, without a pin, any certificate),
/// still verifying the handshake signature with it.
#[derive(Debug)]
struct PinnedCert {
    pin: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) if Sha256::digest(end_entity.as_ref()).as_slice() == pin => {
                Ok(ServerCertVerified::assertion())
            }
            Some(_) => Err(rustls::Error::General(
                "the device's certificate does not match routeros_cert_sha256".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_with_or_without_colons() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_pin(&hex).unwrap(), [0xab; 32]);
        assert_eq!(parse_pin(&colons).unwrap(), [0xab; 32]);
        assert!(parse_pin("abcd").is_err());
        assert!(parse_pin("zz").is_err());
    }
}
