//! The admin console (docs/design.md §7): a client that logs in to any PostgreSQL listener with
//! database name `sidepool` gets a PgBouncer-style console instead of a server connection.
//!
//! This module is the protocol-blind part: the [`Hub`] every pool and the reload task share, and
//! [`execute`], which answers every command: `SHOW POOLS|CLIENTS|SERVERS|STATS|LEAKS|FLEET|CONFIG|HELP`,
//! `RELOAD`, `PAUSE [pool]`, `RESUME [pool]`, `KILL <client id | pool>`. Results are text rows
//! ([`Reply`]) that psql renders as tables. The PostgreSQL wire side (simple query protocol
//! only, what psql and PgBouncer's console users send) is `pg::console`. Logging in takes the
//! same credentials as the pool's listener; see docs/decisions.md for why there is no separate
//! admin user list.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use parking_lot::RwLock;
use sidepool_config::Config;
use sidepool_protocol::pg::backend::ColumnType;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::ReloadError;
use crate::leaks::suspects;
use crate::service::BackendView;
use crate::service::Service;
use crate::telemetry::saturation;

/// The database name that selects the console.
pub const DATABASE: &str = "sidepool";

/// How long `PAUSE` waits for checked-out connections to come back before it answers.
const PAUSE_WAIT: Duration = Duration::from_secs(30);

/// SQLSTATE for a console command it does not know (`syntax_error`).
const SYNTAX_ERROR: &str = "42601";
/// SQLSTATE for a pool or client that does not exist (`undefined_object`).
const UNDEFINED_OBJECT: &str = "42704";
/// SQLSTATE for a failed reload or pause (`object_not_in_prerequisite_state`).
const NOT_IN_PREREQUISITE_STATE: &str = "55000";

/// A reload request to the server: the reply says what changed, or why nothing did.
pub type ReloadRequest = oneshot::Sender<Result<String, ReloadError>>;

/// What the console (and reload) share across every pool of the process.
#[derive(Debug)]
pub struct Hub {
    /// Every running pool, in config order.
    services: RwLock<Vec<Arc<dyn Service>>>,
    /// The config in force.
    config: RwLock<Arc<Config>>,
    /// The server's reload task.
    reload: mpsc::Sender<ReloadRequest>,
}

impl Hub {
    /// A hub for `config`; reload requests go to `reload`.
    pub fn new(config: Arc<Config>, reload: mpsc::Sender<ReloadRequest>) -> Self {
        Hub {
            services: RwLock::new(Vec::new()),
            config: RwLock::new(config),
            reload,
        }
    }

    /// Replaces the list of running pools.
    pub fn set_services(&self, services: Vec<Arc<dyn Service>>) {
        *self.services.write() = services;
    }

    /// Every running pool.
    pub fn services(&self) -> Vec<Arc<dyn Service>> {
        self.services.read().clone()
    }

