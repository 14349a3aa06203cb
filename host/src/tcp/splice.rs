//! Moving bytes between two TCP connections, in both directions, inside the connection's own
//! task (no thread per connection).
//!
//! Each direction waits for readability *without* a buffer, takes one from a shared pool only
//! when data is there, reads and writes until the socket would block, and gives it back. So an
//! idle forwarded connection holds no buffer at all (memory per idle connection is the task and
//! the two sockets), while a busy one holds at most one buffer per direction. End of stream in
//! one direction is passed on as a half-close (FIN), as a plain TCP path would.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Size of one copy buffer.
pub const BUFFER_SIZE: usize = 64 * 1024;
/// Most idle buffers the pool keeps; the rest are freed.
const POOL_MAX: usize = 128;

/// Reusable copy buffers, shared by every connection of a forwarder.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Vec<Box<[u8]>>>,
}

impl BufferPool {
    fn take(&self) -> Box<[u8]> {
        self.free
            .lock()
            .pop()
            .unwrap_or_else(|| vec![0u8; BUFFER_SIZE].into_boxed_slice())
    }

    fn give(&self, buf: Box<[u8]>) {
        let mut free = self.free.lock();
        if free.len() < POOL_MAX {
            free.push(buf);
        }
    }
}

/// Byte counters of one forwarded connection.
#[derive(Debug, Default)]
pub struct Counters {
    /// Client to device.
    pub up: AtomicU64,
    /// Device to client.
    pub down: AtomicU64,
}

/// Forwards between `client` and `device` until both directions reached end of stream or one
/// failed. Dropping the future closes both connections at once.
pub async fn forward(
    client: TcpStream,
    device: TcpStream,
    pool: &BufferPool,
    counters: &Counters,
) -> io::Result<()> {
    let (client_r, client_w) = client.into_split();
    let (device_r, device_w) = device.into_split();
    tokio::try_join!(
        pump(client_r, device_w, pool, &counters.up),
        pump(device_r, client_w, pool, &counters.down),
    )?;
    Ok(())
}

async fn pump(
    src: OwnedReadHalf,
    dst: OwnedWriteHalf,
    pool: &BufferPool,
    count: &AtomicU64,
) -> io::Result<()> {
    loop {
        src.readable().await?;
        let mut buf = pool.take();
        let drained = drain(&src, &dst, &mut buf, count).await;
        pool.give(buf);
        if drained? {
            // Dropping the write half sends FIN: the other side sees end of stream.
            drop(dst);
            return Ok(());
        }
    }
}

/// Copies until `src` would block (false) or reaches end of stream (true).
async fn drain(
    src: &OwnedReadHalf,
    dst: &OwnedWriteHalf,
    buf: &mut [u8],
    count: &AtomicU64,
) -> io::Result<bool> {
    loop {
        match src.try_read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                write_all(dst, &buf[..n]).await?;
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(dst: &OwnedWriteHalf, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match dst.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn forwards_both_ways_and_passes_half_close_on() {
        let (mut client, gw_client) = pair().await;
        let (gw_device, mut device) = pair().await;
        let pool = BufferPool::default();
        let counters = Counters::default();
        let fwd = forward(gw_client, gw_device, &pool, &counters);
        let talk = async {
            let big: Vec<u8> = (0..BUFFER_SIZE * 3 + 17).map(|i| (i % 251) as u8).collect();
            client.write_all(&big).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            device.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, big);
            device.write_all(b"reply").await.unwrap();
            drop(device);
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"reply");
        };
        let (r, ()) = tokio::join!(fwd, talk);
        r.unwrap();
        assert_eq!(
            counters.up.load(Ordering::Relaxed),
            (BUFFER_SIZE * 3 + 17) as u64
        );
        assert_eq!(counters.down.load(Ordering::Relaxed), 5);
        // Buffers went back to the pool; an idle connection holds none.
        assert!(!pool.free.lock().is_empty());
    }
}
