//! Bridging one user channel to one device channel.
//!
//! Two pumps run per channel pair. The up pump reads the user channel in order (data,
//! extended data, EOF, window changes, signals, close) and replays it on the device channel;
//! the down pump does the reverse for data, EOF, exit status and signal, close — and hands the
//! device's replies to channel requests back to the russh handler, which forwards each request
//! (pty, env, shell, exec, subsystem) and answers the user with the device's verdict. Keeping
//! data, EOF and close on the ordered channel streams is what makes `ssh host cmd < file`,
//! scp, sftp and rsync end with every byte delivered.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use russh::{Channel, ChannelMsg, ChannelWriteHalf, Pty, client, server};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::live::Conn;

/// How long the device may take to answer a channel request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

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

async fn pump_up(
    mut user: russh::ChannelReadHalf,
    device: Arc<ChannelWriteHalf<client::Msg>>,
    conn: Arc<Conn>,
) {
    while let Some(msg) = user.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                conn.up.fetch_add(data.len() as u64, Ordering::Relaxed);
                device.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                conn.up.fetch_add(data.len() as u64, Ordering::Relaxed);
                device.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => device.eof().await,
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
    let _ = device.close().await;
}

async fn pump_down(
    mut device: russh::ChannelReadHalf,
    user: ChannelWriteHalf<server::Msg>,
    handle: server::Handle,
    id: russh::ChannelId,
    replies: mpsc::UnboundedSender<bool>,
    conn: Arc<Conn>,
) {
    while let Some(msg) = device.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                conn.down.fetch_add(data.len() as u64, Ordering::Relaxed);
                user.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                conn.down.fetch_add(data.len() as u64, Ordering::Relaxed);
                user.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => user.eof().await,
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
            ChannelMsg::Success => {
                let _ = replies.send(true);
                Ok(())
            }
            ChannelMsg::Failure => {
                let _ = replies.send(false);
                Ok(())
            }
            ChannelMsg::Close => break,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = user.close().await;
}
