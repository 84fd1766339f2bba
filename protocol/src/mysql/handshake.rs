//! Connection phase: the server's initial handshake (protocol version 10), the client's
//! HandshakeResponse41 and SSLRequest. Parsing and building of the handshake packet goes
//! through `mysql_common`; the response sidepool sends to servers is built here so that every
//! field (collation, capabilities) is exactly what the pool negotiated.

use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};

use super::{CapabilityFlags, StatusFlags, put_lenenc_int};
use crate::error::{ProtocolError, Result};

/// Length of the auth nonce sidepool sends and expects (MySQL's SCRAMBLE_LENGTH).
pub const NONCE_LEN: usize = 20;
/// The `max_packet_size` sidepool announces to servers (1 GiB, the protocol's maximum).
pub const MAX_PACKET_SIZE: u32 = 1 << 30;

fn malformed(what: &'static str, why: &'static str) -> ProtocolError {
    ProtocolError::Malformed { what, why }
}

/// The server's initial handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Server version string (`10.11.6-MariaDB-0+deb12u1`, `8.0.11-TiDB-v7.5.0`).
    pub server_version: String,
    /// The server's thread id for this connection.
    pub connection_id: u32,
    /// Capabilities the server offers.
    pub capabilities: CapabilityFlags,
    /// Default collation id.
    pub collation: u8,
    /// Status flags.
    pub status: StatusFlags,
    /// The auth nonce (20 bytes).
    pub nonce: Vec<u8>,
    /// The auth plugin the nonce is for.
    pub auth_plugin: String,
}

impl Greeting {
    /// TiDB announces itself in its version string (`…-TiDB-v…`).
    pub fn is_tidb(&self) -> bool {
        self.server_version.contains("TiDB")
    }

    /// MariaDB announces itself in its version string.
    pub fn is_mariadb(&self) -> bool {
        self.server_version.contains("MariaDB")
    }
}

/// Decodes the initial handshake packet.
///
/// # Errors
/// Not protocol version 10, or a truncated packet.
pub fn parse_greeting(payload: &[u8]) -> Result<Greeting> {
    if payload.first() != Some(&10) {
        return Err(ProtocolError::Malformed {
            what: "handshake",
            why: "protocol version is not 10",
        });
    }
    // mysql_common computes `len as i8 - 8` from the auth-plugin-data length byte, which
    // overflows (a panic with overflow checks) for 0x80..=0x87; no server sends a length above
    // 21, so a byte with the top bit set is refused here. It sits 20 bytes after the version's
    // NUL (connection id 4, scramble 8, filler 1, capabilities 2, collation 1, status 2,
    // capabilities 2). Found by the mysql_handshake fuzz target.
    let data_len_at = payload
        .iter()
        .skip(1)
        .position(|&b| b == 0)
        .map(|nul| 1 + nul + 1 + 20);
    if data_len_at
        .and_then(|at| payload.get(at))
        .is_some_and(|&len| len & 0x80 != 0)
    {
        return Err(malformed(
            "handshake",
            "auth plugin data length out of range",
        ));
    }
    let p = HandshakePacket::deserialize((), &mut ParseBuf(payload))
        .map_err(|_| malformed("handshake", "truncated"))?;
    Ok(Greeting {
        server_version: p.server_version_str().into_owned(),
        connection_id: p.connection_id(),
        capabilities: p.capabilities(),
        collation: p.default_collation(),
        status: p.status_flags(),
        nonce: p.nonce(),
        auth_plugin: p
            .auth_plugin_name_str()
            .map(|s| s.into_owned())
            .unwrap_or_default(),
    })
}

/// Builds an initial handshake payload (the nonce must be [`NONCE_LEN`] bytes without NUL).
pub fn greeting(g: &Greeting) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    for (d, s) in nonce.iter_mut().zip(&g.nonce) {
        *d = *s;
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&nonce[..8]);
    let mut second = nonce[8..].to_vec();
    second.push(0);
    let caps = g.capabilities
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH;
    let packet = HandshakePacket::new(
        10,
        g.server_version.as_bytes(),
        g.connection_id,
        first,
        Some(second),
        caps,
        g.collation,
        g.status,
        Some(g.auth_plugin.as_bytes()),
    );
    let mut out = Vec::with_capacity(128);
    packet.serialize(&mut out);
    out
}

