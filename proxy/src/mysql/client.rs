//! Client login: the greeting (the backend's version and capabilities, sidepool's nonce,
//! CLIENT_SSL when `[pools.tls] client_mode` offers TLS), the SSLRequest and TLS upgrade,
//! HandshakeResponse41, authentication against `[[pools.users]]` with caching_sha2_password
//! (`client_auth = "password"`) or mysql_native_password (`"native"`), and hand-over to the
//! relay, which sends the final OK.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sidepool_config::ClientAuth;
use sidepool_protocol::mysql::handshake::{self, Greeting};
use sidepool_protocol::mysql::{CapabilityFlags, StatusFlags, auth, packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::auth::{MAX_LOGIN_PACKET, authenticate, read_packet, send};
use super::backend::{BASE_CAPABILITIES, ConnKey, KEYED_CAPABILITIES};
use super::errors::{
    self, ACCESS_DENIED, HANDSHAKE_ERROR, SECURE_TRANSPORT_REQUIRED, TOO_MANY_CONNECTIONS,
};
use super::login::Login;
use super::relay::Relay;
use super::service::MyService;
use crate::error::SessionError;
use crate::lifecycle::ClientSide;
use crate::lifecycle::MAX_CLIENTS_HINT;
use crate::service::PoolCore;
use crate::session::ClientInfo;
use crate::tls::Stream;

/// How long a client may take from connecting to finishing authentication.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Capabilities sidepool offers clients (intersected with the backend's).
const OFFERED: CapabilityFlags = BASE_CAPABILITIES
    .union(KEYED_CAPABILITIES)
    .union(CapabilityFlags::CLIENT_CONNECT_WITH_DB);

impl ClientSide for MyService {
    fn pool_core(&self) -> &PoolCore {
        &self.core
    }

    /// Error 1040 in place of the greeting: MySQL clients read first.
    async fn refuse(self: Arc<Self>, tcp: TcpStream, message: String) -> bool {
        let msg = format!("{message}; {MAX_CLIENTS_HINT}");
        let refusal = errors::before_greeting(&sidepool_protocol::mysql::response::err_packet(
            TOO_MANY_CONNECTIONS,
            "08004",
            &msg,
        ));
        let _ = Stream::Plain(tcp)
            .write_all(&packet::encode(0, &refusal))
            .await;
        true
    }

    async fn session(
        self: Arc<Self>,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> Result<(), SessionError> {
        let mut buf = BytesMut::with_capacity(1024);
        // The login (with its TLS handshake) and the relay run in boxed futures of their own:
        // this one lives as long as the client, so only what they share is kept for it.
        let greeted = Box::pin(tokio::time::timeout(
            LOGIN_TIMEOUT,
            login(&self, Stream::Plain(tcp), &mut buf, addr),
        ))
        .await;
        let (stream, login) = match greeted {
            Ok(Ok(Some(login))) => login,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(SessionError::LoginTimeout(LOGIN_TIMEOUT)),
        };
        tracing::Span::current().record("user", login.info.user.as_str());
        debug!(database = %login.info.database, "client authenticated");
        let _registered = self.sessions.register(&login.info);
        Box::pin(Relay::start(self.clone(), stream, buf, login)).await
    }
}

/// The backend's greeting: cached, or learnt by checking a connection out once.
async fn backend_greeting(svc: &MyService, addr: SocketAddr) -> Result<Greeting, Vec<u8>> {
    if let Some(g) = svc.greeting.lock().clone() {
        return Ok(g);
    }
    let user = svc.users.keys().next().cloned().unwrap_or_default();
    let key = ConnKey {
        user: user.as_str().into(),
        capabilities: KEYED_CAPABILITIES,
        collation: 45,
    };
    let info = Arc::new(ClientInfo::new(
        svc.name.clone(),
        addr,
        user,
        String::new(),
        String::new(),
    ));
    match svc.primary.get(&key, info).await {
        Ok(conn) => {
            let g = conn.greeting.clone();
            conn.release();
            Ok(g)
        }
        Err(e) => Err(errors::checkout_failed(&svc.name, &svc.primary_addr, &e)),
    }
}

/// Reads the client's first packet, SSLRequest or HandshakeResponse41, without reading past
/// it: a client that sends SSLRequest starts its TLS handshake at once (MySQL has no answer to
/// wait for), and those bytes must stay in the socket for the TLS acceptor.
async fn read_first_packet(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Option<(u8, Vec<u8>)>, SessionError> {
    if !buf.is_empty() {
        // Sent before the greeting: no TLS handshake can follow in the same bytes.
        return read_packet(stream, buf).await;
    }
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(SessionError::ClientIo(e)),
    }
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if len >= packet::MAX_PAYLOAD || len > MAX_LOGIN_PACKET {
        // A split or oversized login packet: the general reader caps and reports it.
        buf.extend_from_slice(&header);
        return read_packet(stream, buf).await;
    }
    let mut payload = vec![0u8; len];
    match stream.read_exact(&mut payload).await {
        Ok(_) => Ok(Some((header[3], payload))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(SessionError::ClientIo(e)),
    }
}

/// Greets and authenticates, upgrading to TLS on the client's SSLRequest. Returns the stream
/// the session goes on with. `Ok(None)`: the client failed or left (it was told).
async fn login(
    svc: &MyService,
    mut stream: Stream,
    buf: &mut BytesMut,
    addr: SocketAddr,
) -> Result<Option<(Stream, Login)>, SessionError> {
    let Some(greeting) = send_greeting(svc, &mut stream, addr).await? else {
        return Ok(None);
    };
    let Some((seq, payload)) = read_first_packet(&mut stream, buf).await? else {
        return Ok(None);
    };
    let Some((mut stream, seq, payload)) = secure(svc, stream, buf, seq, payload, addr).await?
    else {
        return Ok(None);
    };
    let hello = match handshake::parse_handshake_response(&payload) {
        Ok(h) => h,
        Err(e) => {
            let msg = format!("sidepool: bad handshake: {e}");
            let _ = send(
                &mut stream,
                &errors::error(seq.wrapping_add(1), HANDSHAKE_ERROR, &msg),
            )
            .await;
            return Err(SessionError::ClientProtocol(e));
        }
    };
    let mut next = seq.wrapping_add(1);
    let mut nonce = greeting.nonce;
    let plugin = greeting.auth_plugin.as_str();
    if !authenticate(svc, &mut stream, buf, &hello, plugin, &mut nonce, &mut next).await? {
        let msg = format!(
            "Access denied for user '{}'@'{}' (using password: {})",
            hello.user,
            addr.ip(),
            if hello.auth_response.is_empty() {
                "NO"
            } else {
                "YES"
            }
        );
        warn!(user = %hello.user, "client authentication failed");
        let _ = send(&mut stream, &errors::error(next, ACCESS_DENIED, &msg)).await;
        return Ok(None);
    }
    let capabilities = hello.capabilities & greeting.capabilities;
    let info = Arc::new(ClientInfo::new(
        svc.name.clone(),
        addr,
        hello.user.clone(),
        hello.database.clone().unwrap_or_default(),
        hello
            .attribute("program_name")
            .unwrap_or_default()
            .to_owned(),
    ));
    let login = Login {
        info,
        key: ConnKey {
            user: hello.user.as_str().into(),
            capabilities: capabilities & KEYED_CAPABILITIES,
            collation: hello.collation,
        },
        capabilities,
        next_seq: next,
        nonce,
    };
    Ok(Some((stream, login)))
}

/// Sends the greeting: the backend's version and capabilities (as far as sidepool offers
/// them), a fresh nonce, sidepool's auth plugin, CLIENT_SSL when TLS is offered. Returns what
/// was sent; `Ok(None)` when no backend could be asked for its greeting (the client was told).
async fn send_greeting(
    svc: &MyService,
    stream: &mut Stream,
    addr: SocketAddr,
) -> Result<Option<Greeting>, SessionError> {
    let backend = match backend_greeting(svc, addr).await {
        Ok(g) => g,
        Err(err) => {
            let _ = send(stream, &packet::encode(0, &errors::before_greeting(&err))).await;
            return Ok(None);
        }
    };
    let plugin = match svc.client_auth {
        ClientAuth::Password => auth::CACHING_SHA2,
        _ => auth::NATIVE,
    };
    let mut offered = OFFERED & backend.capabilities;
    // TLS towards clients is sidepool's own, whatever the backend offers.
    offered.set(CapabilityFlags::CLIENT_SSL, svc.client_tls.offers_tls());
    static NEXT_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let greeting = Greeting {
        connection_id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        capabilities: offered,
        status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        nonce: auth::new_nonce().to_vec(),
        auth_plugin: plugin.to_owned(),
        ..backend
    };
    send(stream, &packet::encode(0, &handshake::greeting(&greeting))).await?;
    Ok(Some(greeting))
}

/// Upgrades to TLS when the client's first packet is an SSLRequest, then reads its
/// HandshakeResponse41; refuses TLS a pool does not offer and plaintext a pool does not
/// accept. Returns the stream and the response packet; `Ok(None)`: refused or gone.
async fn secure(
    svc: &MyService,
    mut stream: Stream,
    buf: &mut BytesMut,
    seq: u8,
    payload: Vec<u8>,
    addr: SocketAddr,
) -> Result<Option<(Stream, u8, Vec<u8>)>, SessionError> {
    if handshake::parse_ssl_request(&payload).is_none() {
        if svc.client_tls.requires_tls() {
            let msg = format!(
                "sidepool: pool \"{}\" accepts only TLS connections; connect with TLS \
                 (--ssl, ssl-mode=REQUIRED or VERIFY_IDENTITY)",
                svc.name
            );
            warn!(client.addr = %addr, "plaintext client refused: client_mode = require");
            let refusal = errors::error(seq.wrapping_add(1), SECURE_TRANSPORT_REQUIRED, &msg);
            let _ = send(&mut stream, &refusal).await;
            return Ok(None);
        }
        return Ok(Some((stream, seq, payload)));
    }
    if !svc.client_tls.offers_tls() {
        let msg = "sidepool: this pool does not offer TLS to clients; connect without TLS \
                   (--ssl-mode=DISABLED), or configure [pools.tls] client_mode";
        let _ = send(
            &mut stream,
            &errors::error(seq.wrapping_add(1), HANDSHAKE_ERROR, msg),
        )
        .await;
        return Ok(None);
    }
    if !buf.is_empty() {
        // Bytes after the SSLRequest, before the TLS handshake: plaintext that would pass
        // for encrypted (the CVE-2021-23222 class). Refuse.
        return Err(SessionError::ClientProtocol(
            sidepool_protocol::ProtocolError::Malformed {
                what: "SSLRequest",
                why: "data after the SSLRequest",
            },
        ));
    }
    let mut stream = match stream {
        Stream::Plain(tcp) => svc.client_tls.accept(tcp).await?,
        already => already,
    };
    Ok(read_packet(&mut stream, buf)
        .await?
        .map(|(seq, payload)| (stream, seq, payload)))
}
