//! The per-access TCP forwarder: Winbox (MikroTik) transient accesses.
//!
//! A transient access of type `winbox` opens `transient_listen_ip:port` while it is live
//! ([`listeners`]); every connection on it is checked by the policy and spliced to the device's
//! `winbox` address ([`winbox`], [`splice`]); when the access expires or is revoked, the
//! listener closes and its connections are cut. Nothing here decides access: the issuer asks
//! the policy. [`ephemeral`] warns at start when the port range can collide with the
//! kernel's outgoing source ports.

pub mod ephemeral;
pub mod listeners;
mod splice;
mod winbox;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use crate::issuer::Issuer;
use crate::lanes::Lanes;

pub use splice::BUFFER_SIZE;
pub use winbox::Winbox;

/// Why a forwarded connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("device {0:?} has no winbox address")]
    NoWinboxAddress(String),
    #[error("cannot connect to the device at {addr}: {source}")]
    Device {
        addr: String,
        source: std::io::Error,
    },
}

/// Serves the Winbox listeners of every live access, binding on `bind_ip`, until `shutdown`
/// resolves; then closes them and cuts their connections.
pub async fn serve_winbox(
    issuer: Arc<Issuer>,
    lanes: Arc<Lanes>,
    bind_ip: IpAddr,
    shutdown: impl Future<Output = ()>,
) {
    // Subscribe before restoring listeners, so an access created meanwhile is not missed.
    let events = issuer.subscribe();
    let handler = Arc::new(Winbox::new(issuer.clone()));
    let listeners = Arc::new(listeners::Listeners::new(issuer, handler, bind_ip, lanes));
    listeners.run(events, shutdown).await;
}