/// A client's HandshakeResponse41.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandshakeResponse41 {
    /// Capabilities the client asks for.
    pub capabilities: CapabilityFlags,
    /// Largest packet the client accepts.
    pub max_packet_size: u32,
    /// Collation id for the connection.
    pub collation: u8,
    /// User name.
    pub user: String,
    /// Auth plugin response data.
    pub auth_response: Vec<u8>,
    /// Initial database (CLIENT_CONNECT_WITH_DB).
    pub database: Option<String>,
    /// The auth plugin the response is for (CLIENT_PLUGIN_AUTH).
    pub auth_plugin: Option<String>,
    /// Connection attributes (CLIENT_CONNECT_ATTRS), e.g. `program_name`.
    pub attributes: Vec<(String, String)>,
}

impl HandshakeResponse41 {
    /// The value of a connection attribute.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Bytes of an SSLRequest (the first 32 bytes of a HandshakeResponse41).
pub const SSL_REQUEST_LEN: usize = 32;

/// The capabilities of an SSLRequest: a 32-byte packet with CLIENT_SSL set. `None` when
/// `payload` is not one.
pub fn parse_ssl_request(payload: &[u8]) -> Option<CapabilityFlags> {
    let &[a, b, c, d, ..] = payload else {
        return None;
    };
    let caps = CapabilityFlags::from_bits_retain(u32::from_le_bytes([a, b, c, d]));
    (payload.len() == SSL_REQUEST_LEN && caps.contains(CapabilityFlags::CLIENT_SSL)).then_some(caps)
}

/// Builds an SSLRequest payload.
pub fn ssl_request(capabilities: CapabilityFlags, collation: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(SSL_REQUEST_LEN);
    out.extend_from_slice(
        &(capabilities | CapabilityFlags::CLIENT_SSL)
            .bits()
            .to_le_bytes(),
    );
    out.extend_from_slice(&MAX_PACKET_SIZE.to_le_bytes());
    out.push(collation);
    out.extend_from_slice(&[0; 23]);
    out
}

/// Decodes a HandshakeResponse41.
///
/// # Errors
/// A client without CLIENT_PROTOCOL_41 (4.0-era clients), or a truncated packet.
pub fn parse_handshake_response(payload: &[u8]) -> Result<HandshakeResponse41> {
    let &[a, b, c, d, ..] = payload else {
        return Err(malformed("HandshakeResponse41", "truncated"));
    };
    let caps = CapabilityFlags::from_bits_retain(u32::from_le_bytes([a, b, c, d]));
    if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(malformed(
            "HandshakeResponse41",
            "client does not speak protocol 41",
        ));
    }
    let r = HandshakeResponse::deserialize((), &mut ParseBuf(payload))
        .map_err(|_| malformed("HandshakeResponse41", "truncated"))?;
    let mut attributes: Vec<(String, String)> = r
        .connect_attributes()
        .unwrap_or_default()
        .into_iter()
        .collect();
    attributes.sort();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(HandshakeResponse41 {
        capabilities: caps,
        max_packet_size: payload
            .get(4..8)
            .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])),
        collation: r.collation(),
        user: text(r.user()),
        auth_response: r.scramble_buf().to_vec(),
        database: r.db_name().map(text).filter(|d| !d.is_empty()),
        auth_plugin: r.auth_plugin().map(|p| text(p.as_bytes())),
        attributes,
    })
}