    /// Records the config now in force.
    pub fn set_config(&self, config: Arc<Config>) {
        *self.config.write() = config;
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    /// Asks the server to reload its config file and waits for the outcome.
    ///
    /// # Errors
    /// Why nothing was applied ([`ReloadError`]); the running config stays in force.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        let (tx, rx) = oneshot::channel();
        if self.reload.send(tx).await.is_err() {
            return Err(ReloadError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(ReloadError::Abandoned))
    }

    /// Pools named `name`, or all of them for `None`; an error names a missing pool.
    fn select(&self, name: Option<&str>) -> Result<Vec<Arc<dyn Service>>, String> {
        let all = self.services();
        match name {
            None => Ok(all),
            Some(n) => {
                let found: Vec<_> = all.into_iter().filter(|s| &*s.core().name == n).collect();
                if found.is_empty() {
                    Err(format!("sidepool: no pool named \"{n}\""))
                } else {
                    Ok(found)
                }
            }
        }
    }
}

/// A result to send: rows with a header, or just a command tag.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// A result set and its `CommandComplete` tag.
    Rows {
        columns: Vec<(&'static str, ColumnType)>,
        rows: Vec<Vec<Option<String>>>,
        tag: String,
    },
    /// A command without rows; `notice` is shown to the user first.
    Done { tag: String, notice: Option<String> },
    /// An error with its SQLSTATE.
    Error { code: &'static str, message: String },
}

const HELP: &str = "SHOW POOLS | CLIENTS | SERVERS | STATS | LEAKS | FLEET | CONFIG | HELP; RELOAD; \
                    PAUSE [pool]; RESUME [pool]; KILL <client id | pool>";

/// Runs one console command.
pub async fn execute(hub: &Hub, sql: &str) -> Reply {
    let sql = sql.trim_end_matches(';').trim();
    let words: Vec<&str> = sql.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    let arg = words.get(1).copied();
    match upper.as_slice() {
        [] => Reply::Done {
            tag: String::new(),
            notice: None,
        },
        ["SHOW", what] => match *what {
            "POOLS" => show_pools(hub),
            "CLIENTS" => show_clients(hub),
            "SERVERS" => show_servers(hub),
            "STATS" => show_stats(hub),
            "LEAKS" => show_leaks(hub),
            "FLEET" => show_fleet(hub),
            "CONFIG" => show_config(hub),
            "HELP" => help(),
            _ => unknown(sql),
        },
        ["RELOAD"] => match hub.reload().await {
            Ok(summary) => Reply::Done {
                tag: "RELOAD".into(),
                notice: Some(summary),
            },
            Err(why) => Reply::Error {
                code: NOT_IN_PREREQUISITE_STATE,
                message: format!("sidepool: reload failed, the running config stays: {why}"),
            },
        },
        ["PAUSE"] | ["PAUSE", _] => pause(hub, arg).await,
        ["RESUME"] | ["RESUME", _] => match hub.select(arg) {
            Ok(pools) => {
                for p in pools {
                    p.core().paused.send_replace(false);
                }
                Reply::Done {
                    tag: "RESUME".into(),
                    notice: None,
                }
            }
            Err(message) => Reply::Error {
                code: UNDEFINED_OBJECT,
                message,
            },
        },
        ["KILL", _] => kill(hub, words[1]),
        _ => unknown(sql),
    }
}

fn unknown(sql: &str) -> Reply {
    let shown: String = sql.chars().take(60).collect();
    Reply::Error {
        code: SYNTAX_ERROR,
        message: format!("sidepool: unknown console command \"{shown}\"; commands: {HELP}"),
    }
}

fn help() -> Reply {
    Reply::Rows {
        columns: vec![("commands", ColumnType::Text)],
        rows: HELP.split("; ").map(|c| vec![Some(c.to_owned())]).collect(),
        tag: "SHOW".into(),
    }
}

fn int(n: impl Into<u64>) -> Option<String> {
    Some(n.into().to_string())
}

fn secs(d: Duration) -> Option<String> {
    Some(format!("{:.3}", d.as_secs_f64()))
}

fn text(s: impl Into<String>) -> Option<String> {
    Some(s.into())
}

fn rows(columns: Vec<(&'static str, ColumnType)>, rows: Vec<Vec<Option<String>>>) -> Reply {
    Reply::Rows {
        tag: format!("SHOW {}", rows.len()),
        columns,
        rows,
    }
}

/// `SHOW FLEET`: one row per backend of each pool with `[pools.fleet]`.
fn show_fleet(hub: &Hub) -> Reply {
    let mut columns = vec![("pool", ColumnType::Text), ("backend", ColumnType::Text)];
    columns.extend(crate::fleet::state::COLUMNS.map(|c| (c, ColumnType::Text)));
    let mut data = Vec::new();
    for s in hub.services() {
        for f in s.core().fleets.lock().iter() {
            let mut row = vec![text(&*f.pool), text(&f.backend)];
            row.extend(f.snapshot().values());
            data.push(row);
        }
    }
    rows(columns, data)
}

fn show_pools(hub: &Hub) -> Reply {
    use ColumnType::{Bool, Float8, Int8, Text};
    let columns = vec![
        ("pool", Text),
        ("protocol", Text),
        ("mode", Text),
        ("backend", Text),
        ("clients", Int8),
        ("sv_in_use", Int8),
        ("sv_idle", Int8),
        ("sv_opening", Int8),
        ("max_open", Int8),
        ("waiting", Int8),
        ("saturation", Float8),
        ("pinned", Int8),
        ("leaked", Int8),
        ("paused", Bool),
        ("role", Text),
    ];
    let services = hub.services();
    let data = services
        .iter()
        .flat_map(|s| {
            let c = s.core();
            c.backends().into_iter().map(move |b| (c, b))
        })
        .map(|(c, b)| {
            let st = b.backend.stats();
            vec![
                text(&*c.name),
                text(c.protocol.as_str()),
                text(c.mode.as_str()),
                text(b.addr),
                int(c.clients.load(Relaxed)),
                int(st.in_use),
                int(st.idle),
                int(st.opening),
                int(st.max_open),
                int(st.waiting),
                Some(format!("{:.3}", saturation(&st))),
                int(c.pinned.load(Relaxed)),
                int(c.leaked_now.load(Relaxed)),
                text(if *c.paused.borrow() { "t" } else { "f" }),
                text(b.role.as_str()),
            ]
        })
        .collect();
    rows(columns, data)
}

fn show_clients(hub: &Hub) -> Reply {
    use ColumnType::{Float8, Int8, Text};
    let columns = vec![
        ("id", Int8),
        ("pool", Text),
        ("addr", Text),
        ("user", Text),
        ("database", Text),
        ("application_name", Text),
        ("state", Text),
        ("connected_seconds", Float8),
        ("idle_seconds", Float8),
        ("server", Int8),
        ("last_statement", Text),
    ];
    let now = Instant::now();
    let mut data = Vec::new();
    for s in hub.services() {
        let c = s.core();
        let holders: Vec<_> = c
            .backends()
            .iter()
            .flat_map(|b| b.backend.holders())
            .collect();
        for client in c.sessions.list() {
            let held = holders.iter().find(|h| h.client.id == client.id);
            data.push(vec![
                int(client.id),
                text(&*c.name),
                text(client.addr.to_string()),
                text(&client.user),
                text(&client.database),
                text(&client.application_name),
                text(if held.is_some() { "active" } else { "idle" }),
                secs(now.saturating_duration_since(client.connected_at)),
                secs(client.idle_for(now)),
                held.and_then(|h| int(h.id)),
                text(client.last_statement()),
            ]);
        }
    }
    rows(columns, data)
}

fn show_servers(hub: &Hub) -> Reply {
    use ColumnType::{Float8, Int8, Text};
    let columns = vec![
        ("id", Int8),
        ("pool", Text),
        ("backend", Text),
        ("state", Text),
        ("client", Int8),
        ("user", Text),
        ("database", Text),
        ("held_seconds", Float8),
        ("age_seconds", Float8),
        ("role", Text),
    ];
    let now = Instant::now();
    let mut data = Vec::new();
    for s in hub.services() {
        let c = s.core();
        for b in c.backends() {
            server_rows(&mut data, &c.name, &b, now);
        }
    }
    rows(columns, data)
}

/// `SHOW SERVERS` rows of one backend: its checked-out connections, then one for the idle ones.
fn server_rows(data: &mut Vec<Vec<Option<String>>>, pool: &str, b: &BackendView<'_>, now: Instant) {
    {
        for h in b.backend.holders() {
            data.push(vec![
                int(h.id),
                text(pool),
                text(b.addr),
                text("in_use"),
                int(h.client.id),
                text(&h.client.user),
                text(&h.client.database),
                secs(now.saturating_duration_since(h.checked_out_at)),
                secs(now.saturating_duration_since(h.conn_created_at)),
                text(b.role.as_str()),
            ]);
        }
        let idle = b.backend.stats().idle;
        if idle > 0 {
            data.push(vec![
                None,
                text(pool),
                text(b.addr),
                text(format!("idle ({idle})")),
                None,
                None,
                None,
                None,
                None,
                text(b.role.as_str()),
            ]);
        }
    }
}

fn show_stats(hub: &Hub) -> Reply {
    use ColumnType::{Float8, Int8, Text};
    let columns = vec![
        ("pool", Text),
        ("backend", Text),
        ("opened", Int8),
        ("connect_errors", Int8),
        ("wait_count", Int8),
        ("wait_seconds", Float8),
        ("wait_timeouts", Int8),
        ("rejected", Int8),
        ("closed_max_idle", Int8),
        ("closed_max_idle_time", Int8),
        ("closed_max_lifetime", Int8),
        ("closed_broken", Int8),
        ("pins_total", Int8),
        ("leaks_total", Int8),
        ("abandoned_total", Int8),
        ("role", Text),
    ];
    let services = hub.services();
    let data = services
        .iter()
        .flat_map(|s| {
            let c = s.core();
            c.backends().into_iter().map(move |b| (c, b))
        })
        .map(|(c, b)| {
            let st = b.backend.stats();
            vec![
                text(&*c.name),
                text(b.addr),
                int(st.opened),
                int(st.connect_errors),
                int(st.wait_count),
                secs(st.wait_duration),
                int(st.wait_timeouts),
                int(st.rejected),
                int(st.max_idle_closed),
                int(st.max_idle_time_closed),
                int(st.max_lifetime_closed),
                int(st.broken_closed),
                int(c.pins_total.load(Relaxed)),
                int(c.leaks_total.load(Relaxed)),
                int(c.abandoned_total.load(Relaxed)),
                text(b.role.as_str()),
            ]
        })
        .collect();
    rows(columns, data)
}

fn show_leaks(hub: &Hub) -> Reply {
    use ColumnType::{Float8, Int8, Text};
    let columns = vec![
        ("pool", Text),
        ("client", Int8),
        ("addr", Text),
        ("user", Text),
        ("database", Text),
        ("application_name", Text),
        ("held_seconds", Float8),
        ("idle_seconds", Float8),
        ("last_statement", Text),
    ];
    let now = Instant::now();
    let mut data = Vec::new();
    for s in hub.services() {
        let c = s.core();
        let threshold = c.leaks.borrow().threshold;
        let holders: Vec<_> = c
            .backends()
            .iter()
            .flat_map(|b| b.backend.holders())
            .collect();
        for leak in suspects(&holders, now, threshold) {
            let who = &leak.client;
            data.push(vec![
                text(&*c.name),
                int(who.id),
                text(who.addr.to_string()),
                text(&who.user),
                text(&who.database),
                text(&who.application_name),
                secs(leak.held),
                secs(leak.idle),
                text(who.last_statement()),
            ]);
        }
    }
    rows(columns, data)
}

/// The effective config, one row per key: `[[pools]]` sections are named `pools.<name>`.
fn show_config(hub: &Hub) -> Reply {
    use ColumnType::Text;
    let toml = hub.config().to_effective_toml();
    let columns = vec![("section", Text), ("key", Text), ("value", Text)];
    rows(columns, config_rows(&toml))
}

/// Flattens rendered TOML into (section, key, value) rows.
pub fn config_rows(toml: &str) -> Vec<Vec<Option<String>>> {
    let mut data = Vec::new();
    let mut section = String::new();
    let mut pool = String::new();
    for line in toml.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[') {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            if h == "pools" {
                pool.clear();
            }
            section = match h.strip_prefix("pools") {
                Some(rest) if !pool.is_empty() => format!("pools.{pool}{rest}"),
                _ => h.to_owned(),
            };
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if section == "pools" && k == "name" {
            pool = v.trim_matches('"').to_owned();
            section = format!("pools.{pool}");
        }
        data.push(vec![text(&section), text(k), text(v)]);
    }
    data
}

async fn pause(hub: &Hub, pool: Option<&str>) -> Reply {
    let pools = match hub.select(pool) {
        Ok(p) => p,
        Err(message) => {
            return Reply::Error {
                code: UNDEFINED_OBJECT,
                message,
            };
        }
    };
    for p in &pools {
        p.core().paused.send_replace(true);
    }
    // Like PgBouncer: answer once every server connection is back in the pool.
    let deadline = Instant::now() + PAUSE_WAIT;
    loop {
        let in_use: u32 = pools
            .iter()
            .flat_map(|p| p.core().backends())
            .map(|b| b.backend.stats().in_use)
            .sum();
        if in_use == 0 {
            return Reply::Done {
                tag: "PAUSE".into(),
                notice: None,
            };
        }
        if Instant::now() >= deadline {
            return Reply::Error {
                code: NOT_IN_PREREQUISITE_STATE,
                message: format!(
                    "sidepool: paused, but {in_use} server connection(s) are still in use after \
                     {PAUSE_WAIT:?}; new checkouts wait until RESUME"
                ),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill(hub: &Hub, target: &str) -> Reply {
    let reason = "sidepool: connection terminated by the admin console (KILL)";
    if let Ok(id) = target.parse::<u64>() {
        for s in hub.services() {
            if let Some(client) = s.core().sessions.find(id) {
                client.kill(reason.into());
                return Reply::Done {
                    tag: "KILL".into(),
                    notice: None,
                };
            }
        }
        return Reply::Error {
            code: UNDEFINED_OBJECT,
            message: format!("sidepool: no client with id {id} (see SHOW CLIENTS)"),
        };
    }
    match hub.select(Some(target)) {
        Ok(pools) => {
            let mut n = 0;
            for p in pools {
                for client in p.core().sessions.list() {
                    client.kill(reason.into());
                    n += 1;
                }
            }
            Reply::Done {
                tag: "KILL".into(),
                notice: Some(format!("{n} client(s) of pool \"{target}\" terminated")),
            }
        }
        Err(message) => Reply::Error {
            code: UNDEFINED_OBJECT,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rows_name_pool_sections() {
        let toml = "[admin]\nlisten = \"127.0.0.1:9930\"\n\n[[pools]]\nname = \"app\"\nmax = 1\n\n[pools.limits]\nmax_open = 20\n";
        let rows = config_rows(toml);
        let flat: Vec<(String, String, String)> = rows
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter().map(Option::unwrap_or_default);
                (
                    it.next().unwrap_or_default(),
                    it.next().unwrap_or_default(),
                    it.next().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            flat[0],
            ("admin".into(), "listen".into(), "\"127.0.0.1:9930\"".into())
        );
        assert_eq!(
            flat[1],
            ("pools.app".into(), "name".into(), "\"app\"".into())
        );
        assert_eq!(
            flat[3],
            ("pools.app.limits".into(), "max_open".into(), "20".into())
        );
    }

    #[tokio::test]
    async fn unknown_commands_list_the_known_ones() {
        let (tx, _rx) = mpsc::channel(1);
        let hub = Hub::new(Arc::new(test_config()), tx);
        match execute(&hub, "SHOW NONSENSE").await {
            Reply::Error { code, message } => {
                assert_eq!(code, SYNTAX_ERROR);
                assert!(message.contains("SHOW POOLS"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(matches!(
            execute(&hub, "KILL 424242").await,
            Reply::Error {
                code: UNDEFINED_OBJECT,
                ..
            }
        ));
        assert!(matches!(
            execute(&hub, "pause nosuchpool;").await,
            Reply::Error {
                code: UNDEFINED_OBJECT,
                ..
            }
        ));
    }

    fn test_config() -> Config {
        let text = "[[pools]]\nname = \"p\"\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:0\"\nprimary = \"127.0.0.1:5432\"\nclient_auth = \"trust\"\n";
        sidepool_config::parse(text, "test.toml", &|_: &str| None).expect("valid config")
    }
}
