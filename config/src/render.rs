//! The effective configuration as TOML: what `sidepool check` prints.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::duration::format_duration;
use crate::secret::is_pure_reference;
use crate::{Config, PoolConfig, SecretSource, User};

/// How [`Config::render_toml`] writes passwords. Neither form ever prints a secret value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretRendering {
    /// `password = "<redacted>"`, with a comment naming the variable or file it came from.
    Redacted,
    /// How the secret was supplied, so the output re-parses to the same secrets given the same
    /// environment and files: `password = "${APP_PASSWORD}"` or `password_file = "..."`.
    /// Passwords written inline (or templates with literal text) are still `"<redacted>"`.
    Sources,
}

const REDACTED: &str = "<redacted>";

impl Config {
    /// Every key with its effective value (defaults filled in), secrets as `"<redacted>"`,
    /// durations as `"30m"`/`"5s"`/`"1h30m"`. Re-parses to an equal `Config` except for
    /// passwords, which become the literal `<redacted>`.
    pub fn to_effective_toml(&self) -> String {
        self.render_toml(SecretRendering::Redacted)
    }

    /// As [`Config::to_effective_toml`], with passwords written as `secrets` says.
    pub fn render_toml(&self, secrets: SecretRendering) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the `let _` keeps clippy and the reader honest.
        let _ = self.write_toml(&mut out, secrets);
        out
    }

    fn write_toml(&self, out: &mut String, secrets: SecretRendering) -> std::fmt::Result {
        writeln!(
            out,
            "# sidepool effective configuration (defaults filled in)"
        )?;
        if let Some(source) = &self.source {
            writeln!(out, "# from {}", source.display())?;
        }
        writeln!(
            out,
            "\n[admin]\nlisten = {}",
            quote(&self.admin.listen.to_string())
        )?;
        writeln!(out, "\n[log]\nlevel = {}", quote(self.log.level.as_str()))?;
        writeln!(out, "format = {}", quote(self.log.format.as_str()))?;
        writeln!(
            out,
            "\n[shutdown]\ntimeout = {}",
            duration(self.shutdown.timeout)
        )?;
        writeln!(out, "\n[runtime]\nworkers = {}", self.runtime.workers)?;
        for pool in &self.pools {
            write_pool(out, pool, secrets)?;
        }
        Ok(())
    }
}

