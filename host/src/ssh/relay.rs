//! Channels the device opens back towards the user: agent forwarding (`ssh -A`), X11
//! forwarding (`ssh -X`/`-Y`) and remote TCP forwarding (`ssh -R`). Each is off unless the
//! connect-time grant carries its obligation ([`ALLOW_AGENT_FORWARDING`],
//! [`ALLOW_X11_FORWARDING`], and [`super::server::ALLOW_TCP_FORWARDING`] for either direction
//! of TCP forwarding).
//!
//! The user's request is forwarded to the device's session first (the device decides too);
//! only once the device accepted does the gateway arm the [`Relay`] of the connection. When the
//! device then opens an `auth-agent@openssh.com`, `x11` or `forwarded-tcpip` channel on the gateway's
//! client session, the device-side handler asks the relay for the user's session, opens the
//! same kind of channel to the user, and bridges the two like any other channel pair (its pumps
//! are the connection's, stopped with it). A channel of a kind the user never asked for (or the
//! policy never allowed), or a `forwarded-tcpip` for a port the device was not asked to listen
//! on, is refused. The relay holds the connection weakly and is disarmed when the user's
//! handler goes, so it never keeps a finished connection or its device session alive.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use russh::{Channel, ChannelOpenFailure, client, server};

use super::bridge::Bridge;
use super::client::DeviceLink;
use super::live::Conn;

/// How long the device may take to answer a forwarding request.
const DEVICE_ANSWER: Duration = Duration::from_secs(30);

/// The grant obligation that allows agent forwarding (`ssh -A`).
pub const ALLOW_AGENT_FORWARDING: &str = "allow-agent-forwarding";

/// The grant obligation that allows X11 forwarding (`ssh -X`/`-Y`).
pub const ALLOW_X11_FORWARDING: &str = "allow-x11-forwarding";

/// What the device may open back towards the user, and where the user is.
#[derive(Clone)]
struct Target {
    user: server::Handle,
    conn: Weak<Conn>,
    agent: bool,
    x11: bool,
    /// Ports the device listens on for the user (`tcpip-forward`).
    remote_ports: HashSet<u32>,
}

/// Shared by the user-side handler (which arms it) and the device-side one (which uses it).
#[derive(Clone, Default)]
pub struct Relay(Arc<Mutex<Option<Target>>>);

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0.lock();
        f.debug_struct("Relay")
            .field("agent", &t.as_ref().is_some_and(|t| t.agent))
            .field("x11", &t.as_ref().is_some_and(|t| t.x11))
            .field(
                "remote_ports",
                &t.as_ref().map(|t| t.remote_ports.len()).unwrap_or(0),
            )
            .finish()
    }
}

/// Which kind of channel the device opens.
pub enum Opened {
    Agent,
    X11 {
        originator_address: String,
        originator_port: u32,
    },
    ForwardedTcpip {
        connected_address: String,
        connected_port: u32,
        originator_address: String,
        originator_port: u32,
    },
}

impl Relay {
    fn arm(&self, user: server::Handle, conn: &Arc<Conn>, set: impl FnOnce(&mut Target)) {
        let mut slot = self.0.lock();
        let target = slot.get_or_insert_with(|| Target {
            user,
            conn: Arc::downgrade(conn),
            agent: false,
            x11: false,
            remote_ports: HashSet::new(),
        });
        set(target);
    }

    /// Forgets everything: the user's handler is gone.
    pub fn disarm(&self) {
        self.0.lock().take();
    }

    /// The device accepted `auth-agent-req` for the user's session `user`.
    pub fn allow_agent(&self, user: server::Handle, conn: &Arc<Conn>) {
        self.arm(user, conn, |t| t.agent = true);
    }

    /// The device accepted `x11-req` for the user's session `user`.
    pub fn allow_x11(&self, user: server::Handle, conn: &Arc<Conn>) {
        self.arm(user, conn, |t| t.x11 = true);
    }

