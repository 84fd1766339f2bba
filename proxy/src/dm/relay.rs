//! The DM relay: forwards whole messages both ways, reading only their headers.
//!
//! Requests and replies pair up in order (the drivers send one message and read one reply).
//! What the relay learns from headers:
//! - the reply to the first request (STARTUP): whether the connection switches to SSL (then the
//!   rest is relayed as opaque bytes) or to CRC32-checked bodies (then byte 19 is not checked);
//! - execute replies: the transaction status; COMMIT/ROLLBACK replies: no transaction.
//!
//! The session is *idle* when no request waits for its reply and no transaction is open. Only
//! then do `max_idle_time` and `max_lifetime` end it, does a drain end it, and is holding the
//! server connection expected (not a leak).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sidepool_pool::Pooled;
use sidepool_protocol::dm::{self, FrameRules, HeaderError, command};

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::service::{DmConnector, DmService};
use crate::io::{Socket, read_some, write_reading};
use crate::lifecycle::INBOX_CAP;
use crate::session::ClientInfo;

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// The client closed its connection.
    ClientLeft,
    /// The server closed its connection.
    ServerLeft,
    /// Leak termination or console `KILL`.
    Killed,
    /// Drain or pool removal, at an idle point.
    Drained,
    /// Idle longer than `max_idle_time`.
    IdleTime,
    /// Server connection older than its lifetime, at an idle point.
    Lifetime,
    /// The client sent a header sidepool refuses.
    ClientFrame(HeaderError),
    /// The server sent a header sidepool refuses.
    ServerFrame(HeaderError),
    /// A socket failed.
    Io(std::io::Error),
}

/// What a request's reply will tell.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Startup,
    Exec(Instant),
    EndsTransaction,
    Other,
}

/// Reads whole messages from one socket.
struct Frames {
    buf: BytesMut,
    rules: FrameRules,
    /// TLS was negotiated: hand out whatever bytes arrive, unframed.
    opaque: bool,
}

impl Frames {
    fn new(rules: FrameRules) -> Self {
        Frames {
            buf: BytesMut::with_capacity(READ_CHUNK),
            rules,
            opaque: false,
        }
    }

