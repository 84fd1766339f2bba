//! The classifier against a corpus of real statements (tests/data/sql_corpus.txt): what ORMs,
//! drivers, pgbench, sysbench, psql and migration tools send, plus the cases that misrouted
//! other splitters. Prints the corpus size; fails listing every mismatch.

use sidepool_protocol::sql::{Dialect, Route, WriteFunctions, classify};

const CORPUS: &str = include_str!("data/sql_corpus.txt");
const MIN_ENTRIES: usize = 300;

struct Entry<'a> {
    line: usize,
    dialect: Dialect,
    route: Route,
    sql: &'a str,
}

fn must_parse_corpus() -> Vec<Entry<'static>> {
    let mut entries = Vec::new();
    for (i, raw) in CORPUS.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        let mut parts = raw.splitn(3, ' ');
        let dialect = match parts.next() {
            Some("pg") => Dialect::Postgres,
            Some("mysql") => Dialect::MySql,
            other => panic!("line {line}: unknown dialect {other:?}"),
        };
        let route = match parts.next() {
            Some("replica") => Route::Replica,
            Some("primary") => Route::Primary,
            other => panic!("line {line}: unknown route {other:?}"),
        };
        let sql = parts.next().unwrap_or("");
        entries.push(Entry {
            line,
            dialect,
            route,
            sql,
        });
    }
    entries
}

#[test]
fn corpus_of_real_statements_routes_as_expected() {
    let entries = must_parse_corpus();
    let replicas = entries.iter().filter(|e| e.route == Route::Replica).count();
    println!(
        "sql corpus: {} statements ({} replica, {} primary)",
        entries.len(),
        replicas,
        entries.len() - replicas
    );
    assert!(
        entries.len() >= MIN_ENTRIES,
        "the corpus must hold at least {MIN_ENTRIES} statements, it has {}",
        entries.len()
    );
    let none = WriteFunctions::none();
    let mismatches: Vec<String> = entries
        .iter()
        .filter_map(|e| {
            let got = classify(e.sql.as_bytes(), e.dialect, &none);
            (got.route != e.route).then(|| {
                format!(
                    "line {}: expected {:?}, got {:?} ({:?}): {}",
                    e.line, e.route, got.route, got.kind, e.sql
                )
            })
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} statements misrouted:\n{}",
        mismatches.len(),
        entries.len(),
        mismatches.join("\n")
    );
}
