//! The user-facing half: the russh server configuration and one russh handler per connection,
//! which checks the login (a one-time key as `<user>:<device>` or `<user>#<device>`, or a
//! transient access's username and password, by password or keyboard-interactive), logs in to
//! the device and bridges the channels the user opens. The connection around it (accept,
//! limits, grace time, cutting) is in [`super::conn`].
//!
//! What the connect-time grant says is enforced here: its access level caps the device
//! credential used, its `max-ttl-seconds` bounds how long the connection lives, TCP forwarding
//! both ways (`ssh -L`/`-W`, connected from the device, and `ssh -R`, listening on the device)
//! is allowed only with the obligation [`ALLOW_TCP_FORWARDING`], agent forwarding only with
//! [`super::relay::ALLOW_AGENT_FORWARDING`] and X11 forwarding only with
//! [`super::relay::ALLOW_X11_FORWARDING`] (the channels coming back are in [`super::relay`]).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Disconnect, MethodKind, MethodSet, Pty};

use super::bridge::{Bridge, DeviceRequest};
use super::client::{self, DeviceLink};
use super::conn::{audit_later, failed_login};
use super::live::{Conn, Identity, LiveKey};
use super::relay::{self, ALLOW_AGENT_FORWARDING, ALLOW_X11_FORWARDING, Relay};
use super::{SshError, SshService};
use crate::audit::{self, now_ms};
use crate::config::AccessLevel;
use crate::issuer::{ConnectGrant, IssuerError};
use crate::policy::Protocol;
use crate::secret::Secret;
use crate::store::{AuditEvent, TransientAccess, TransientKind};

/// The grant obligation that allows `direct-tcpip` channels (opened from the device).
pub const ALLOW_TCP_FORWARDING: &str = "allow-tcp-forwarding";

/// The prompt of keyboard-interactive logins; contains "assword" so `sshpass` answers it.
const PROMPT: &str = "Password (one-time key): ";

/// Which kind of listener a connection came in on.
#[derive(Debug, Clone)]
pub enum Entry {
    /// The main `ssh_listen` port: `<user>:<device>` with a one-time key.
    OpenSession,
    /// A transient access's own port.
    Transient(Arc<TransientAccess>),
}

/// The russh server configuration: our host key, password and keyboard-interactive only.
pub fn config(key: PrivateKey) -> server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::KeyboardInteractive);
    methods.push(MethodKind::Password);
    server::Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-sallyport")),
        methods,
        keys: vec![key],
        auth_rejection_time: Duration::from_millis(500),
        // The "none" probe every OpenSSH client starts with is not a guess; answer it at once.
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Idle-but-alive clients answer keepalives; dead ones are dropped within ~90 s.
        inactivity_timeout: Some(Duration::from_secs(120)),
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        max_auth_attempts: 6,
        nodelay: true,
        channel_buffer_size: 256,
        ..server::Config::default()
    }
}

/// Where a successful login leads.
struct Target {
    identity: Identity,
    level: AccessLevel,
    grant: ConnectGrant,
}

/// The russh handler of one connection.
pub(super) struct Gate {
    service: Arc<SshService>,
    conn: Arc<Conn>,
    entry: Entry,
    device: Option<Arc<DeviceLink>>,
    /// Set when login succeeded but the device could not be reached; said at disconnect.
    device_error: Option<String>,
    channels: std::collections::HashMap<ChannelId, Bridge>,
    /// The connect-time grant, once logged in.
    grant: Option<ConnectGrant>,
    /// Pumps of channels the user closed, still draining.
    closed: Vec<tokio::task::JoinHandle<()>>,
    /// Channels the device may open back towards the user (armed by allowed requests).
    relay: Relay,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.relay.disarm();
        for bridge in std::mem::take(&mut self.channels).into_values() {
            for p in bridge.into_pumps() {
                p.abort();
            }
        }
        for p in &self.closed {
            p.abort();
        }
    }
}

fn reject() -> Auth {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::KeyboardInteractive);
    methods.push(MethodKind::Password);
    Auth::Reject {
        proceed_with_methods: Some(methods),
        partial_success: false,
    }
}