fn write_pool(out: &mut String, p: &PoolConfig, secrets: SecretRendering) -> std::fmt::Result {
    writeln!(out, "\n[[pools]]")?;
    writeln!(out, "name = {}", quote(&p.name))?;
    writeln!(out, "protocol = {}", quote(p.protocol.as_str()))?;
    writeln!(out, "listen = {}", quote(&p.listen.to_string()))?;
    writeln!(out, "mode = {}", quote(p.mode.as_str()))?;
    writeln!(out, "primary = {}", quote(&p.primary.to_string()))?;
    let replicas: Vec<String> = p.replicas.iter().map(|r| quote(&r.to_string())).collect();
    writeln!(out, "replicas = [{}]", replicas.join(", "))?;
    writeln!(out, "client_auth = {}", quote(p.client_auth.as_str()))?;
    if let Some(port) = p.tidb_status_port {
        writeln!(out, "tidb_status_port = {port}")?;
    }

    let l = &p.limits;
    writeln!(out, "\n[pools.limits]")?;
    writeln!(
        out,
        "max_open = {}\nmax_idle = {}\nmin_idle = {}",
        l.max_open, l.max_idle, l.min_idle
    )?;
    writeln!(
        out,
        "max_lifetime = {}",
        duration(l.max_lifetime.unwrap_or_default())
    )?;
    writeln!(
        out,
        "max_idle_time = {}",
        duration(l.max_idle_time.unwrap_or_default())
    )?;
    writeln!(out, "wait_timeout = {}", duration(l.wait_timeout))?;
    writeln!(
        out,
        "max_waiting = {}\nmax_clients = {}",
        l.max_waiting, l.max_clients
    )?;
    writeln!(out, "connect_timeout = {}", duration(l.connect_timeout))?;
    writeln!(
        out,
        "prepared_statements_per_connection = {}",
        l.prepared_statements_per_connection
    )?;
    writeln!(
        out,
        "query_timeout = {}",
        duration(l.query_timeout.unwrap_or_default())
    )?;

    writeln!(out, "\n[pools.leaks]")?;
    writeln!(out, "threshold = {}", duration(p.leaks.threshold))?;
    writeln!(out, "action = {}", quote(p.leaks.action.as_str()))?;
    writeln!(
        out,
        "terminate_after = {}",
        duration(p.leaks.terminate_after)
    )?;

    let r = &p.routing;
    writeln!(out, "\n[pools.routing]\nsplit = {}", r.split)?;
    writeln!(out, "max_replica_lag = {}", duration(r.max_replica_lag))?;
    writeln!(out, "read_your_writes = {}", duration(r.read_your_writes))?;
    let functions: Vec<String> = r.write_functions.iter().map(|f| quote(f)).collect();
    writeln!(out, "write_functions = [{}]", functions.join(", "))?;
    writeln!(out, "tidb_replica_read = {}", quote(&r.tidb_replica_read))?;
    writeln!(
        out,
        "tidb_read_staleness = {}",
        duration(r.tidb_read_staleness)
    )?;

    writeln!(out, "\n[pools.tcp]")?;
    for (side, o) in [("server", &p.tcp.server), ("client", &p.tcp.client)] {
        let idle = duration(o.keepalive_idle.unwrap_or_default());
        writeln!(out, "{side}_keepalive_idle = {idle}")?;
        let interval = duration(o.keepalive_interval);
        writeln!(out, "{side}_keepalive_interval = {interval}")?;
        writeln!(out, "{side}_keepalive_count = {}", o.keepalive_count)?;
        let user = duration(o.user_timeout.unwrap_or_default());
        writeln!(out, "{side}_user_timeout = {user}")?;
    }

    if let Some(f) = &p.fleet {
        writeln!(out, "\n[pools.fleet]")?;
        writeln!(out, "max_open_total = {}", f.max_open_total)?;
        writeln!(out, "min_share = {}", f.min_share)?;
        writeln!(out, "key = {}", quote(&f.key))?;
    }

    if let Some(t) = &p.tls {
        writeln!(out, "\n[pools.tls]")?;
        for (key, path) in [
            ("client_cert", &t.client_cert),
            ("client_key", &t.client_key),
        ] {
            if let Some(path) = path {
                writeln!(out, "{key} = {}", quote_path(path))?;
            }
        }
        writeln!(out, "client_mode = {}", quote(t.client_mode.as_str()))?;
        writeln!(out, "server_mode = {}", quote(t.server_mode.as_str()))?;
        if let Some(path) = &t.server_ca {
            writeln!(out, "server_ca = {}", quote_path(path))?;
        }
    }
    for user in &p.users {
        write_user(out, user, secrets)?;
    }
    Ok(())
}

fn write_user(out: &mut String, user: &User, secrets: SecretRendering) -> std::fmt::Result {
    writeln!(out, "\n[[pools.users]]\nname = {}", quote(&user.name))?;
    // An empty secret is a `trust` user without a password; a written one is never empty.
    if user.password.expose().is_empty() {
        return Ok(());
    }
    let redacted = quote(REDACTED);
    match (secrets, user.password.source()) {
        (SecretRendering::Sources, SecretSource::Env(t)) if is_pure_reference(t) => {
            writeln!(out, "password = {}", quote(t))
        }
        (SecretRendering::Sources, SecretSource::File(path)) => {
            writeln!(out, "password_file = {}", quote_path(path))
        }
        (SecretRendering::Redacted, SecretSource::Env(t)) if is_pure_reference(t) => {
            writeln!(out, "password = {redacted}  # from {t}")
        }
        (SecretRendering::Redacted, SecretSource::File(path)) => {
            writeln!(
                out,
                "password = {redacted}  # from password_file {}",
                quote_path(path)
            )
        }
        _ => writeln!(out, "password = {redacted}"),
    }
}

fn duration(d: Duration) -> String {
    quote(&format_duration(d))
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