    /// The device is about to listen on `port` for the user: armed before it answers, since
    /// its first connection may arrive right behind the answer.
    pub fn allow_remote_port(&self, user: server::Handle, conn: &Arc<Conn>, port: u32) {
        self.arm(user, conn, |t| {
            t.remote_ports.insert(port);
        });
    }

    /// The device no longer listens on `port` (it refused, or the user cancelled).
    pub fn forget_remote_port(&self, port: u32) {
        if let Some(t) = self.0.lock().as_mut() {
            t.remote_ports.remove(&port);
        }
    }

    /// The device opened `device_channel`: open the same kind towards the user and bridge
    /// them, or refuse it. Runs in a task of its own, so the device's session loop does not
    /// wait for the user's answer.
    pub fn open(
        &self,
        kind: Opened,
        device_channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
    ) {
        let relay = self.clone();
        tokio::spawn(async move { relay.open_now(kind, device_channel, reply).await });
    }

    async fn open_now(
        &self,
        kind: Opened,
        device_channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
    ) {
        let target = self.0.lock().clone();
        let allowed = match (&target, &kind) {
            (Some(t), Opened::Agent) => t.agent,
            (Some(t), Opened::X11 { .. }) => t.x11,
            (Some(t), Opened::ForwardedTcpip { connected_port, .. }) => {
                t.remote_ports.contains(connected_port)
            }
            (None, _) => false,
        };
        let conn = target.as_ref().and_then(|t| t.conn.upgrade());
        let (true, Some(t), Some(conn)) = (allowed, target, conn) else {
            tracing::info!(
                target: "audit", event = "ssh.forwarding_refused",
                what = kind.name(), "the device opened a channel the user did not ask for"
            );
            prohibit(reply).await;
            return;
        };
        let opened = match kind {
            Opened::Agent => t.user.channel_open_agent().await,
            Opened::X11 {
                originator_address,
                originator_port,
            } => {
                t.user
                    .channel_open_x11(originator_address, originator_port)
                    .await
            }
            Opened::ForwardedTcpip {
                connected_address,
                connected_port,
                originator_address,
                originator_port,
            } => {
                t.user
                    .channel_open_forwarded_tcpip(
                        connected_address,
                        connected_port,
                        originator_address,
                        originator_port,
                    )
                    .await
            }
        };
        match opened {
            Ok(user_channel) => {
                reply.accept().await;
                let bridge = Bridge::start(user_channel, device_channel, t.user, conn.clone());
                conn.add_pumps(bridge.abort_handles());
            }
            Err(e) => {
                tracing::info!(error = %e, "the user refused a channel the device opened");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
    }
}

impl Opened {
    fn name(&self) -> &'static str {
        match self {
            Opened::Agent => "auth-agent",
            Opened::X11 { .. } => "x11",
            Opened::ForwardedTcpip { .. } => "forwarded-tcpip",
        }
    }
}

/// Asks the device to listen for the user's remote forwarding (`tcpip-forward`, on the device's
/// side and under its own rules); the port it bound, or `None` if it refused.
pub async fn listen_on_device(device: &DeviceLink, address: &str, port: u32) -> Option<u32> {
    match tokio::time::timeout(DEVICE_ANSWER, device.tcpip_forward(address, port)).await {
        Ok(Ok(bound)) => Some(bound),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "device refused a remote forwarding");
            None
        }
        Err(_) => None,
    }
}

/// Ends a remote forwarding on the device (`cancel-tcpip-forward`).
pub async fn stop_listening_on_device(device: &DeviceLink, address: &str, port: u32) -> bool {
    matches!(
        tokio::time::timeout(DEVICE_ANSWER, device.cancel_tcpip_forward(address, port)).await,
        Ok(Ok(()))
    )
}

/// Refuses a channel the device opens, as administratively prohibited.
pub async fn prohibit(reply: client::ChannelOpenHandle) {
    reply
        .reject(ChannelOpenFailure::AdministrativelyProhibited)
        .await;
}
