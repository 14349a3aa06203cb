//! Live SSH connections, indexed by the session or access they belong to, so that a
//! termination, revocation or expiry can cut every connection it concerns.
//!
//! A connection registers after login and is then re-checked against the store once: an ending
//! announced between redemption and registration would otherwise be missed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use russh::ChannelId;
use tokio::sync::watch;

use super::client::DeviceLink;
use super::limits::UnauthGuard;
use crate::audit::now_ms;
use crate::issuer::Issuer;

/// What a live connection belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LiveKey {
    Session(String),
    Transient(uuid::Uuid),
}

/// Who a connection logged in as and where it goes.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: LiveKey,
    /// The gateway user (open sessions) or the access username (transient accesses).
    pub user: String,
    pub device: String,
}

impl Identity {
    pub fn object(&self) -> String {
        match &self.key {
            LiveKey::Session(id) => id.clone(),
            LiveKey::Transient(id) => id.to_string(),
        }
    }
}

/// One client connection, shared by its task, its russh handler and the registry.
pub struct Conn {
    pub peer: SocketAddr,
    unauth: Mutex<Option<UnauthGuard>>,
    authenticated: AtomicBool,
    identity: OnceLock<Identity>,
    /// Bytes user → device and device → user.
    pub up: AtomicU64,
    pub down: AtomicU64,
    cut: watch::Sender<Option<String>>,
    channels: Mutex<Vec<ChannelId>>,
    device: Mutex<Option<Arc<DeviceLink>>>,
    /// The device ends of the bridged channels, to hang up their processes when cut.
    device_channels: Mutex<Vec<Weak<DeviceChannel>>>,
    /// The bridges' pump tasks, stopped first when the connection is cut (see
    /// [`Conn::stop_pumps`]).
    pumps: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// The writing half of a device channel.
pub type DeviceChannel = russh::ChannelWriteHalf<russh::client::Msg>;

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("identity", &self.identity.get())
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub fn new(peer: SocketAddr, guard: UnauthGuard) -> Self {
        Self {
            peer,
            unauth: Mutex::new(Some(guard)),
            authenticated: AtomicBool::new(false),
            identity: OnceLock::new(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            cut: watch::Sender::new(None),
            channels: Mutex::new(Vec::new()),
            device: Mutex::new(None),
            device_channels: Mutex::new(Vec::new()),
            pumps: Mutex::new(Vec::new()),
        }
    }

    /// Marks the login done: frees the unauthenticated slot and records who it is.
    pub fn authenticated(&self, identity: Identity, device: Option<Arc<DeviceLink>>) {
        self.unauth.lock().take();
        let _ = self.identity.set(identity);
        *self.device.lock() = device;
        self.authenticated.store(true, Ordering::Release);
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.get()
    }

    /// Asks the connection task to disconnect with `message`.
    pub fn cut(&self, message: &str) {
        self.cut.send_replace(Some(message.to_string()));
    }

    pub fn subscribe_cut(&self) -> watch::Receiver<Option<String>> {
        self.cut.subscribe()
    }

    pub fn add_channel(
        &self,
        id: ChannelId,
        device: &Arc<DeviceChannel>,
        pumps: impl IntoIterator<Item = tokio::task::AbortHandle>,
    ) {
        self.channels.lock().push(id);
        let mut d = self.device_channels.lock();
        d.retain(|w| w.strong_count() > 0);
        d.push(Arc::downgrade(device));
        self.add_pumps(pumps);
    }

    /// Pumps of a channel pair the user did not open (see `relay`): stopped with the rest.
    pub fn add_pumps(&self, pumps: impl IntoIterator<Item = tokio::task::AbortHandle>) {
        let mut p = self.pumps.lock();
        p.retain(|h| !h.is_finished());
        p.extend(pumps);
    }

    /// Stops every bridge pump. A pump that stopped reading (its peer's window is full) leaves
    /// russh's session loop blocked on delivering to it, and a blocked loop sends nothing: not
    /// the hang-up, not the disconnect. Dropping the pumps' channel ends unblocks both loops.
    pub fn stop_pumps(&self) {
        for p in self.pumps.lock().drain(..) {
            p.abort();
        }
    }

    /// Sends SIGHUP to the device side of every open channel and closes it. A device sshd
    /// only hangs up processes that have a pty when the connection drops; a plain
    /// `ssh host cmd` would otherwise keep running on the device.
    pub async fn hang_up_device(&self) {
        let channels: Vec<Arc<DeviceChannel>> = self
            .device_channels
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for c in channels {
            let _ = c.signal(russh::Sig::HUP).await;
            let _ = c.close().await;
        }
    }

    pub fn channels(&self) -> Vec<ChannelId> {
        self.channels.lock().clone()
    }

    /// Takes the device link, so the caller can close it.
    pub fn take_device(&self) -> Option<Arc<DeviceLink>> {
        self.device.lock().take()
    }
}

/// The registry.
#[derive(Debug, Default)]
pub struct Live {
    conns: Mutex<HashMap<LiveKey, Vec<Weak<Conn>>>>,
    /// One clone per running connection task; `wait_idle` waits for them to finish.
    tasks: Arc<()>,
}

impl Live {
    /// A token the connection task holds while it runs.
    pub fn task_token(&self) -> Arc<()> {
        self.tasks.clone()
    }

    /// Registers an authenticated connection, then cuts it at once if its session or access
    /// ended before it was registered.
    pub async fn register(&self, conn: &Arc<Conn>, issuer: &Issuer) {
        let Some(identity) = conn.identity() else {
            return;
        };
        {
            let mut conns = self.conns.lock();
            conns.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
            conns
                .entry(identity.key.clone())
                .or_default()
                .push(Arc::downgrade(conn));
        }
        if ended(issuer, identity).await {
            conn.cut("sallyport: the session has ended");
        }
    }

    /// Cuts every live connection of `key`.
    pub fn cut(&self, key: &LiveKey, message: &str) {
        let conns = self.conns.lock().remove(key).unwrap_or_default();
        for c in conns.iter().filter_map(Weak::upgrade) {
            c.cut(message);
        }
    }

    /// Checks every live connection against the store and cuts those whose session or access
    /// is over; used when lifecycle events were lost.
    pub async fn recheck(&self, issuer: &Issuer) {
        let all: Vec<Arc<Conn>> = self
            .conns
            .lock()
            .values()
            .flatten()
            .filter_map(Weak::upgrade)
            .collect();
        for c in all {
            if let Some(id) = c.identity()
                && ended(issuer, id).await
            {
                c.cut("sallyport: the session has ended");
            }
        }
    }

    /// Waits until every connection task has finished, or `limit` passes.
    pub async fn wait_idle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while Arc::strong_count(&self.tasks) > 1 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    open = Arc::strong_count(&self.tasks) - 1,
                    "SSH connections still open at shutdown"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether the session or access behind `identity` is over, per the store. Store errors count
/// as "not over": a read failure must not cut healthy connections.
async fn ended(issuer: &Issuer, identity: &Identity) -> bool {
    match &identity.key {
        LiveKey::Session(id) => issuer.session_is_over(id).await,
        LiveKey::Transient(_) => match issuer.store().transient_by_username(&identity.user).await {
            Ok(Some(a)) => a.expired || a.expires_at <= now_ms(),
            Ok(None) => true,
            Err(_) => false,
        },
    }
}
