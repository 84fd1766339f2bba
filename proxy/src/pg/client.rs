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
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, debug, info, warn};

use super::backend::ConnKey;
use super::errors::{self, INVALID_AUTHORIZATION, INVALID_PASSWORD, PROTOCOL_VIOLATION, error};
use super::login::Login;
use super::relay::Relay;
use super::service::PgService;
use crate::error::SessionError;
use crate::session::ClientInfo;

/// How long a client may take from connecting to finishing authentication.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Startup parameters that are not session settings to replay on a server connection.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

/// Serves one accepted client connection to the end. `permit` is `None` when the pool's
/// `max_clients` is exhausted: the client is told so once it has said hello.
pub async fn serve(
    svc: Arc<PgService>,
    tcp: TcpStream,
    addr: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let _ = tcp.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(512);
    // The login and relay stages run in boxed futures of their own: this one lives as long as
    // the client, so only what they share is kept for an idle client.
    let hello = Box::pin(tokio::time::timeout(
        LOGIN_TIMEOUT,
        read_startup(&svc, Stream::Plain(tcp), &mut buf),
    ))
    .await;
    let (mut stream, params) = match hello {
        Ok(Ok((stream, Some(params)))) => (stream, params),
        Ok(Ok((_, None))) => return, // a cancel request, or the client went away
        Ok(Err(e)) => {
            debug!(error = %errors::chain(&e), "client startup failed");
            return;
        }
        Err(_) => {
            debug!("client sent no startup packet in time");
            return;
        }
    };
    if svc.client_tls.requires_tls() && !stream.is_tls() {
        let msg = format!(
            "sidepool: pool \"{}\" accepts only TLS connections",
            svc.name
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
        return;
    }
    if permit.is_none() {
        let msg = format!(
            "sidepool: too many client connections to pool \"{}\" (max_clients {})",
            svc.name, svc.max_clients
        );
        let hint =
            "raise [pools.limits] max_clients, or use fewer connections per application instance";
        let _ = stream
            .write_all(&error(
                Severity::Fatal,
                errors::TOO_MANY_CONNECTIONS,
                &msg,
                Some(hint),
            ))
            .await;
        warn!(pool = %svc.name, client.addr = %addr, "client rejected: max_clients reached");
        svc.metrics.rejected_max_clients();
        return;
    }
    let _connected = crate::telemetry::Counted::new(&svc.clients);
    let login = Login::new(&svc, addr, &params);
    let Some(login) = login else {
        let _ = stream
            .write_all(&error(
                Severity::Fatal,
                INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
                None,
            ))
            .await;
        return;
    };
    let span = tracing::info_span!("client", pool = %svc.name, client.addr = %addr, user = %login.info.user);
    let result = async {
        match Box::pin(tokio::time::timeout(
            LOGIN_TIMEOUT,
            authenticate(&svc, &mut stream, &mut buf, &login.info.user),
        ))
        .await
        {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
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
                return Err(SessionError::LoginTimeout(LOGIN_TIMEOUT));
            }
        }
        debug!(database = %login.info.database, "client authenticated");
        if login.info.database == crate::console::DATABASE {
            return Box::pin(super::console::run(&svc, stream, buf, login)).await;
        }
        let _registered = svc.sessions.register(&login.info);
        Box::pin(Relay::start(svc.clone(), stream, buf, login)).await
    };
    if let Err(e) = result.instrument(span.clone()).await {
        match e.side() {
            crate::error::Side::Client => {
                debug!(parent: &span, error = %errors::chain(&e), "client session ended")
            }
            _ => info!(parent: &span, error = %errors::chain(&e), "client session failed"),
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
    let known = svc.users.get(user);
    let failed = format!("password authentication failed for user \"{user}\"");
    let reject = |reason: &'static str| {
        warn!(reason, "client authentication failed");
        error(Severity::Fatal, INVALID_PASSWORD, &failed, None)
    };
    let ok = match svc.client_auth {
        ClientAuth::Trust => true,
        ClientAuth::Md5 => {
            let salt = auth::random_md5_salt();
            stream
                .write_all(&be::authentication_md5(salt))
                .await
                .map_err(SessionError::ClientIo)?;
            let Some(msg) = expect_password(stream, buf).await? else {
                return Ok(false);
            };
            let response = frontend::parse_password(&msg).map_err(SessionError::ClientProtocol)?;
            match known {
                Some(u) if auth::md5_verify(user, &u.password, salt, response) => true,
                Some(_) => {
                    let _ = stream.write_all(&reject("wrong password")).await;
                    return Ok(false);
                }
                None => {
                    let _ = stream.write_all(&reject("unknown user")).await;
                    return Ok(false);
                }
            }
        }
        ClientAuth::Password | ClientAuth::Native => {
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
            let (mechanism, data) = frontend::parse_sasl_initial_response(&msg)
                .map_err(SessionError::ClientProtocol)?;
            if mechanism != auth::SCRAM_SHA_256 {
                let text = format!(
                    "sidepool: unsupported SASL mechanism \"{mechanism}\"; use SCRAM-SHA-256"
                );
                let _ = stream
                    .write_all(&error(Severity::Fatal, PROTOCOL_VIOLATION, &text, None))
                    .await;
                return Ok(false);
            }
            let (server, first) = match ScramServer::start(secret, data) {
                Ok(s) => s,
                Err(e) => {
                    let text = format!("sidepool: malformed SCRAM message: {e}");
                    let _ = stream
                        .write_all(&error(Severity::Fatal, PROTOCOL_VIOLATION, &text, None))
                        .await;
                    return Ok(false);
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
                    true
                }
                Err(e) => {
                    let _ = stream
                        .write_all(&reject(if known.is_some() {
                            "wrong password"
                        } else {
                            "unknown user"
                        }))
                        .await;
                    debug!(error = %e, "SCRAM exchange failed");
                    return Ok(false);
                }
            }
        }
    };
    Ok(ok)
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