impl Gate {
    pub(super) fn new(service: Arc<SshService>, conn: Arc<Conn>, entry: Entry) -> Self {
        Self {
            service,
            conn,
            entry,
            device: None,
            device_error: None,
            channels: std::collections::HashMap::new(),
            grant: None,
            closed: Vec::new(),
            relay: Relay::default(),
        }
    }

    /// Whether the connect-time grant carries `obligation`.
    fn obliged(&self, obligation: &str) -> bool {
        self.grant
            .as_ref()
            .is_some_and(|g| g.obligations.iter().any(|o| o == obligation))
    }

    fn peer(&self) -> SocketAddr {
        self.conn.peer
    }

    /// Checks the credentials; on success connects to the device and registers the connection.
    async fn login(&mut self, login: &str, password: Secret<String>) -> Result<Auth, SshError> {
        if self.conn.is_authenticated() {
            return Ok(reject());
        }
        let ip = self.peer().ip();
        let target = match &self.entry {
            Entry::OpenSession => self.check_otk(login, &password).await,
            Entry::Transient(access) => self.check_transient(login, &password, access.port).await,
        };
        let target = match target {
            Ok(t) => t,
            Err(IssuerError::Refused) => {
                if let Some(e) = failed_login(&self.service, ip, "a wrong key or password") {
                    self.service.issuer.audit_event(e).await?;
                }
                return Ok(reject());
            }
            Err(other) => {
                tracing::error!(error = %other, "SSH login failed internally");
                return Ok(reject());
            }
        };
        let id = &target.identity;
        let login_event = AuditEvent {
            subject: Some(id.user.clone()),
            device: Some(id.device.clone()),
            object: Some(id.object()),
            source: Some(ip.to_string()),
            reason: Some(format!("access {:?}", target.level)),
            ..audit::event(now_ms(), "ssh.login", Some(&id.user), "allow")
        };
        audit_later(&self.service, login_event);
        let device = self.service.issuer.directory().device(&id.device).cloned();
        let link = match device {
            None => Err(format!("device {:?} is not configured", id.device)),
            Some(d) => client::connect(
                &self.service,
                &d,
                target.level,
                &id.user,
                &ip.to_string(),
                self.relay.clone(),
            )
            .await
            .map_err(|e| e.to_string()),
        };
        match link {
            Ok(link) => self.device = Some(Arc::new(link)),
            Err(message) => {
                let e = AuditEvent {
                    subject: Some(id.user.clone()),
                    device: Some(id.device.clone()),
                    object: Some(id.object()),
                    source: Some(ip.to_string()),
                    reason: Some(message.clone()),
                    ..audit::event(now_ms(), "ssh.device_refused", Some(&id.user), "deny")
                };
                self.service.issuer.audit_event(e).await?;
                self.device_error = Some(format!("sallyport: {message}"));
            }
        }
        self.conn
            .authenticated(target.identity.clone(), self.device.clone());
        self.service
            .live
            .register(&self.conn, &self.service.issuer)
            .await;
        if let Some(secs) = target.grant.max_session_seconds {
            let conn = Arc::downgrade(&self.conn);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs.into())).await;
                if let Some(c) = conn.upgrade() {
                    c.cut("sallyport: the session reached the longest time its policy allows");
                }
            });
        }
        self.grant = Some(target.grant);
        Ok(Auth::Accept)
    }

    async fn check_otk(&self, login: &str, otk: &Secret<String>) -> Result<Target, IssuerError> {
        let ip = self.peer().ip();
        let issuer = &self.service.issuer;
        let Some((user, device)) = login.split_once([':', '#']) else {
            // Same refusal as every other cause (and bounded per source the same way); the
            // audit row says why.
            let reason = "login is not <user>:<device> or <user>#<device>".to_string();
            return Err(issuer
                .refuse_login(login, None, &ip.to_string(), reason)
                .await);
        };
        let grant = issuer
            .authorize_connect(user, device, Protocol::Ssh, ip)
            .await?;
        let session = issuer
            .redeem(otk, user, device, Some(ip.to_string()))
            .await?;
        Ok(Target {
            level: grant.cap(session.access),
            identity: Identity {
                key: LiveKey::Session(session.id),
                user: session.user,
                device: session.device,
            },
            grant,
        })
    }

    async fn check_transient(
        &self,
        username: &str,
        password: &Secret<String>,
        port: u16,
    ) -> Result<Target, IssuerError> {
        let (access, grant) = self
            .service
            .issuer
            .connect_transient(
                username,
                password,
                port,
                TransientKind::Ssh,
                self.peer().ip(),
            )
            .await?;
        let level = AccessLevel::from_full_access(access.full_access);
        Ok(Target {
            level: grant.cap(level),
            identity: Identity {
                key: LiveKey::Transient(access.id),
                user: access.username,
                device: access.device,
            },
            grant,
        })
    }

    /// Forwards a request to the device and answers the user with the device's verdict.
    async fn forward(
        &mut self,
        channel: ChannelId,
        req: DeviceRequest,
        session: &mut Session,
    ) -> Result<(), SshError> {
        let ok = match self.channels.get_mut(&channel) {
            Some(bridge) => bridge.request(req).await,
            None => false,
        };
        if ok {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    /// An audit row about this connection's forwarding (batched: nothing waits on it).
    fn audit_forwarding(&self, event: &str, outcome: &str, reason: String) {
        let id = self.conn.identity();
        let e = AuditEvent {
            subject: id.map(|i| i.user.clone()),
            device: id.map(|i| i.device.clone()),
            object: id.map(|i| i.object()),
            source: Some(self.peer().ip().to_string()),
            reason: Some(reason),
            ..audit::event(now_ms(), event, id.map(|i| i.user.as_str()), outcome)
        };
        self.service.issuer.audit_later(e);
    }

    fn forwarding(&self, what: &str, to: &str) {
        self.audit_forwarding("ssh.forwarding", "allow", format!("{what} {to}"));
    }

    fn refused_forwarding(&self, what: &str) {
        let why = match what {
            "streamlocal-forward" => "never forwarded by this gateway",
            _ => "no policy obligation allows it",
        };
        self.audit_forwarding("ssh.forwarding_refused", "deny", format!("{what}: {why}"));
    }
}

impl server::Handler for Gate {
    type Error = SshError;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, SshError> {
        Ok(reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, SshError> {
        self.login(user, Secret::new(password.to_string())).await
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, SshError> {
        let Some(mut response) = response else {
            return Ok(Auth::Partial {
                name: Cow::Borrowed(""),
                instructions: Cow::Borrowed(""),
                prompts: Cow::Owned(vec![(Cow::Borrowed(PROMPT), false)]),
            });
        };
        match response.next() {
            Some(answer) => {
                let password = Secret::new(String::from_utf8_lossy(&answer).into_owned());
                self.login(user, password).await
            }
            None => Ok(reject()),
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), SshError> {
        if let Some(message) = self.device_error.take() {
            session.disconnect(Disconnect::ByApplication, &message, "en")?;
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), SshError> {
        let Some(device) = self.device.clone() else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        match device.channel_open_session().await {
            Ok(device_channel) => {
                reply.accept().await;
                let id = channel.id();
                let bridge =
                    Bridge::start(channel, device_channel, session.handle(), self.conn.clone());
                self.conn
                    .add_channel(id, bridge.device(), bridge.abort_handles());
                self.channels.insert(id, bridge);
                if let Some(identity) = self.conn.identity() {
                    let e = AuditEvent {
                        subject: Some(identity.user.clone()),
                        device: Some(identity.device.clone()),
                        object: Some(identity.object()),
                        source: Some(self.peer().ip().to_string()),
                        ..audit::event(now_ms(), "ssh.session.start", Some(&identity.user), "ok")
                    };
                    audit_later(&self.service, e);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "device refused a session channel");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), SshError> {
        // The up pump may still be delivering data queued before the close: let the pumps
        // finish on their own, keeping their handles only to abort them at connection end.
        if let Some(bridge) = self.channels.remove(&channel) {
            self.closed.retain(|p| !p.is_finished());
            self.closed.extend(bridge.into_pumps());
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), SshError> {
        let req = DeviceRequest::Pty {
            term: term.to_string(),
            cols,
            rows,
            pix_width,
            pix_height,
            modes: modes.to_vec(),
        };
        self.forward(channel, req, session).await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), SshError> {
        let req = DeviceRequest::Env {
            name: name.to_string(),
            value: value.to_string(),
        };
        self.forward(channel, req, session).await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), SshError> {
        self.forward(channel, DeviceRequest::Shell, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), SshError> {
        self.forward(channel, DeviceRequest::Exec(data.to_vec()), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), SshError> {
        self.forward(channel, DeviceRequest::Subsystem(name.to_string()), session)
            .await
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        single_connection: bool,
        protocol: &str,
        cookie: &str,
        screen: u32,
        session: &mut Session,
    ) -> Result<(), SshError> {
        let allowed = self.obliged(ALLOW_X11_FORWARDING);
        let accepted = match self.channels.get_mut(&channel) {
            Some(bridge) if allowed => {
                bridge
                    .request(DeviceRequest::X11 {
                        single_connection,
                        protocol: protocol.to_string(),
                        cookie: cookie.to_string(),
                        screen,
                    })
                    .await
            }
            _ => {
                self.refused_forwarding("x11");
                false
            }
        };
        if accepted {
            self.relay.allow_x11(session.handle(), &self.conn);
            self.forwarding("x11", "the user's display");
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, SshError> {
        let allowed = self.obliged(ALLOW_AGENT_FORWARDING);
        let bridge = match self.channels.get_mut(&channel) {
            Some(b) if allowed => b,
            _ => {
                self.refused_forwarding("agent");
                return Ok(false);
            }
        };
        if !bridge.request(DeviceRequest::AgentForward).await {
            return Ok(false);
        }
        self.relay.allow_agent(session.handle(), &self.conn);
        self.forwarding("agent", "auth-agent@openssh.com");
        Ok(true)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator: &str,
        originator_port: u32,
        reply: server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), SshError> {
        let allowed = self.obliged(ALLOW_TCP_FORWARDING);
        let (true, Some(device)) = (allowed, self.device.clone()) else {
            self.refused_forwarding("direct-tcpip");
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        // The device opens the connection, so it reaches only what the device can reach.
        match device
            .channel_open_direct_tcpip(host, port, originator, originator_port)
            .await
        {
            Ok(device_channel) => {
                reply.accept().await;
                let id = channel.id();
                let bridge =
                    Bridge::start(channel, device_channel, session.handle(), self.conn.clone());
                self.conn
                    .add_channel(id, bridge.device(), bridge.abort_handles());
                self.channels.insert(id, bridge);
                self.forwarding("direct-tcpip", &format!("{host}:{port}"));
            }
            Err(e) => {
                tracing::info!(error = %e, "device refused a forwarding channel");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, SshError> {
        let (true, Some(device)) = (self.obliged(ALLOW_TCP_FORWARDING), self.device.clone()) else {
            self.refused_forwarding("tcpip-forward");
            return Ok(false);
        };
        let asked = *port;
        self.relay
            .allow_remote_port(session.handle(), &self.conn, asked);
        let Some(bound) = relay::listen_on_device(&device, address, asked).await else {
            self.relay.forget_remote_port(asked);
            return Ok(false);
        };
        if asked == 0 {
            // The device chose the port: that is the one its connections will name.
            self.relay.forget_remote_port(0);
            self.relay
                .allow_remote_port(session.handle(), &self.conn, bound);
            *port = bound;
        }
        self.forwarding("tcpip-forward", &format!("{address}:{port}"));
        Ok(true)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, SshError> {
        self.relay.forget_remote_port(port);
        Ok(match self.device.clone() {
            Some(device) => relay::stop_listening_on_device(&device, address, port).await,
            None => false,
        })
    }

    async fn streamlocal_forward(
        &mut self,
        _path: &str,
        _session: &mut Session,
    ) -> Result<bool, SshError> {
        self.refused_forwarding("streamlocal-forward");
        Ok(false)
    }
}
