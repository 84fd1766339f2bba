//! Differential test of session state (issue 16): random sequences of session operations from
//! several concurrent clients, run once straight against PostgreSQL and once through a
//! transaction pool with fewer server connections than clients, must get the same answers:
//! every `SHOW`, `current_setting`, row and SQLSTATE.
//!
//! Each client touches only its own session (settings, its statements, its transactions) and
//! reads tables nobody writes, so its answers do not depend on how the clients interleave:
//! directly they are fixed, and through sidepool any difference is session state lost,
//! leaked from another client, or a statement broken. The operations go by every protocol
//! path tokio-postgres has: simple Query, an unnamed statement (`query_typed`), a named one
//! (`query`, which prepares then executes in two cycles) and three unnamed statements in one
//! pipeline; named statements prepared in one step are executed in a later one.
//!
//! `make test` runs [`CASES`] sequences with a fixed seed; `SIDEPOOL_DIFF_CASES=N` runs more
//! by hand and `SIDEPOOL_DIFF_SEED=N` picks another seed. A failure shrinks to a minimal
//! sequence, printed with the first answer that differs; each one found is kept below as a
//! named regression test.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sidepool_loadtest::testbed::{PgAuth, PgServer};
use tokio_postgres::{Client, SimpleQueryMessage, Statement};

use crate::support::harness::*;

/// Sequences run by `make test`: each is [`CLIENTS`] clients of up to [`MAX_OPS`] operations.
const CASES: u32 = 40;
/// Concurrent clients per sequence, sharing [`LIMITS`]' two server connections.
const CLIENTS: usize = 3;
/// Operations per client, at most.
const MAX_OPS: usize = 12;
/// Fewer server connections than clients: a client between transactions moves.
const LIMITS: &str = "max_open = 2\nmax_idle = 2\nwait_timeout = \"30s\"";
/// Seed of `make test`'s sequences.
const SEED: u64 = 16;

/// Settings the operations change, with two values each: as a `SET` writes them and as
/// `set_config` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guc {
    SearchPath,
    TimeZone,
    ApplicationName,
    StatementTimeout,
    WorkMem,
    DateStyle,
}

impl Guc {
    fn name(self) -> &'static str {
        match self {
            Guc::SearchPath => "search_path",
            Guc::TimeZone => "TimeZone",
            Guc::ApplicationName => "application_name",
            Guc::StatementTimeout => "statement_timeout",
            Guc::WorkMem => "work_mem",
            Guc::DateStyle => "DateStyle",
        }
    }

    /// Value `i` (0 or 1): (as SQL after `SET name TO`, as a string).
    fn value(self, i: usize) -> (&'static str, &'static str) {
        let values: [(&str, &str); 2] = match self {
            Guc::SearchPath => [("s1", "s1"), ("s1, public", "s1, public")],
            Guc::TimeZone => [("'UTC'", "UTC"), ("'Asia/Tokyo'", "Asia/Tokyo")],
            Guc::ApplicationName => [("'diff_a'", "diff_a"), ("'diff_b'", "diff_b")],
            Guc::StatementTimeout => [("'5s'", "5s"), ("'7s'", "7s")],
            Guc::WorkMem => [("'8MB'", "8MB"), ("'16MB'", "16MB")],
            Guc::DateStyle => [("'SQL, DMY'", "SQL, DMY"), ("'German'", "German, DMY")],
        };
        values[i % 2]
    }
}

/// How a statement reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// A simple Query.
    Simple,
    /// Parse/Bind/Execute/Sync of the unnamed statement.
    Unnamed,
    /// A named statement: prepared in one cycle, executed in the next, then closed.
    Named,
    /// The unnamed statement between two others, the three sent in one pipeline.
    Pipelined,
}

/// What `DISCARD` discards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discard {
    All,
    Plans,
    Sequences,
    Temp,
}

/// Statements a client prepares under a name and executes later, maybe many times.
const PREPARED: &[&str] = &[
    "SELECT tag FROM diff_tag",
    "SELECT current_setting('search_path')",
    "SET search_path TO s1",
    "RESET search_path",
    "SELECT set_config('TimeZone', 'Asia/Tokyo', false)",
    "SHOW TimeZone",
    "DEALLOCATE ALL",
];

/// One operation of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Set(Guc, usize, Path),
    SetLocal(Guc, usize, Path),
    Reset(Guc, Path),
    ResetAll(Path),
    /// `set_config(name, value, is_local)` in a SELECT.
    SetConfig(Guc, usize, bool, Path),
    Show(Guc, Path),
    CurrentSetting(Guc, Path),
    /// Reads the table whose name is in two schemas (search_path decides).
    ReadTag(Path),
    DeallocateAll(Path),
    Discard(Discard, Path),
    /// Prepares `PREPARED[q]` into slot `slot` (the statement there before is closed).
    Prepare(usize, usize),
    /// Executes the statement in slot `slot`, if any.
    Execute(usize),
    Begin,
    Commit,
    Rollback,
    /// A statement that fails (42P01).
    MissingTable(Path),
}

