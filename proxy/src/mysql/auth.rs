//! Authentication of a MySQL client against `[[pools.users]]`, shared by
//! [`client`](super::client) at login and the [`relay`](super::relay) for COM_CHANGE_USER, and
//! the packet helpers both use before the relay takes over.

use bytes::BytesMut;
use sidepool_config::ClientAuth;
use sidepool_protocol::mysql::handshake::HandshakeResponse41;
use sidepool_protocol::mysql::{auth, packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::service::MyService;
use crate::error::SessionError;
use crate::tls::Stream;

/// Cap on a login packet.
pub(super) const MAX_LOGIN_PACKET: usize = 64 * 1024;

pub(super) async fn read_packet(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Option<(u8, Vec<u8>)>, SessionError> {
    loop {
        if let Some(l) =
            packet::read_logical(buf, MAX_LOGIN_PACKET).map_err(SessionError::ClientProtocol)?
        {
            let _ = buf.split_to(l.consumed);
            return Ok(Some((l.last_seq, l.payload)));
        }
        if stream.read_buf(buf).await.map_err(SessionError::ClientIo)? == 0 {
            return Ok(None);
        }
    }
}

pub(super) async fn send(stream: &mut Stream, bytes: &[u8]) -> Result<(), SessionError> {
    stream
        .write_all(bytes)
        .await
        .map_err(SessionError::ClientIo)
}

/// Checks the client's scramble, switching it to sidepool's plugin first when it answered
/// for another (`nonce` is then the new one). Unknown users go through the same exchange and
/// fail the same way. Used at login and for COM_CHANGE_USER.
pub(super) async fn authenticate(
    svc: &MyService,
    stream: &mut Stream,
    buf: &mut BytesMut,
    hello: &HandshakeResponse41,
    plugin: &str,
    nonce: &mut Vec<u8>,
    next: &mut u8,
) -> Result<bool, SessionError> {
    if svc.client_auth == ClientAuth::Trust {
        return Ok(true);
    }
    let mut response = hello.auth_response.clone();
    if hello.auth_plugin.as_deref().unwrap_or(auth::NATIVE) != plugin {
        *nonce = auth::new_nonce().to_vec();
        send(
            stream,
            &packet::encode(*next, &auth::auth_switch_request(plugin, nonce)),
        )
        .await?;
        let Some((seq, payload)) = read_packet(stream, buf).await? else {
            return Ok(false);
        };
        response = payload;
        *next = seq.wrapping_add(1);
    }
    let password = svc.users.get(&hello.user);
    let ok = password.is_some_and(|p| auth::verify(plugin, nonce, p.as_bytes(), &response));
    if !ok && plugin == auth::CACHING_SHA2 && stream.is_tls() {
        // caching_sha2's full authentication, as a server with an empty cache does it: over
        // TLS the client sends its password in clear. (Without TLS sidepool offers no RSA key
        // exchange: it knows every password, so a scramble that does not match is a wrong
        // password and is refused at once.) Unknown users take the same path.
        send(
            stream,
            &packet::encode(
                *next,
                &auth::auth_more_data(&[auth::PERFORM_FULL_AUTHENTICATION]),
            ),
        )
        .await?;
        let Some((seq, clear)) = read_packet(stream, buf).await? else {
            return Ok(false);
        };
        *next = seq.wrapping_add(1);
        let clear = clear.strip_suffix(&[0]).unwrap_or(&clear);
        return Ok(password.is_some_and(|p| auth::verify_cleartext(p.as_bytes(), clear)));
    }
    if ok && plugin == auth::CACHING_SHA2 {
        // The scramble matched: caching_sha2's fast path, no full authentication needed.
        send(
            stream,
            &packet::encode(*next, &auth::auth_more_data(&[auth::FAST_AUTH_SUCCESS])),
        )
        .await?;
        *next = next.wrapping_add(1);
    }
    Ok(ok)
}
