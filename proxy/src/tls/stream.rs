//! [`Stream`]: one socket type for plaintext and TLS peers, so sessions and the relay are
//! written once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client or server socket, plain or TLS. Reads and writes carry plaintext either way.
#[derive(Debug)]
pub enum Stream {
    /// No encryption.
    Plain(TcpStream),
    /// TLS with sidepool as the server: an application connection ([`ClientTls`]).
    ///
    /// [`ClientTls`]: super::ClientTls
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS with sidepool as the client: a database connection ([`ServerTls`]).
    ///
    /// [`ServerTls`]: super::ServerTls
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Self::Plain(_))
    }

    /// The socket underneath, for `peer_addr`, `set_nodelay` and readiness. Reading or writing
    /// it directly would corrupt a TLS session.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
            Self::TlsClient(s) => s.get_ref().0,
        }
    }

    /// Non-blocking liveness probe for an idle pooled connection: `true` if the peer closed,
    /// failed, or sent bytes nobody asked for (a server's FATAL before it hangs up); `false`
    /// if nothing is readable.
    ///
    /// Polls a 1-byte read once without blocking. On TLS that processes whatever records have
    /// arrived: post-handshake messages (session tickets, key updates) are consumed as rustls
    /// intends and do not count as data; a `close_notify` or EOF counts as closed. A `true`
    /// answer may have consumed a byte, so the connection must then be discarded.
    ///
    /// Like any readiness check, it sees what the runtime's I/O driver has already reported:
    /// bytes that arrived in the last instant may be noticed on the next probe.
    pub fn is_dead(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        // The waker is dropped at once: whoever reads next registers their own.
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(self).poll_read(&mut cx, &mut buf) {
            Poll::Pending => false,
            // One unsolicited byte, or EOF (nothing filled).
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(e)) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Self::TlsClient(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Self::TlsClient(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            Self::TlsClient(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
            Self::TlsClient(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Self::TlsClient(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    /// Sends TLS `close_notify` (when encrypted), flushes, then shuts down the write half.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Self::TlsClient(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