impl Op {
    /// The SQL of an operation that is one statement on a [`Path`].
    fn sql(&self) -> Option<(String, Path)> {
        let (sql, path) = match *self {
            Op::Set(g, v, p) => (format!("SET {} TO {}", g.name(), g.value(v).0), p),
            Op::SetLocal(g, v, p) => (format!("SET LOCAL {} TO {}", g.name(), g.value(v).0), p),
            Op::Reset(g, p) => (format!("RESET {}", g.name()), p),
            Op::ResetAll(p) => ("RESET ALL".to_owned(), p),
            Op::SetConfig(g, v, local, p) => (
                format!(
                    "SELECT set_config('{}', '{}', {local})",
                    g.name(),
                    g.value(v).1
                ),
                p,
            ),
            Op::Show(g, p) => (format!("SHOW {}", g.name()), p),
            Op::CurrentSetting(g, p) => (format!("SELECT current_setting('{}')", g.name()), p),
            Op::ReadTag(p) => ("SELECT tag FROM diff_tag".to_owned(), p),
            Op::DeallocateAll(p) => ("DEALLOCATE ALL".to_owned(), p),
            Op::Discard(d, p) => (format!("DISCARD {d:?}").to_uppercase(), p),
            Op::MissingTable(p) => ("SELECT * FROM diff_missing".to_owned(), p),
            Op::Prepare(..) | Op::Execute(_) | Op::Begin | Op::Commit | Op::Rollback => {
                return None;
            }
        };
        Some((sql, path))
    }
}

fn path() -> impl Strategy<Value = Path> {
    prop_oneof![
        Just(Path::Simple),
        Just(Path::Unnamed),
        Just(Path::Named),
        Just(Path::Pipelined),
    ]
}

fn guc() -> impl Strategy<Value = Guc> {
    prop_oneof![
        3 => Just(Guc::SearchPath),
        2 => Just(Guc::TimeZone),
        2 => Just(Guc::ApplicationName),
        1 => Just(Guc::StatementTimeout),
        1 => Just(Guc::WorkMem),
        1 => Just(Guc::DateStyle),
    ]
}

fn discard() -> impl Strategy<Value = Discard> {
    prop_oneof![
        3 => Just(Discard::All),
        1 => Just(Discard::Plans),
        1 => Just(Discard::Sequences),
        1 => Just(Discard::Temp),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let settings = prop_oneof![
        4 => (guc(), 0..2usize, path()).prop_map(|(g, v, p)| Op::Set(g, v, p)),
        1 => (guc(), 0..2usize, path()).prop_map(|(g, v, p)| Op::SetLocal(g, v, p)),
        2 => (guc(), path()).prop_map(|(g, p)| Op::Reset(g, p)),
        1 => path().prop_map(Op::ResetAll),
        3 => (guc(), 0..2usize, any::<bool>(), path())
            .prop_map(|(g, v, local, p)| Op::SetConfig(g, v, local, p)),
        5 => (guc(), path()).prop_map(|(g, p)| Op::Show(g, p)),
        2 => (guc(), path()).prop_map(|(g, p)| Op::CurrentSetting(g, p)),
        3 => path().prop_map(Op::ReadTag),
    ];
    let statements = prop_oneof![
        1 => path().prop_map(Op::DeallocateAll),
        1 => (discard(), path()).prop_map(|(d, p)| Op::Discard(d, p)),
        3 => (0..2usize, 0..PREPARED.len()).prop_map(|(s, q)| Op::Prepare(s, q)),
        4 => (0..2usize).prop_map(Op::Execute),
        2 => Just(Op::Begin),
        2 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => path().prop_map(Op::MissingTable),
    ];
    prop_oneof![3 => settings, 2 => statements]
}

/// [`CLIENTS`] clients' operations.
fn sessions() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 1..=MAX_OPS), CLIENTS)
}

/// What a client saw: rows (every column as text), or the SQLSTATE of an error.
fn answer(result: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>) -> String {
    match result {
        Ok(rows) => {
            let rows: Vec<Vec<Option<String>>> = rows
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.get::<_, Option<String>>(i))
                        .collect()
                })
                .collect();
            format!("{rows:?}")
        }
        Err(e) => failure(&e),
    }
}