/// Builds a HandshakeResponse41 payload. CLIENT_CONNECT_WITH_DB, CLIENT_PLUGIN_AUTH and
/// CLIENT_CONNECT_ATTRS are set or cleared to match the fields given; CLIENT_SECURE_CONNECTION is
/// always set, since the auth data is written length-prefixed (without it a reader expects a
/// NUL-terminated string, which a scramble may not be).
pub fn handshake_response(r: &HandshakeResponse41) -> Vec<u8> {
    let mut caps = r.capabilities
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION;
    caps.set(
        CapabilityFlags::CLIENT_CONNECT_WITH_DB,
        r.database.is_some(),
    );
    caps.set(CapabilityFlags::CLIENT_PLUGIN_AUTH, r.auth_plugin.is_some());
    caps.set(
        CapabilityFlags::CLIENT_CONNECT_ATTRS,
        !r.attributes.is_empty(),
    );
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&caps.bits().to_le_bytes());
    out.extend_from_slice(&r.max_packet_size.to_le_bytes());
    out.push(r.collation);
    out.extend_from_slice(&[0; 23]);
    out.extend_from_slice(r.user.as_bytes());
    out.push(0);
    let auth = if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
        put_lenenc_int(&mut out, r.auth_response.len() as u64);
        &r.auth_response[..]
    } else {
        // One length byte: auth data never exceeds 255 bytes without the lenenc capability.
        let auth = &r.auth_response[..r.auth_response.len().min(255)];
        out.push(auth.len() as u8);
        auth
    };
    out.extend_from_slice(auth);
    if let Some(db) = &r.database {
        out.extend_from_slice(db.as_bytes());
        out.push(0);
    }
    if let Some(plugin) = &r.auth_plugin {
        out.extend_from_slice(plugin.as_bytes());
        out.push(0);
    }
    if !r.attributes.is_empty() {
        let mut attrs = Vec::new();
        for (k, v) in &r.attributes {
            put_lenenc_int(&mut attrs, k.len() as u64);
            attrs.extend_from_slice(k.as_bytes());
            put_lenenc_int(&mut attrs, v.len() as u64);
            attrs.extend_from_slice(v.as_bytes());
        }
        put_lenenc_int(&mut out, attrs.len() as u64);
        out.extend_from_slice(&attrs);
    }
    out
}

/// A client's COM_CHANGE_USER: log in again as `user` on the same connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeUser {
    /// User name.
    pub user: String,
    /// Auth plugin response data, computed with the last nonce the server sent.
    pub auth_response: Vec<u8>,
    /// Schema to use; `None` when empty.
    pub database: Option<String>,
    /// Collation id, when the client sent one.
    pub collation: Option<u16>,
    /// The auth plugin the response is for, when the client named one.
    pub auth_plugin: Option<String>,
    /// Connection attributes, e.g. `program_name`.
    pub attributes: Vec<(String, String)>,
}

impl ChangeUser {
    /// The value of a connection attribute.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a NUL-terminated string off the front of `buf`.
fn nul_str(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..end], &buf[end + 1..]))
}

