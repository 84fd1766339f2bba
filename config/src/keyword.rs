//! The closed vocabularies of the TOML file (`protocol = "postgres"`, `mode = "session"`, ...).

use std::fmt;
use std::str::FromStr;

/// An enum spelled in the TOML file as one of a fixed set of lowercase words.
pub trait Keyword: Sized + Copy + 'static {
    /// Every value, in documentation order.
    const ALL: &'static [Self];
    /// What the value names, for messages (`"protocol"`).
    const WHAT: &'static str;
    /// The TOML spelling.
    fn as_str(self) -> &'static str;
    /// The value spelled `s` exactly (case-sensitive, as in the file).
    fn from_keyword(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

/// `s` was not one of a [`Keyword`] type's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}`; expected one of: {expected}")]
pub struct UnknownKeyword {
    /// What kind of word was expected.
    pub what: &'static str,
    /// The rejected input.
    pub given: String,
    /// The valid spellings, comma-separated.
    pub expected: String,
}

/// The valid spellings of `K`, comma-separated, for messages.
pub(crate) fn spellings<K: Keyword>() -> String {
    K::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The TOML spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl Keyword for $name {
            const ALL: &'static [Self] = &[$(Self::$variant,)+];
            const WHAT: &'static str = $what;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownKeyword;
            fn from_str(s: &str) -> Result<Self, UnknownKeyword> {
                <Self as Keyword>::from_keyword(s).ok_or_else(|| UnknownKeyword {
                    what: $what,
                    given: s.to_owned(),
                    expected: spellings::<Self>(),
                })
            }
        }
    };
}

keyword_enum! {
    /// `[log] level`.
    LogLevel, "log level" {
        /// An operator must act.
        Error = "error",
        /// Degraded service.
        Warn = "warn",
        /// Lifecycle events (the default).
        Info = "info",
        /// Per connection.
        Debug = "debug",
        /// Per message.
        Trace = "trace",
    }
}

keyword_enum! {
    /// `[log] format`.
    LogFormat, "log format" {
        /// Human-readable lines (the default).
        Text = "text",
        /// One JSON object per line.
        Json = "json",
    }
}

keyword_enum! {
    /// `[[pools]] protocol`: the wire protocol spoken on both sides.
    Protocol, "protocol" {
        /// PostgreSQL v3 protocol; default backend port 5432.
        Postgres = "postgres",
        /// MySQL/MariaDB classic protocol; default backend port 3306.
        Mysql = "mysql",
        /// TiDB (MySQL protocol with TiDB behaviour); default backend port 4000.
        Tidb = "tidb",
        /// Dameng DM8, header-aware session passthrough; default backend port 5236.
        Dameng = "dameng",
    }
}

impl Protocol {
    /// The backend port used when `primary`/`replicas` omit one.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Postgres => 5432,
            Self::Mysql => 3306,
            Self::Tidb => 4000,
            Self::Dameng => 5236,
        }
    }
}

keyword_enum! {
    /// `[[pools]] mode`: how long a client holds a server connection (docs/design.md §4).
    PoolMode, "pool mode" {
        /// From a transaction's first message until the server reports idle.
        Transaction = "transaction",
        /// For the client's whole session; reset before reuse.
        Session = "session",
    }
}

keyword_enum! {
    /// `[[pools]] client_auth`: how sidepool authenticates applications.
    ClientAuth, "client_auth" {
        /// SCRAM-SHA-256 on PostgreSQL, caching_sha2_password on MySQL/TiDB, the database's own
        /// password login on Dameng.
        Password = "password",
        /// PostgreSQL md5 (postgres pools only).
        Md5 = "md5",
        /// mysql_native_password (mysql and tidb pools only).
        Native = "native",
        /// No password check; users may omit passwords.
        Trust = "trust",
    }
}

impl ClientAuth {
    /// Whether this method exists in `protocol`'s handshake.
    pub fn supported_by(self, protocol: Protocol) -> bool {
        match self {
            Self::Password | Self::Trust => true,
            Self::Md5 => protocol == Protocol::Postgres,
            Self::Native => matches!(protocol, Protocol::Mysql | Protocol::Tidb),
        }
    }
}

keyword_enum! {
    /// `[pools.leaks] action`: what happens to a suspected leak (docs/design.md §5).
    LeakAction, "leak action" {
        /// Log, count and show it (the default).
        Warn = "warn",
        /// Also end the client's transaction after `terminate_after`.
        Terminate = "terminate",
    }
}

keyword_enum! {
    /// `[pools.tls] client_mode`: TLS between applications and sidepool.
    ClientTlsMode, "client TLS mode" {
        /// Refuse TLS requests from clients (the default).
        Disable = "disable",
        /// Accept TLS and plaintext clients.
        Allow = "allow",
        /// Refuse plaintext clients.
        Require = "require",
    }
}

keyword_enum! {
    /// `[pools.tls] server_mode`: TLS between sidepool and the database (libpq's sslmode names).
    ServerTlsMode, "server TLS mode" {
        /// Never use TLS.
        Disable = "disable",
        /// Use TLS if the server offers it, without verifying it (the default).
        Prefer = "prefer",
        /// Require TLS, without verifying the certificate.
        Require = "require",
        /// Require TLS and a certificate signed by `server_ca`.
        VerifyCa = "verify-ca",
        /// As `verify-ca`, and the certificate must name the backend host.
        VerifyFull = "verify-full",
    }
}

/// TiDB's documented values of `tidb_replica_read`, which `routing.tidb_replica_read` must be.
pub(crate) const TIDB_REPLICA_READ: &[&str] = &[
    "leader",
    "follower",
    "leader-and-follower",
    "prefer-leader",
    "closest-replicas",
    "closest-adaptive",
    "learner",
];