    /// The next whole message (in opaque mode: the bytes buffered); `Ok(None)` on EOF between
    /// messages.
    ///
    /// # Cancel safety
    /// Safe: bytes read stay in the buffer for the next call.
    async fn next(&mut self, stream: &mut impl Socket) -> Result<Option<BytesMut>, ReadError> {
        loop {
            if self.opaque {
                if !self.buf.is_empty() {
                    return Ok(Some(self.buf.split()));
                }
            } else if let Some(len) =
                dm::check_frame(&self.buf, &self.rules).map_err(ReadError::Frame)?
            {
                return Ok(Some(self.buf.split_to(len)));
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK {
                self.buf.reserve(READ_CHUNK);
            }
            match read_some(stream, &mut self.buf).await {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => {
                    return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

enum ReadError {
    Frame(HeaderError),
    Io(std::io::Error),
}

type Server = Pooled<DmConnector, Arc<ClientInfo>>;

struct Relay<'a> {
    svc: &'a DmService,
    info: &'a ClientInfo,
    from_client: Frames,
    from_server: Frames,
    pending: VecDeque<Pending>,
    seen_startup: bool,
    in_transaction: bool,
    /// TLS was negotiated: bytes are relayed without framing.
    opaque: bool,
    /// A drain asked to end at the next idle point.
    ending: bool,
    last_activity: Instant,
}

/// Relays between `client` and `server` until the session ends, then closes the server
/// connection (returned to the pool only when past its lifetime, so the pool counts it as
/// `max_lifetime`; otherwise discarded: a DM session is never reused).
pub async fn run(
    svc: &DmService,
    mut client: TcpStream,
    mut server: Server,
    info: &ClientInfo,
) -> End {
    let mut relay = Relay {
        svc,
        info,
        from_client: Frames::new(svc.rules),
        from_server: Frames::new(svc.rules),
        pending: VecDeque::new(),
        seen_startup: false,
        in_transaction: false,
        opaque: false,
        ending: false,
        last_activity: Instant::now(),
    };
    info.touch(false);
    let end = relay.pump(&mut client, &mut server).await;
    drop(client);
    if relay.in_transaction || !relay.pending.is_empty() {
        // The server rolls back when its connection closes.
        svc.core.abandoned();
    }
    match &end {
        End::Lifetime => server.release(),
        End::ClientFrame(e) => {
            warn!(error = %e, "client sent a DM message header sidepool refuses; closing");
            server.discard();
        }
        End::ServerFrame(e) => {
            warn!(error = %e, "server sent a DM message header sidepool refuses; closing");
            server.discard();
        }
        End::Killed | End::Drained => {
            // DM has no error message sidepool knows how to send: the client sees its
            // connection closed.
            info!(reason = ?info.kill_reason(), "session ended by sidepool; connection closed");
            server.discard();
        }
        _ => server.discard(),
    }
    end
}

impl Relay<'_> {
    fn idle(&self) -> bool {
        self.pending.is_empty() && !self.in_transaction && !self.opaque
    }

    /// When the idle session is to end (`max_idle_time` or lifetime), if it is idle.
    fn deadline(&self, server: &Server) -> Option<(Instant, End)> {
        if !self.idle() {
            return None;
        }
        let settings = self.svc.core.backend.settings();
        let idle = settings
            .max_idle_time
            .map(|t| (self.last_activity + t, End::IdleTime));
        let life = server
            .lifetime()
            .map(|t| (server.created_at() + t, End::Lifetime));
        match (idle, life) {
            (Some(i), Some(l)) => Some(if l.0 <= i.0 { l } else { i }),
            (i, l) => i.or(l),
        }
    }

    async fn pump(&mut self, client: &mut TcpStream, server: &mut Server) -> End {
        loop {
            self.info
                .set_hold_expected(self.opaque || !self.in_transaction);
            if self.ending && self.idle() {
                return End::Drained;
            }
            let (at, why) = match self.deadline(server) {
                Some((at, why)) => (Some(at), Some(why)),
                None => (None, None),
            };
            let far = Instant::now() + Duration::from_secs(86_400 * 365);
            let step = tokio::select! {
                r = self.from_client.next(client) => match r {
                    Ok(Some(bytes)) if self.opaque => {
                        self.info.touch(true);
                        send(server, &bytes, &mut self.from_server).await
                    }
                    Ok(Some(frame)) => self.request(frame, server).await,
                    Ok(None) => Err(End::ClientLeft),
                    Err(ReadError::Frame(e)) => Err(End::ClientFrame(e)),
                    Err(ReadError::Io(_)) => Err(End::ClientLeft),
                },
                r = self.from_server.next(&mut **server) => match r {
                    Ok(Some(bytes)) if self.opaque => {
                        self.info.touch(false);
                        send(client, &bytes, &mut self.from_client).await
                    }
                    Ok(Some(frame)) => self.reply(frame, client).await,
                    Ok(None) => Err(End::ServerLeft),
                    Err(ReadError::Frame(e)) => Err(End::ServerFrame(e)),
                    Err(ReadError::Io(e)) => Err(End::Io(e)),
                },
                () = self.info.killed() => {
                    if self.info.ends_gracefully() {
                        self.ending = true;
                        Ok(())
                    } else {
                        Err(End::Killed)
                    }
                }
                () = tokio::time::sleep_until(at.unwrap_or(far)), if at.is_some() => {
                    Err(why.unwrap_or(End::IdleTime))
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn request(&mut self, frame: BytesMut, server: &mut Server) -> Result<(), End> {
        let kind = if !self.seen_startup {
            self.seen_startup = true;
            Pending::Startup
        } else if dm::expects_exec_reply(&frame) {
            Pending::Exec(Instant::now())
        } else {
            match dm::parse_header(&frame, &self.from_client.rules) {
                Ok(Some(h)) if h.command == command::COMMIT || h.command == command::ROLLBACK => {
                    Pending::EndsTransaction
                }
                _ => Pending::Other,
            }
        };
        if let Ok(Some(h)) = dm::parse_header(&frame, &self.from_client.rules) {
            self.info.set_statement(command_name(h.command).as_bytes());
        }
        self.pending.push_back(kind);
        self.info.touch(true);
        self.last_activity = Instant::now();
        send(server, &frame, &mut self.from_server).await
    }

    async fn reply(&mut self, frame: BytesMut, client: &mut TcpStream) -> Result<(), End> {
        let ok = dm::parse_header(&frame, &self.from_server.rules)
            .ok()
            .flatten()
            .is_some_and(|h| h.return_code >= 0);
        match self.pending.pop_front() {
            Some(Pending::Startup) => {
                if let Some(reply) = dm::parse_startup_reply(&frame) {
                    if reply.switches_to_ssl() {
                        debug!("DM server switched the connection to SSL; relaying opaque bytes");
                        self.opaque = true;
                        self.from_client.opaque = true;
                        self.from_server.opaque = true;
                    }
                    if reply.crc32 {
                        self.from_client.rules.xor_checksum = false;
                        self.from_server.rules.xor_checksum = false;
                    }
                }
            }
            Some(Pending::Exec(sent)) => {
                self.svc.core.metrics.query(sent.elapsed());
                if ok && let Some(status) = dm::exec_reply_trx_status(&frame) {
                    self.in_transaction = dm::trx_open(status);
                }
            }
            Some(Pending::EndsTransaction) if ok => self.in_transaction = false,
            _ => {}
        }
        self.info.touch(!self.pending.is_empty());
        self.last_activity = Instant::now();
        send(client, &frame, &mut self.from_client).await
    }
}

/// Writes `bytes` to `peer`, keeping what `peer` sends meanwhile for its next read (see
/// [`write_reading`]).
async fn send(peer: &mut TcpStream, bytes: &[u8], from_peer: &mut Frames) -> Result<(), End> {
    write_reading(peer, bytes, &mut from_peer.buf, INBOX_CAP)
        .await
        .map(drop)
        .map_err(End::Io)
}

/// The command's name for leak reports (DM bodies, and so SQL, are not decoded).
fn command_name(code: u16) -> String {
    let name = match code {
        command::LOGIN => "LOGIN",
        command::LOGOUT => "LOGOUT",
        command::ALLOCATE_STATEMENT => "ALLOCATE_STATEMENT",
        command::FREE_STATEMENT => "FREE_STATEMENT",
        command::PREPARE => "PREPARE",
        command::EXECUTE => "EXECUTE",
        command::FETCH => "FETCH",
        command::COMMIT => "COMMIT",
        command::ROLLBACK => "ROLLBACK",
        command::EXECUTE2 => "EXECUTE2",
        command::PUT_DATA => "PUT_DATA",
        command::SET_CURSOR_NAME => "SET_CURSOR_NAME",
        command::MORE_RESULTS => "MORE_RESULTS",
        command::SET_ISOLATION => "SET_ISOLATION",
        command::PARAMETER_TYPES => "PARAMETER_TYPES",
        command::OPTIMIZED_EXECUTE => "OPTIMIZED_EXECUTE",
        command::STARTUP => "STARTUP",
        other => return format!("DM command {other} (SQL text not decoded)"),
    };
    format!("DM command {name} (SQL text not decoded)")
}