/// Decodes COM_CHANGE_USER (command byte included) as sent on a connection that negotiated
/// `capabilities`. Only protocol-41 clients with CLIENT_SECURE_CONNECTION (a one-byte
/// auth-data length) are accepted, as MySQL 8 and MariaDB do. Every length is checked
/// against the packet before use.
///
/// # Errors
/// A wrong command byte, a missing terminator or a field that runs past the end.
pub fn parse_change_user(payload: &[u8], capabilities: CapabilityFlags) -> Result<ChangeUser> {
    let bad = |why| malformed("COM_CHANGE_USER", why);
    let Some((&0x11, rest)) = payload.split_first() else {
        return Err(bad("not COM_CHANGE_USER"));
    };
    if !capabilities.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        return Err(bad("client without CLIENT_SECURE_CONNECTION"));
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (user, rest) = nul_str(rest).ok_or_else(|| bad("user name not terminated"))?;
    let (&len, rest) = rest.split_first().ok_or_else(|| bad("auth data missing"))?;
    let auth_response = rest
        .get(..usize::from(len))
        .ok_or_else(|| bad("auth data cut short"))?;
    let rest = &rest[usize::from(len)..];
    // Some clients leave the schema's terminator out when nothing follows it.
    let (database, mut rest) = nul_str(rest).unwrap_or((rest, &[]));
    let mut out = ChangeUser {
        user: text(user),
        auth_response: auth_response.to_vec(),
        database: Some(text(database)).filter(|d| !d.is_empty()),
        ..ChangeUser::default()
    };
    if rest.is_empty() {
        return Ok(out);
    }
    let &[c0, c1, ref after @ ..] = rest else {
        return Err(bad("collation cut short"));
    };
    out.collation = Some(u16::from_le_bytes([c0, c1]));
    rest = after;
    if capabilities.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) && !rest.is_empty() {
        let (plugin, after) = nul_str(rest).ok_or_else(|| bad("plugin name not terminated"))?;
        out.auth_plugin = Some(text(plugin)).filter(|p| !p.is_empty());
        rest = after;
    }
    if capabilities.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS) && !rest.is_empty() {
        let (total, n) = super::lenenc_int(rest).ok_or_else(|| bad("attributes length"))?;
        let mut attrs = usize::try_from(total)
            .ok()
            .and_then(|t| rest.get(n..n.checked_add(t)?))
            .ok_or_else(|| bad("attributes cut short"))?;
        while !attrs.is_empty() {
            let (k, a) = super::lenenc_str(attrs).ok_or_else(|| bad("attribute name"))?;
            let (v, b) = attrs
                .get(a..)
                .and_then(super::lenenc_str)
                .ok_or_else(|| bad("attribute value"))?;
            out.attributes
                .push((text(k.unwrap_or_default()), text(v.unwrap_or_default())));
            attrs = attrs.get(a + b..).unwrap_or_default();
        }
        out.attributes.sort();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_greeting() -> Greeting {
        Greeting {
            server_version: "10.11.6-MariaDB".into(),
            connection_id: 42,
            capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
                | CapabilityFlags::CLIENT_SECURE_CONNECTION
                | CapabilityFlags::CLIENT_PLUGIN_AUTH
                | CapabilityFlags::CLIENT_DEPRECATE_EOF,
            collation: 45,
            status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            nonce: b"abcdefghijklmnopqrst".to_vec(),
            auth_plugin: "caching_sha2_password".into(),
        }
    }

    #[test]
    fn greeting_round_trips() {
        let g = sample_greeting();
        let bytes = greeting(&g);
        assert_eq!(parse_greeting(&bytes), Ok(g.clone()));
        assert!(!g.is_tidb() && g.is_mariadb());
        let tidb = Greeting {
            server_version: "8.0.11-TiDB-v7.5.0".into(),
            ..g
        };
        assert!(tidb.is_tidb());
    }

    #[test]
    fn handshake_response_round_trips() {
        let r = HandshakeResponse41 {
            capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
                | CapabilityFlags::CLIENT_SECURE_CONNECTION
                | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
                | CapabilityFlags::CLIENT_DEPRECATE_EOF,
            max_packet_size: MAX_PACKET_SIZE,
            collation: 45,
            user: "app".into(),
            auth_response: vec![1; 20],
            database: Some("app".into()),
            auth_plugin: Some("mysql_native_password".into()),
            attributes: vec![
                ("_client_name".into(), "x".into()),
                ("program_name".into(), "sidepool".into()),
            ],
        };
        let bytes = handshake_response(&r);
        let back = parse_handshake_response(&bytes).unwrap();
        assert_eq!(back.user, "app");
        assert_eq!(back.auth_response, vec![1; 20]);
        assert_eq!(back.database.as_deref(), Some("app"));
        assert_eq!(back.auth_plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(back.attribute("program_name"), Some("sidepool"));
        assert!(
            back.capabilities
                .contains(CapabilityFlags::CLIENT_CONNECT_WITH_DB)
        );
        assert_eq!(back.collation, 45);
    }

    #[test]
    fn ssl_request_is_recognised_by_length_and_flag() {
        let req = ssl_request(CapabilityFlags::CLIENT_PROTOCOL_41, 45);
        assert!(parse_ssl_request(&req).is_some());
        assert!(parse_ssl_request(&req[..31]).is_none());
    }

    #[test]
    fn truncated_and_hostile_packets_are_errors() {
        let g = greeting(&sample_greeting());
        for n in 0..g.len() {
            let _ = parse_greeting(&g[..n]);
        }
        let r = handshake_response(&HandshakeResponse41 {
            capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
                | CapabilityFlags::CLIENT_SECURE_CONNECTION,
            user: "u".into(),
            auth_response: vec![2; 20],
            attributes: vec![("a".into(), "b".into())],
            ..Default::default()
        });
        for n in 0..r.len() {
            let _ = parse_handshake_response(&r[..n]);
        }
        assert!(
            parse_handshake_response(&[0, 0, 0, 0]).is_err(),
            "no protocol 41"
        );
        let mut junk = r.clone();
        for b in junk.iter_mut().skip(32) {
            *b = 0xFE;
        }
        let _ = parse_handshake_response(&junk);
    }

    fn caps_for_change_user() -> CapabilityFlags {
        CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_CONNECT_ATTRS
    }

    #[test]
    fn change_user_parses_what_mysql_common_writes() {
        use mysql_common::packets::{ComChangeUser, ComChangeUserMoreData};
        use mysql_common::proto::MySerialize;
        use std::collections::HashMap;
        let attrs = HashMap::from([("program_name".to_owned(), "app-2".to_owned())]);
        let packet = ComChangeUser::new()
            .with_user(Some(&b"other"[..]))
            .with_database(Some(&b"app"[..]))
            .with_auth_plugin_data(Some(&[7u8; 32][..]))
            .with_more_data(Some(
                ComChangeUserMoreData::new(45)
                    .with_auth_plugin(Some(mysql_common::packets::AuthPlugin::CachingSha2Password))
                    .with_connect_attributes(Some(attrs)),
            ));
        let mut bytes = Vec::new();
        packet.serialize(&mut bytes);
        let c = parse_change_user(&bytes, caps_for_change_user()).unwrap();
        assert_eq!(c.user, "other");
        assert_eq!(c.auth_response, vec![7u8; 32]);
        assert_eq!(c.database.as_deref(), Some("app"));
        assert_eq!(c.collation, Some(45));
        assert_eq!(c.auth_plugin.as_deref(), Some("caching_sha2_password"));
        assert_eq!(c.attribute("program_name"), Some("app-2"));
    }

    #[test]
    fn change_user_without_more_data_and_hostile_bytes() {
        // 0x11, "u\0", 0-byte auth, "" schema.
        let minimal = [0x11, b'u', 0, 0, 0];
        let c = parse_change_user(&minimal, caps_for_change_user()).unwrap();
        assert_eq!(
            (c.user.as_str(), c.database, c.collation),
            ("u", None, None)
        );
        // An auth length past the end, a missing user terminator, a wrong command byte.
        assert!(parse_change_user(&[0x11, b'u', 0, 200, 1, 2], caps_for_change_user()).is_err());
        assert!(parse_change_user(&[0x11, b'u'], caps_for_change_user()).is_err());
        assert!(parse_change_user(&[0x03, b'u', 0, 0, 0], caps_for_change_user()).is_err());
        // An attribute block that claims more than the packet holds.
        let mut big = vec![0x11, b'u', 0, 0, 0, 45, 0];
        big.extend_from_slice(b"caching_sha2_password\0");
        big.extend_from_slice(&[0xFC, 0xFF, 0xFF, 3, b'a']);
        assert!(parse_change_user(&big, caps_for_change_user()).is_err());
        // Every prefix of a full packet parses or fails without panicking.
        let mut full = big[..big.len() - 5].to_vec();
        full.extend_from_slice(&[4, 1, b'k', 1, b'v']);
        assert!(parse_change_user(&full, caps_for_change_user()).is_ok());
        for n in 0..full.len() {
            let _ = parse_change_user(&full[..n], caps_for_change_user());
        }
    }

    #[test]
    fn a_response_without_secure_connection_reencodes_to_one_that_decodes() {
        // Found by the mysql_handshake fuzz target: CLIENT_PROTOCOL_41 without
        // CLIENT_SECURE_CONNECTION, so the client's auth data was NUL-terminated; the encoder
        // wrote it length-prefixed without setting the flag that says so.
        let mut payload = (CapabilityFlags::CLIENT_PROTOCOL_41.bits())
            .to_le_bytes()
            .to_vec();
        payload.extend_from_slice(&16_777_216u32.to_le_bytes());
        payload.push(45);
        payload.extend_from_slice(&[0; 23]);
        payload.extend_from_slice(b"app\0rZ\0");
        let r = parse_handshake_response(&payload).expect("decodes");
        assert_eq!(r.user, "app");
        let again = parse_handshake_response(&handshake_response(&r)).expect("re-encoded");
        assert_eq!(again.user, r.user);
        assert_eq!(again.auth_response, r.auth_response);
    }

    #[test]
    fn a_greeting_with_a_negative_auth_data_length_is_refused_not_a_panic() {
        // Found by the mysql_handshake fuzz target: mysql_common's `len as i8 - 8` overflowed.
        let mut g = vec![10];
        g.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0");
        g.extend_from_slice(&7u32.to_le_bytes()); // connection id
        g.extend_from_slice(b"abcdefgh\0"); // scramble part 1, filler
        g.extend_from_slice(&0xf7ffu16.to_le_bytes()); // capabilities, lower
        g.push(45); // collation
        g.extend_from_slice(&2u16.to_le_bytes()); // status
        g.extend_from_slice(&0x81ffu16.to_le_bytes()); // capabilities, upper
        let ok_len = g.len();
        g.push(0x80); // auth plugin data length, negative as i8
        g.extend_from_slice(&[0; 10]);
        g.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
        assert!(parse_greeting(&g).is_err());
        g[ok_len] = 21;
        assert!(
            parse_greeting(&g).is_ok(),
            "the same greeting with length 21 decodes"
        );
    }
}
