//! Lingering close: when the elector ends a connection, it sends its FIN and then reads and
//! discards what the client still sends, for a bounded time, before it closes the socket.
//!
//! Closing a socket whose receive buffer holds unread bytes makes the kernel send a reset, and a
//! reset makes the client's kernel throw away the answer it had not read yet. So a client that
//! writes a whole oversized body before reading (Python's `http.client` and `requests`, and many
//! more) would see a broken pipe or a reset instead of the `413` the elector sent. nginx and
//! Apache linger the same way.
//!
//! Only connections that sent a request linger, and each keeps its place under the connection
//! cap until it is done: at most the client timeout, less when the client closes first (as a
//! well-behaved one does once it has read the answer).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// A connection's socket that lingers when it is dropped.
pub struct Lingering {
    socket: Option<TcpStream>,
    /// The connection's place under the cap, given back when lingering ends.
    permit: Option<OwnedSemaphorePermit>,
    /// Whether the connection sent a request; one that never spoke is closed at once.
    spoke: Arc<AtomicBool>,
    /// How long to linger at most.
    within: Duration,
}

impl Lingering {
    /// Wraps `socket`, which holds `permit`; it lingers up to `within` once `spoke` is set.
    pub fn new(
        socket: TcpStream,
        permit: OwnedSemaphorePermit,
        spoke: Arc<AtomicBool>,
        within: Duration,
    ) -> Self {
        Self {
            socket: Some(socket),
            permit: Some(permit),
            spoke,
            within,
        }
    }

    fn socket(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(
            self.socket
                .as_mut()
                .expect("the socket is there until drop"),
        )
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(socket), permit) = (self.socket.take(), self.permit.take()) else {
            return;
        };
        if !self.spoke.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(socket, permit, self.within));
        }
    }
}

/// Sends FIN, then discards what arrives until the client closes, a read fails, or `within`.
async fn linger(mut socket: TcpStream, permit: Option<OwnedSemaphorePermit>, within: Duration) {
    let _permit = permit;
    let _ = socket.shutdown().await;
    let mut sink = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(within, async {
        while let Ok(1..) = socket.read(&mut sink).await {}
    })
    .await;
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.socket().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.socket().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.socket().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket().poll_shutdown(cx)
    }
}
