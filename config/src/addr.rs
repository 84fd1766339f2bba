//! Backend addresses: `host:port`, where host is a DNS name, an IPv4 address or `[IPv6]`.

use std::fmt;
use std::net::Ipv6Addr;

/// A database server to connect to. Parsed from `"host:port"`, `"host"` (the protocol's default
/// port), `"[::1]:5432"` or `"[::1]"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAddr {
    /// DNS name or IP address; IPv6 addresses are stored without brackets (`::1`), which is what
    /// `(host, port)` socket-address lookups expect.
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
}

impl BackendAddr {
    /// Parses `text`, using `default_port` when it names no port.
    ///
    /// # Errors
    /// A message (without key or position) saying what is wrong.
    pub fn parse(text: &str, default_port: u16) -> Result<Self, String> {
        let (host, port) = split_host_port(text)?;
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(format!("invalid port `{p}` in {text:?}; expected 1-65535"));
                }
                Ok(p) => p,
            },
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("missing `]` in {text:?}"));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("`{host}` in {text:?} is not an IPv6 address"));
        }
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("expected `:port` after `]` in {text:?}")),
            },
        };
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Err(format!("IPv6 addresses need brackets: \"[{text}]:port\""));
    }
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    if !valid_host(host) {
        return Err(format!(
            "invalid host in {text:?}; expected \"host:port\" with a DNS name, IPv4 or [IPv6] host"
        ));
    }
    Ok((host, port))
}

/// A DNS name (RFC 1123 labels, underscores tolerated as Kubernetes uses them) or IPv4 literal.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl fmt::Display for BackendAddr {
    /// `host:port`, with IPv6 hosts in brackets: the form [`BackendAddr::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(host: &str, port: u16) -> BackendAddr {
        BackendAddr {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn parse_accepts_names_ipv4_and_bracketed_ipv6_with_and_without_port() {
        assert_eq!(BackendAddr::parse("db:6000", 1), Ok(addr("db", 6000)));
        assert_eq!(
            BackendAddr::parse("db.ns.svc", 5432),
            Ok(addr("db.ns.svc", 5432))
        );
        assert_eq!(
            BackendAddr::parse("10.0.0.1:3306", 1),
            Ok(addr("10.0.0.1", 3306))
        );
        assert_eq!(BackendAddr::parse("[::1]:5433", 1), Ok(addr("::1", 5433)));
        assert_eq!(
            BackendAddr::parse("[fe80::1]", 5236),
            Ok(addr("fe80::1", 5236))
        );
    }

    #[test]
    fn parse_rejects_bad_hosts_and_ports() {
        for text in [
            "", ":5432", "db:", "db:0", "db:65536", "db:x", "::1", "[::1", "[db]:1", "[::1]x",
            "a b:1", "-db:1", "db..x:1", "db:1:2",
        ] {
            assert!(BackendAddr::parse(text, 5432).is_err(), "{text:?} accepted");
        }
        assert!(
            BackendAddr::parse("::1", 5432)
                .unwrap_err()
                .contains("[::1]:port")
        );
    }

    #[test]
    fn display_brackets_ipv6_and_round_trips() {
        for text in ["db:5432", "10.0.0.1:3306", "[::1]:5433"] {
            let parsed = BackendAddr::parse(text, 1).unwrap();
            assert_eq!(parsed.to_string(), text);
        }
    }
}
