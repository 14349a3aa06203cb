//! Bridging one user channel to one device channel.
//!
//! Two pumps run per channel pair, each a reader that drains one side eagerly (up to a byte
//! budget) and a writer that replays on the other side. The up pump reads the user channel in order (data,
//! extended data, EOF, window changes, signals, close) and replays it on the device channel;
//! the down pump does the reverse for data, EOF, exit status and signal, close — and hands the
//! device's replies to channel requests back to the russh handler, which forwards each request
//! (pty, env, shell, exec, subsystem) and answers the user with the device's verdict. Keeping
//! data, EOF and close on the ordered channel streams is what makes `ssh host cmd < file`,
//! scp, sftp and rsync end with every byte delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use russh::{Channel, ChannelMsg, ChannelWriteHalf, Pty, client, server};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::live::Conn;

/// How long the device may take to answer a channel request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of channel data each direction may read ahead of what it has delivered (see
/// [`read_ahead`]). Bounds the memory one channel can hold in the gateway.
const READ_AHEAD: usize = 8 << 20;

/// A channel request that needs the device's answer.
#[derive(Debug)]
pub enum DeviceRequest {
    Pty {
        term: String,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        modes: Vec<(Pty, u32)>,
    },
    Env {
        name: String,
        value: String,
    },
    Shell,
    Exec(Vec<u8>),
    Subsystem(String),
    /// `auth-agent-req@openssh.com`: the device may open agent channels for this session.
    AgentForward,
    /// `x11-req`: the device may open X11 channels for this session.
    X11 {
        single_connection: bool,
        protocol: String,
        cookie: String,
        screen: u32,
    },
}

/// One bridged channel pair. The pumps end by themselves when either side closes; the owner
/// aborts them when the whole connection ends (a pump may be waiting on a window forever).
pub struct Bridge {
    device: Arc<ChannelWriteHalf<client::Msg>>,
    replies: mpsc::UnboundedReceiver<bool>,
    pumps: [JoinHandle<()>; 2],
}

impl Bridge {
    /// Starts pumping between `user` (the channel the user opened) and `device`.
    pub fn start(
        user: Channel<server::Msg>,
        device: Channel<client::Msg>,
        handle: server::Handle,
        conn: Arc<Conn>,
    ) -> Self {
        let id = user.id();
        let (user_rx, user_tx) = user.split();
        let (device_rx, device_tx) = device.split();
        let device_tx = Arc::new(device_tx);
        let (reply_tx, replies) = mpsc::unbounded_channel();
        let up = tokio::spawn(pump_up(user_rx, device_tx.clone(), conn.clone()));
        let down = tokio::spawn(pump_down(device_rx, user_tx, handle, id, reply_tx, conn));
        Self {
            device: device_tx,
            replies,
            pumps: [up, down],
        }
    }

    /// The device end, for hanging up when the connection is cut.
    pub fn device(&self) -> &Arc<ChannelWriteHalf<client::Msg>> {
        &self.device
    }

    /// Handles to stop the pumps with.
    pub fn abort_handles(&self) -> [tokio::task::AbortHandle; 2] {
        [self.pumps[0].abort_handle(), self.pumps[1].abort_handle()]
    }

    /// The pump tasks, for the owner to abort at connection end.
    pub fn into_pumps(self) -> [JoinHandle<()>; 2] {
        self.pumps
    }

    /// Forwards a request to the device and returns whether the device accepted it.
    pub async fn request(&mut self, req: DeviceRequest) -> bool {
        let d = &self.device;
        let sent = match req {
            DeviceRequest::Pty {
                term,
                cols,
                rows,
                pix_width,
                pix_height,
                modes,
            } => {
                d.request_pty(true, &term, cols, rows, pix_width, pix_height, &modes)
                    .await
            }
            DeviceRequest::Env { name, value } => d.set_env(true, name, value).await,
            DeviceRequest::Shell => d.request_shell(true).await,
            DeviceRequest::Exec(command) => d.exec(true, command).await,
            DeviceRequest::Subsystem(name) => d.request_subsystem(true, name).await,
            DeviceRequest::AgentForward => d.agent_forward(true).await,
            DeviceRequest::X11 {
                single_connection,
                protocol,
                cookie,
                screen,
            } => {
                d.request_x11(true, single_connection, protocol, cookie, screen)
                    .await
            }
        };
        if sent.is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(REPLY_TIMEOUT, self.replies.recv()).await,
            Ok(Some(true))
        )
    }
}

/// One message on its way from the reader to the writer of a pump, holding its share of the
/// read-ahead budget until it has been written.
type Queued = (ChannelMsg, Option<OwnedSemaphorePermit>);

