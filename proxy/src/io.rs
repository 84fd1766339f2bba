//! The one way the relays read and write sockets ([`read_some`], [`write_reading`]), generic
//! over plaintext, TLS and bare TCP streams, and the per-thread spare buffers that let an idle
//! session hold none.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::Stream;

/// The most [`write_reading`] reads in one call to the stream.
const READ_CHUNK: usize = 8 * 1024;

/// Capacity of a session buffer taken with [`take_buffer`].
pub const BUFFER_SIZE: usize = 4 * 1024;
/// [`read_some`] makes room for at least this many bytes before it reads, so a request is
/// read in one call rather than in the sliver left at the end of the buffer.
const MIN_READ_ROOM: usize = 1024;
/// Buffers kept per worker thread for sessions that wake up.
const POOLED_BUFFERS: usize = 16;
/// Buffers that grew past this (a large result) are freed rather than kept.
const MAX_POOLED_CAPACITY: usize = 64 * 1024;

thread_local! {
    /// Empty buffers given back by parked sessions, reused by sessions that wake up.
    static BUFFERS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least [`BUFFER_SIZE`] bytes, from this thread's spares
/// when there is one (no allocation).
pub fn take_buffer() -> BytesMut {
    let mut buf = BUFFERS
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| BytesMut::with_capacity(BUFFER_SIZE));
    buf.clear();
    // Reclaims the space already consumed at the front; allocates only if the buffer is
    // still shared with bytes split off it.
    buf.reserve(BUFFER_SIZE);
    buf
}

/// Takes `buf` (leaving an empty one without capacity) and keeps it for [`take_buffer`] if it
/// is empty and of a reasonable size; otherwise frees it. A session that holds no bytes gives
/// its buffers back while it waits, so an idle client costs no buffer memory.
pub fn give_buffer(buf: &mut BytesMut) {
    let buf = std::mem::take(buf);
    if buf.is_empty() && (MIN_READ_ROOM..=MAX_POOLED_CAPACITY).contains(&buf.capacity()) {
        BUFFERS.with_borrow_mut(|spare| {
            if spare.len() < POOLED_BUFFERS {
                spare.push(buf);
            }
        });
    }
}

/// A socket the relays read and write: a client's or server's plaintext or TLS stream, or a
/// bare TCP stream (Dameng).
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP stream when bytes are read from it unchanged (no TLS layer between), so that
    /// readiness can be awaited before a buffer is taken.
    fn plain_tcp(&self) -> Option<&TcpStream>;
}

impl Socket for Stream {
    fn plain_tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(tcp) => Some(tcp),
            _ => None,
        }
    }
}

impl Socket for TcpStream {
    fn plain_tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

/// Reads what the peer sent into `buf`: the number of bytes, 0 at EOF. Every relay reads its
/// sockets through this one function.
///
/// A session parked without a buffer (`buf` has no capacity, see [`give_buffer`]) first waits
/// until a plaintext socket is readable and only then takes a buffer and reads, so the wait
/// holds no buffer. Otherwise `buf` gets room for at least
/// [`MIN_READ_ROOM`] bytes before the read.
///
/// # Cancel safety
/// Cancel safe: bytes are appended to `buf` only when the read completes.
pub async fn read_some<S: Socket + ?Sized>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    if buf.capacity() == 0 {
        if let Some(tcp) = stream.plain_tcp() {
            tcp.readable().await?;
        }
        // Readable: the read below finds bytes at once (it waits, holding the buffer, only
        // after a stale readiness report). Reading through `AsyncRead` rather than `try_read`
        // lets tokio clear the readiness after a short read, which saves the next read a
        // system call that would only say "would block".
        *buf = take_buffer();
    }
    if buf.capacity() - buf.len() < MIN_READ_ROOM {
        buf.reserve(MIN_READ_ROOM);
    }
    stream.read_buf(buf).await
}

/// Writes all of `data` to `stream` and flushes it, while reading whatever the same peer sends
/// into `inbox` (never growing it past `cap` bytes). Returns whether anything was read.
///
/// A relay that only reads one side while it writes the other deadlocks when both peers write
/// before they read (a pipelining client and a server answering it fill each other's socket
/// buffers). Reading runs only while the write is blocked, on the same `&mut stream`, so it
/// works for TLS streams, which cannot be split into independent halves.
///
/// A read error or EOF only stops the reading side: the caller sees it on its next read
/// (EOF and TLS errors repeat). Empty `data` returns `Ok(false)` at once without flushing.
///
/// # Errors
/// The write or flush failed (`WriteZero` if the stream accepts no bytes).
///
/// # Cancel safety
/// Not cancel safe: dropped mid-way, an unknown prefix of `data` has been written. Bytes
/// already read are in `inbox`.
pub async fn write_reading<S>(
    stream: &mut S,
    data: &[u8],
    inbox: &mut BytesMut,
    cap: usize,
) -> io::Result<bool>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    if data.is_empty() {
        return Ok(false);
    }
    let mut state = WriteReading {
        written: 0,
        got: false,
        reading: true,
    };
    poll_fn(|cx| state.poll(Pin::new(&mut *stream), cx, data, inbox, cap)).await
}

/// Progress of one [`write_reading`] call, kept across polls.
#[derive(Debug)]
struct WriteReading {
    written: usize,
    got: bool,
    reading: bool,
}

impl WriteReading {
    fn poll<S>(
        &mut self,
        mut stream: Pin<&mut S>,
        cx: &mut Context<'_>,
        data: &[u8],
        inbox: &mut BytesMut,
        cap: usize,
    ) -> Poll<io::Result<bool>>
    where
        S: AsyncRead + AsyncWrite + ?Sized,
    {
        loop {
            if self.poll_write_all(stream.as_mut(), cx, data)?.is_ready() {
                return Poll::Ready(Ok(self.got));
            }
            // The write is blocked, with our waker registered. Read until that also blocks;
            // a read can unblock a TLS write (it may process the peer's key update), so try
            // writing again after each one.
            if !self.reading || inbox.len() >= cap {
                return Poll::Pending;
            }
            match poll_read_into(stream.as_mut(), cx, inbox, cap) {
                Poll::Ready(Ok(n)) if n > 0 => self.got = true,
                Poll::Ready(_) => {
                    self.reading = false;
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Writes the rest of `data`, then flushes (a TLS stream may hold records in its buffer).
    fn poll_write_all<S>(
        &mut self,
        mut stream: Pin<&mut S>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + ?Sized,
    {
        while self.written < data.len() {
            match ready!(stream.as_mut().poll_write(cx, &data[self.written..]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.written += n,
            }
        }
        stream.poll_flush(cx)
    }
}

/// One read of at most `cap - inbox.len()` (and [`READ_CHUNK`]) bytes appended to `inbox`:
/// the number read, 0 at EOF.
fn poll_read_into<S>(
    stream: Pin<&mut S>,
    cx: &mut Context<'_>,
    inbox: &mut BytesMut,
    cap: usize,
) -> Poll<io::Result<usize>>
where
    S: AsyncRead + ?Sized,
{
    let len = inbox.len();
    let room = cap.saturating_sub(len).min(READ_CHUNK);
    // Zero-filled rather than uninitialised spare capacity: this crate forbids unsafe.
    inbox.resize(len + room, 0);
    let mut buf = ReadBuf::new(&mut inbox[len..]);
    let polled = stream.poll_read(cx, &mut buf);
    let n = buf.filled().len();
    inbox.truncate(len + n);
    polled.map_ok(|()| n)
}

#[cfg(test)]
mod tests;