fn failure(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("error {}", db.code().code()),
        None => format!("not a database error: {e}"),
    }
}

/// Runs one statement by `path`.
async fn run_sql(c: &Client, sql: &str, path: Path) -> String {
    match path {
        Path::Simple => match c.simple_query(sql).await {
            Ok(messages) => {
                let rows: Vec<Vec<Option<String>>> = messages
                    .iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(r) => {
                            Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                        }
                        _ => None,
                    })
                    .collect();
                format!("{rows:?}")
            }
            Err(e) => failure(&e),
        },
        Path::Unnamed => answer(c.query_typed(sql, &[]).await),
        Path::Named => answer(c.query(sql, &[]).await),
        Path::Pipelined => {
            let (before, it, after) = tokio::join!(
                c.query_typed("SELECT 'before'", &[]),
                c.query_typed(sql, &[]),
                c.query_typed("SELECT 'after'", &[]),
            );
            format!("{} {} {}", answer(before), answer(it), answer(after))
        }
    }
}

/// Runs one operation; `slots` holds the client's named statements.
async fn run_op(c: &Client, op: &Op, slots: &mut [Option<Statement>; 2]) -> String {
    if let Some((sql, path)) = op.sql() {
        return run_sql(c, &sql, path).await;
    }
    let simple = |sql: &'static str| async move {
        match c.batch_execute(sql).await {
            Ok(()) => "ok".to_owned(),
            Err(e) => failure(&e),
        }
    };
    match *op {
        Op::Prepare(slot, q) => match c.prepare(PREPARED[q]).await {
            Ok(stmt) => {
                slots[slot] = Some(stmt);
                "prepared".to_owned()
            }
            Err(e) => failure(&e),
        },
        Op::Execute(slot) => match &slots[slot] {
            Some(stmt) => answer(c.query(stmt, &[]).await),
            None => "no statement".to_owned(),
        },
        Op::Begin => simple("BEGIN").await,
        Op::Commit => simple("COMMIT").await,
        Op::Rollback => simple("ROLLBACK").await,
        _ => unreachable!("{op:?} is one statement on a path"),
    }
}

/// One client's answers, in order.
async fn run_client(dsn: String, ops: Vec<Op>) -> Vec<String> {
    let c = must_connect(&dsn).await;
    let mut slots = [None, None];
    let mut answers = Vec::with_capacity(ops.len());
    for op in &ops {
        answers.push(run_op(&c, op, &mut slots).await);
    }
    answers
}

/// Every client's answers, the clients running concurrently; a hang is an answer too.
async fn run_all(dsn: &str, clients: &[Vec<Op>]) -> Vec<Vec<String>> {
    let tasks: Vec<_> = clients
        .iter()
        .map(|ops| tokio::spawn(run_client(dsn.to_owned(), ops.clone())))
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(answers) => out.push(answers.unwrap()),
            Err(_) => out.push(vec!["timed out".to_owned()]),
        }
    }
    out
}

/// The first answer that differs, with the operation that got it.
fn difference(clients: &[Vec<Op>], direct: &[Vec<String>], pooled: &[Vec<String>]) -> String {
    for (c, (d, p)) in direct.iter().zip(pooled).enumerate() {
        for (i, op) in clients[c].iter().enumerate() {
            let (d, p) = (d.get(i), p.get(i));
            if d != p {
                return format!(
                    "client {c}, operation {i} {op:?}: PostgreSQL answered {d:?}, sidepool {p:?}"
                );
            }
        }
    }
    "the answers differ".to_owned()
}

/// The two tables named `diff_tag` (one row each, `public` and `s1`) and nothing else.
async fn must_create_schema(pg: &PgServer) {
    must_connect_direct(pg)
        .await
        .batch_execute(
            "CREATE SCHEMA s1;
             CREATE TABLE public.diff_tag (tag text); INSERT INTO public.diff_tag VALUES ('public');
             CREATE TABLE s1.diff_tag (tag text); INSERT INTO s1.diff_tag VALUES ('s1');",
        )
        .await
        .unwrap();
}

/// PostgreSQL, a transaction pool in front of it, and the runtime both run on.
struct Bench {
    rt: tokio::runtime::Runtime,
    pg: PgServer,
    proxy: Option<Proxy>,
}

impl Bench {
    fn must_start() -> Bench {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let pg = must_start_pg(PgAuth::Scram);
        rt.block_on(must_create_schema(&pg));
        let proxy = rt.block_on(Proxy::must_start(&pg, &PoolSpec::transaction(LIMITS)));
        Bench {
            rt,
            pg,
            proxy: Some(proxy),
        }
    }

