//! Client login: startup packets, TLS as `[pools.tls] client_mode` says (GSS encryption is
//! refused), CancelRequest, authentication against `[[pools.users]]`, then the hand-over to the
//! relay, or to the console ([`super::console`]) for database `sidepool`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sidepool_config::ClientAuth;
use sidepool_protocol::pg::auth::{self, ScramServer};
use sidepool_protocol::pg::backend::{self as be, Severity};
use sidepool_protocol::pg::{frame, frontend, startup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::Stream;
use tracing::{debug, warn};

use super::backend::ConnKey;
use super::errors::{self, INVALID_AUTHORIZATION, INVALID_PASSWORD, PROTOCOL_VIOLATION, error};
use super::login::Login;
use super::relay::Relay;
use super::service::PgService;
use crate::error::SessionError;
use crate::lifecycle::ClientSide;
use crate::lifecycle::MAX_CLIENTS_HINT;
use crate::service::PoolCore;
use crate::session::ClientInfo;

/// How long a client may take from connecting to finishing authentication.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Startup parameters that are not session settings to replay on a server connection.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

impl ClientSide for PgService {
    fn pool_core(&self) -> &PoolCore {
        &self.core
    }

    /// Refuses after the startup packet, the first moment PostgreSQL clients read an answer;
    /// a CancelRequest is served all the same (it is no client).
    async fn refuse(self: Arc<Self>, tcp: TcpStream, message: String) -> bool {
        let mut buf = BytesMut::with_capacity(512);
        let hello = tokio::time::timeout(
            LOGIN_TIMEOUT,
            read_startup(&self, Stream::Plain(tcp), &mut buf),
        )
        .await;
        let Ok(Ok((mut stream, Some(_)))) = hello else {
            return false;
        };
        if self.refuse_plaintext(&mut stream).await {
            return false;
        }
        let refusal = error(
            Severity::Fatal,
            errors::TOO_MANY_CONNECTIONS,
            &message,
            Some(MAX_CLIENTS_HINT),
        );
        let _ = stream.write_all(&refusal).await;
        true
    }

    async fn session(
        self: Arc<Self>,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> Result<(), SessionError> {
        let mut buf = BytesMut::with_capacity(512);
        // The login and relay stages run in boxed futures of their own: this one lives as long
        // as the client, so only what they share is kept for an idle client.
        let hello = Box::pin(tokio::time::timeout(
            LOGIN_TIMEOUT,
            read_startup(&self, Stream::Plain(tcp), &mut buf),
        ))
        .await;
        let (mut stream, params) = match hello {
            Ok(Ok((stream, Some(params)))) => (stream, params),
            Ok(Ok((_, None))) => return Ok(()), // a cancel request, or the client went away
            Ok(Err(e)) => {
                debug!(error = %errors::chain(&e), "client startup failed");
                return Ok(());
            }
            Err(_) => {
                debug!("client sent no startup packet in time");
                return Ok(());
            }
        };
        if self.refuse_plaintext(&mut stream).await {
            return Ok(());
        }
        let Some(login) = Login::new(&self, addr, &params) else {
            let why = "no PostgreSQL user name specified in startup packet";
            let _ = stream
                .write_all(&error(Severity::Fatal, INVALID_AUTHORIZATION, why, None))
                .await;
            return Ok(());
        };
        tracing::Span::current().record("user", login.info.user.as_str());
        if !self
            .authenticate_in_time(&mut stream, &mut buf, &login.info.user)
            .await?
        {
            return Ok(());
        }
        debug!(database = %login.info.database, "client authenticated");
        if login.info.database == crate::console::DATABASE {
            return Box::pin(super::console::run(&self, stream, buf, login)).await;
        }
        let _registered = self.sessions.register(&login.info);
        Box::pin(Relay::start(self.clone(), stream, buf, login)).await
    }
}

impl PgService {
    /// Refuses a plaintext client of a pool that accepts only TLS; `true` if it did.
    async fn refuse_plaintext(&self, stream: &mut Stream) -> bool {
        if !self.client_tls.requires_tls() || stream.is_tls() {
            return false;
        }
        let msg = format!(
            "sidepool: pool \"{}\" accepts only TLS connections",
            self.name
        );
        let hint = "connect with sslmode=require (or verify-full)";
        let _ = stream
            .write_all(&error(
                Severity::Fatal,
                INVALID_AUTHORIZATION,
                &msg,
                Some(hint),
            ))
            .await;
        true
    }

    /// [`authenticate`] within [`LOGIN_TIMEOUT`]. `Ok(false)`: the client failed or left (it
    /// was told).
    async fn authenticate_in_time(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        user: &str,
    ) -> Result<bool, SessionError> {
        let auth = Box::pin(tokio::time::timeout(
            LOGIN_TIMEOUT,
            authenticate(self, stream, buf, user),
        ))
        .await;
        match auth {
            Ok(done) => done,
            Err(_) => {
                // PgBouncer's client_login_timeout does the same: say why before closing.
                let why = format!(
                    "sidepool: login not finished within {}s; check the client's password \
                     exchange and network",
                    LOGIN_TIMEOUT.as_secs()
                );
                let _ = stream
                    .write_all(&error(Severity::Fatal, PROTOCOL_VIOLATION, &why, None))
                    .await;
                Err(SessionError::LoginTimeout(LOGIN_TIMEOUT))
            }
        }
    }
}

impl Login {
    fn new(svc: &PgService, addr: SocketAddr, params: &[(String, String)]) -> Option<Login> {
        let user = startup::StartupPacket::param(params, "user").filter(|u| !u.is_empty())?;
        let database = startup::StartupPacket::param(params, "database")
            .filter(|d| !d.is_empty())
            .unwrap_or(user);
        let mut settings: BTreeMap<String, String> = params
            .iter()
            .filter(|(k, _)| !NOT_SETTINGS.contains(&k.as_str()) && !k.starts_with("_pq_."))
            .cloned()
            .collect();
        if let Some(options) = startup::StartupPacket::param(params, "options") {
            settings.extend(command_line_settings(options));
        }
        let info = Arc::new(ClientInfo::new(
            svc.name.clone(),
            addr,
            user.to_owned(),
            database.to_owned(),
            settings
                .get("application_name")
                .cloned()
                .unwrap_or_default(),
        ));
        let key = ConnKey {
            user: user.into(),
            database: database.into(),
        };
        let settings = svc.shared_settings(settings);
        Some(Login {
            info,
            key,
            startup_settings: settings.clone(),
            settings,
        })
    }
}

async fn read_packet(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Option<Bytes>, SessionError> {
    loop {
        match startup::check(buf) {
            Ok(Some(n)) => return Ok(Some(buf.split_to(n).freeze())),
            Ok(None) => {}
            Err(e) => {
                // Oversized or malformed: say so in the protocol's own terms, then close.
                let msg = format!("sidepool: invalid startup packet: {e}");
                let _ = stream
                    .write_all(&error(Severity::Fatal, PROTOCOL_VIOLATION, &msg, None))
                    .await;
                return Err(SessionError::ClientProtocol(e));
            }
        }
        if stream.read_buf(buf).await.map_err(SessionError::ClientIo)? == 0 {
            return Ok(None);
        }
    }
}

/// Reads startup packets until a StartupMessage; answers SSLRequest with `S` and the TLS
/// handshake when `[pools.tls] client_mode` offers TLS, with `N` otherwise and to
/// GSSENCRequest, and handles a CancelRequest (returns `None`).
async fn read_startup(
    svc: &PgService,
    mut stream: Stream,
    buf: &mut BytesMut,
) -> Result<(Stream, Option<Vec<(String, String)>>), SessionError> {
    loop {
        let Some(packet) = read_packet(&mut stream, buf).await? else {
            return Ok((stream, None));
        };
        let parsed = match startup::parse(&packet) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("sidepool: invalid startup packet: {e}");
                let _ = stream
                    .write_all(&error(Severity::Fatal, PROTOCOL_VIOLATION, &msg, None))
                    .await;
                return Err(SessionError::ClientProtocol(e));
            }
        };
        match parsed {
            startup::StartupPacket::SslRequest | startup::StartupPacket::GssEncRequest => {
                if !buf.is_empty() {
                    // Bytes after an SSLRequest before our answer: a client trying to inject
                    // plaintext into a TLS session (CVE-2021-23222 class). Refuse.
                    return Err(SessionError::ClientProtocol(
                        sidepool_protocol::ProtocolError::Malformed {
                            what: "startup",
                            why: "data after encryption request",
                        },
                    ));
                }
                let upgrade = matches!(parsed, startup::StartupPacket::SslRequest)
                    && svc.client_tls.offers_tls();
                match stream {
                    Stream::Plain(mut tcp) if upgrade => {
                        tcp.write_all(b"S").await.map_err(SessionError::ClientIo)?;
                        stream = svc.client_tls.accept(tcp).await?;
                    }
                    mut other => {
                        other
                            .write_all(b"N")
                            .await
                            .map_err(SessionError::ClientIo)?;
                        stream = other;
                    }
                }
            }
            startup::StartupPacket::Cancel { pid, secret } => {
                svc.cancels.cancel(pid, &secret).await;
                return Ok((stream, None));
            }
            startup::StartupPacket::Startup { minor, params } => {
                if minor > 0 {
                    let unsupported: Vec<&str> = params
                        .iter()
                        .filter(|(k, _)| k.starts_with("_pq_."))
                        .map(|(k, _)| k.as_str())
                        .collect();
                    let msg = be::negotiate_protocol_version(&unsupported);
                    stream
                        .write_all(&msg)
                        .await
                        .map_err(SessionError::ClientIo)?;
                }
                return Ok((stream, Some(params)));
            }
        }
    }
}

/// Reads one whole typed message during authentication.
async fn read_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Option<Bytes>, SessionError> {
    loop {
        if let Some(h) = frame::check(buf, frontend::MAX_AUTH_MESSAGE_LEN)
            .map_err(SessionError::ClientProtocol)?
        {
            return Ok(Some(buf.split_to(h.total_len).freeze()));
        }
        if stream.read_buf(buf).await.map_err(SessionError::ClientIo)? == 0 {
            return Ok(None);
        }
    }
}

/// Runs the configured auth exchange. `Ok(false)`: the client failed or left (it was told).
async fn authenticate(
    svc: &PgService,
    stream: &mut Stream,
    buf: &mut BytesMut,
    user: &str,
) -> Result<bool, SessionError> {
    match svc.client_auth {
        ClientAuth::Trust => Ok(true),
        ClientAuth::Md5 => authenticate_md5(svc, stream, buf, user).await,
        ClientAuth::Password | ClientAuth::Native => {
            authenticate_scram(svc, stream, buf, user).await
        }
    }
}

/// Tells a client its password was not accepted (the same words for an unknown user, so that
/// users cannot be enumerated); `reason` goes to the log only.
async fn reject(
    stream: &mut Stream,
    user: &str,
    reason: &'static str,
) -> Result<bool, SessionError> {
    warn!(reason, "client authentication failed");
    let failed = format!("password authentication failed for user \"{user}\"");
    let _ = stream
        .write_all(&error(Severity::Fatal, INVALID_PASSWORD, &failed, None))
        .await;
    Ok(false)
}

/// Tells a client its auth message broke the exchange.
async fn refuse_exchange(stream: &mut Stream, text: &str) -> Result<bool, SessionError> {
    let _ = stream
        .write_all(&error(Severity::Fatal, PROTOCOL_VIOLATION, text, None))
        .await;
    Ok(false)
}

/// `client_auth = "md5"`: AuthenticationMD5Password with a random salt.
async fn authenticate_md5(
    svc: &PgService,
    stream: &mut Stream,
    buf: &mut BytesMut,
    user: &str,
) -> Result<bool, SessionError> {
    let salt = auth::random_md5_salt();
    stream
        .write_all(&be::authentication_md5(salt))
        .await
        .map_err(SessionError::ClientIo)?;
    let Some(msg) = expect_password(stream, buf).await? else {
        return Ok(false);
    };
    let response = frontend::parse_password(&msg).map_err(SessionError::ClientProtocol)?;
    match svc.users.get(user) {
        Some(u) if auth::md5_verify(user, &u.password, salt, response) => Ok(true),
        Some(_) => reject(stream, user, "wrong password").await,
        None => reject(stream, user, "unknown user").await,
    }
}

/// `client_auth = "password"`: SCRAM-SHA-256. An unknown user goes through the same exchange
/// against a stand-in secret and fails like a wrong password.
async fn authenticate_scram(
    svc: &PgService,
    stream: &mut Stream,
    buf: &mut BytesMut,
    user: &str,
) -> Result<bool, SessionError> {
    let known = svc.users.get(user);
    let mock;
    let secret = match known {
        Some(u) => &u.scram,
        None => {
            mock = auth::ScramSecret::mock(user, &svc.mock_key);
            &mock
        }
    };
    stream
        .write_all(&be::authentication_sasl(auth::SCRAM_SHA_256))
        .await
        .map_err(SessionError::ClientIo)?;
    let Some(msg) = expect_password(stream, buf).await? else {
        return Ok(false);
    };
    let (mechanism, data) =
        frontend::parse_sasl_initial_response(&msg).map_err(SessionError::ClientProtocol)?;
    if mechanism != auth::SCRAM_SHA_256 {
        let text =
            format!("sidepool: unsupported SASL mechanism \"{mechanism}\"; use SCRAM-SHA-256");
        return refuse_exchange(stream, &text).await;
    }
    let (server, first) = match ScramServer::start(secret, data) {
        Ok(s) => s,
        Err(e) => {
            return refuse_exchange(stream, &format!("sidepool: malformed SCRAM message: {e}"))
                .await;
        }
    };
    stream
        .write_all(&be::authentication_sasl_continue(&first))
        .await
        .map_err(SessionError::ClientIo)?;
    let Some(msg) = expect_password(stream, buf).await? else {
        return Ok(false);
    };
    match server.finish(frontend::sasl_response_data(&msg)) {
        Ok(last) => {
            stream
                .write_all(&be::authentication_sasl_final(&last))
                .await
                .map_err(SessionError::ClientIo)?;
            Ok(true)
        }
        Err(e) => {
            debug!(error = %e, "SCRAM exchange failed");
            let reason = if known.is_some() {
                "wrong password"
            } else {
                "unknown user"
            };
            reject(stream, user, reason).await
        }
    }
}

async fn expect_password(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Option<Bytes>, SessionError> {
    let Some(msg) = read_message(stream, buf).await? else {
        return Ok(None);
    };
    if msg[0] != frontend::tag::PASSWORD {
        let text = "sidepool: expected a password message during authentication";
        let _ = stream
            .write_all(&error(Severity::Fatal, PROTOCOL_VIOLATION, text, None))
            .await;
        return Ok(None);
    }
    Ok(Some(msg))
}

/// The settings in a startup `options` value (`-c name=value`, `--name=value`, as libpq sends
/// them: separated by spaces, a backslash escapes the next character). Other switches are
/// ignored; they have no meaning for a pooled connection.
pub fn command_line_settings(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut iter = words.into_iter();
    while let Some(w) = iter.next() {
        let pair = if w == "-c" {
            iter.next()
        } else {
            w.strip_prefix("--")
                .or_else(|| w.strip_prefix("-c"))
                .map(str::to_owned)
        };
        if let Some((name, value)) = pair.as_deref().and_then(|p| p.split_once('=')) {
            out.push((name.replace('-', "_"), value.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::command_line_settings;

    #[test]
    fn options_settings_are_parsed_like_postgres_does() {
        let s = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            command_line_settings("-c statement_timeout=5s -csearch_path=a,b --work-mem=8MB"),
            s(&[
                ("statement_timeout", "5s"),
                ("search_path", "a,b"),
                ("work_mem", "8MB")
            ])
        );
        assert_eq!(
            command_line_settings(r"-c application_name=my\ app  -c x.y=1"),
            s(&[("application_name", "my app"), ("x.y", "1")])
        );
        assert_eq!(
            command_line_settings("-d 3 -c"),
            s(&[]),
            "other switches and a dangling -c"
        );
    }
}