/// Reads `from` as fast as it delivers, into a queue the writer drains, so the russh session
/// loop feeding `from` is never left blocked on a full channel buffer while the writer waits.
///
/// Why: russh applies back-pressure by blocking its whole session loop (reads *and* writes) on
/// a full per-channel buffer. With data flowing both ways at once, the up pump waiting on the
/// device's window and the down pump waiting on the user's session could each block the loop
/// the other needs: a deadlock. Reading ahead breaks that cycle. Data held in flight is capped
/// by [`READ_AHEAD`] bytes per direction; only past that does the reader stop and fall back on
/// russh's back-pressure. Replies to channel requests skip the queue (`replies`), because the
/// handler waits on them while holding the user's session loop.
async fn read_ahead(
    mut from: russh::ChannelReadHalf,
    queue: mpsc::UnboundedSender<Queued>,
    replies: Option<mpsc::UnboundedSender<bool>>,
) {
    let budget = Arc::new(Semaphore::new(READ_AHEAD));
    while let Some(msg) = from.wait().await {
        let len = match &msg {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len(),
            ChannelMsg::Success | ChannelMsg::Failure => {
                if let Some(replies) = &replies {
                    let _ = replies.send(matches!(msg, ChannelMsg::Success));
                }
                continue;
            }
            _ => 0,
        };
        let permit = if len == 0 {
            None
        } else {
            // A packet larger than the whole budget (not sent by sane peers) takes all of it.
            let want = u32::try_from(len.min(READ_AHEAD)).unwrap_or(u32::MAX);
            match budget.clone().acquire_many_owned(want).await {
                Ok(p) => Some(p),
                Err(_) => break,
            }
        };
        let last = matches!(msg, ChannelMsg::Close);
        if queue.send((msg, permit)).is_err() || last {
            break;
        }
    }
}

/// Replays what both directions carry alike — data, extended data (counted into `count`) and
/// EOF — on `to`. Any other message is handed back for the caller to replay.
async fn replay_common<S>(
    to: &ChannelWriteHalf<S>,
    count: &AtomicU64,
    msg: ChannelMsg,
) -> Result<Option<ChannelMsg>, russh::Error>
where
    S: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    match msg {
        ChannelMsg::Data { data } => {
            count.fetch_add(data.len() as u64, Ordering::Relaxed);
            to.data_bytes(data).await?;
        }
        ChannelMsg::ExtendedData { data, ext } => {
            count.fetch_add(data.len() as u64, Ordering::Relaxed);
            to.extended_data_bytes(ext, data).await?;
        }
        ChannelMsg::Eof => to.eof().await?,
        other => return Ok(Some(other)),
    }
    Ok(None)
}

async fn pump_up(
    user: russh::ChannelReadHalf,
    device: Arc<ChannelWriteHalf<client::Msg>>,
    conn: Arc<Conn>,
) {
    let (queue, mut queued) = mpsc::unbounded_channel::<Queued>();
    let write = async {
        while let Some((msg, _permit)) = queued.recv().await {
            let sent = match replay_common(&device, &conn.up, msg).await {
                Ok(Some(msg)) => msg,
                Ok(None) => continue,
                Err(_) => break,
            };
            let sent = match sent {
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                } => {
                    device
                        .window_change(col_width, row_height, pix_width, pix_height)
                        .await
                }
                ChannelMsg::Signal { signal } => device.signal(signal).await,
                ChannelMsg::Close => break,
                // Requests needing a reply are forwarded by the handler; nothing else is expected.
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        // Stops the reader too: its next send fails.
        drop(queued);
        let _ = device.close().await;
    };
    tokio::join!(read_ahead(user, queue, None), write);
}

async fn pump_down(
    device: russh::ChannelReadHalf,
    user: ChannelWriteHalf<server::Msg>,
    handle: server::Handle,
    id: russh::ChannelId,
    replies: mpsc::UnboundedSender<bool>,
    conn: Arc<Conn>,
) {
    let (queue, mut queued) = mpsc::unbounded_channel::<Queued>();
    let write = async {
        while let Some((msg, _permit)) = queued.recv().await {
            let sent = match replay_common(&user, &conn.down, msg).await {
                Ok(Some(msg)) => msg,
                Ok(None) => continue,
                Err(_) => break,
            };
            let sent = match sent {
                ChannelMsg::ExitStatus { exit_status } => user.exit_status(exit_status).await,
                ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    lang_tag,
                } => handle
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await
                    .map_err(|()| russh::Error::SendError),
                ChannelMsg::XonXoff { client_can_do } => handle
                    .xon_xoff_request(id, client_can_do)
                    .await
                    .map_err(|()| russh::Error::SendError),
                ChannelMsg::Close => break,
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        drop(queued);
        let _ = user.close().await;
    };
    tokio::join!(read_ahead(device, queue, Some(replies)), write);
}