    /// Runs `clients` directly and through sidepool: (direct answers, pooled answers).
    fn run(&self, clients: &[Vec<Op>]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
        let direct = self.pg.dsn(USER, PASSWORD, DB);
        let pooled = self.proxy.as_ref().unwrap().app_dsn();
        self.rt.block_on(async {
            let direct = run_all(&direct, clients).await;
            (direct, run_all(&pooled, clients).await)
        })
    }

    /// Panics unless `clients` get the same answers both ways.
    fn must_agree(&self, clients: &[Vec<Op>]) {
        let (direct, pooled) = self.run(clients);
        assert!(
            direct == pooled,
            "{}",
            difference(clients, &direct, &pooled)
        );
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            self.rt.block_on(proxy.shutdown());
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn random_session_sequences_through_a_transaction_pool_answer_as_postgresql_does() {
    let bench = Bench::must_start();
    let cases = env_number("SIDEPOOL_DIFF_CASES").map_or(CASES, |n| n as u32);
    let seed = env_number("SIDEPOOL_DIFF_SEED").unwrap_or(SEED);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 300,
        ..Config::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&sessions(), |clients| {
        let (direct, pooled) = bench.run(&clients);
        prop_assert!(
            direct == pooled,
            "{}",
            difference(&clients, &direct, &pooled)
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// Regression sequences: the reported cases and each failure the random sequences found.

/// Issue 16, case 1: a `SET` prepared under a name with no server connection attached, and
/// executed later, while other clients keep the connections moving.
#[test]
fn a_set_prepared_by_name_follows_the_client_that_executes_it() {
    let busy = vec![Op::ReadTag(Path::Unnamed); 8];
    Bench::must_start().must_agree(&[
        vec![
            Op::Prepare(0, 2),
            Op::Execute(0),
            Op::Show(Guc::SearchPath, Path::Named),
            Op::ReadTag(Path::Named),
            Op::Show(Guc::SearchPath, Path::Simple),
            Op::ReadTag(Path::Unnamed),
            Op::Set(Guc::SearchPath, 1, Path::Named),
            Op::CurrentSetting(Guc::SearchPath, Path::Pipelined),
        ],
        busy.clone(),
        busy,
    ]);
}

/// Issue 16, case 2: `DEALLOCATE ALL` and `DISCARD ALL` by every path while other clients
/// execute their named statements on the same server connections.
#[test]
fn deallocate_all_and_discard_all_leave_other_clients_statements_alone() {
    let user = |reset: Op| {
        vec![
            Op::Prepare(0, 0),
            Op::Prepare(1, 1),
            Op::Execute(0),
            reset,
            Op::Execute(1),
            Op::Prepare(1, 5),
            Op::Execute(1),
            Op::Execute(0),
        ]
    };
    Bench::must_start().must_agree(&[
        user(Op::DeallocateAll(Path::Named)),
        user(Op::Discard(Discard::All, Path::Unnamed)),
        user(Op::DeallocateAll(Path::Simple)),
    ]);
}

/// `RESET ALL` and `DISCARD ALL` rolled back or failing inside a transaction block keep the
/// settings; `set_config` in a SELECT is read back whether local or not.
#[test]
fn reset_all_in_a_rolled_back_transaction_keeps_the_settings() {
    let busy = vec![Op::ReadTag(Path::Simple); 8];
    Bench::must_start().must_agree(&[
        vec![
            Op::SetConfig(Guc::SearchPath, 0, false, Path::Named),
            Op::Begin,
            Op::ResetAll(Path::Unnamed),
            Op::Show(Guc::SearchPath, Path::Simple),
            Op::Rollback,
            Op::ReadTag(Path::Simple),
            Op::Begin,
            Op::Discard(Discard::All, Path::Simple),
            Op::Rollback,
            Op::Show(Guc::SearchPath, Path::Unnamed),
            Op::SetConfig(Guc::TimeZone, 1, true, Path::Simple),
            Op::Show(Guc::TimeZone, Path::Simple),
        ],
        busy.clone(),
        busy,
    ]);
}

/// Found by the random sequences: a Parse of a statement already prepared on the connection was
/// answered by sidepool in a failed transaction, where PostgreSQL answers 25P02.
#[test]
fn a_prepare_in_a_failed_transaction_fails_as_it_would_directly() {
    Bench::must_start().must_agree(&[
        vec![
            Op::Prepare(0, 3),
            Op::Begin,
            Op::MissingTable(Path::Simple),
            Op::Prepare(1, 3),
            Op::Prepare(1, 0),
            Op::Rollback,
            Op::Prepare(1, 3),
            Op::Execute(1),
            Op::Execute(0),
        ],
        vec![Op::Prepare(0, 3), Op::Execute(0)],
    ]);
}
