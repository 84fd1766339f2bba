//! Helpers shared by the unit tests.

use crate::{Config, Problem, ProblemKind, parse};

/// The environment every test sees.
pub(crate) fn env(name: &str) -> Option<String> {
    match name {
        "APP_PASSWORD" => Some("s3cret".to_owned()),
        "OTHER" => Some("other".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

/// A minimal valid pool, to which tests append keys.
pub(crate) const POOL: &str = r#"
[[pools]]
name = "app"
protocol = "postgres"
listen = "127.0.0.1:6432"
primary = "db:5432"
"#;

pub(crate) fn must_parse(text: &str) -> Config {
    match parse(text, "test.toml", &env) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}\n--- text:\n{text}"),
    }
}

pub(crate) fn must_fail(text: &str) -> Vec<Problem> {
    match parse(text, "test.toml", &env) {
        Ok(config) => panic!("expected problems, got {config:#?}\n--- text:\n{text}"),
        Err(errors) => {
            assert!(!errors.problems.is_empty(), "ConfigErrors with no problems");
            errors.problems
        }
    }
}

/// The single problem of `text`, asserting that there is exactly one.
pub(crate) fn must_fail_once(text: &str) -> Problem {
    let mut problems = must_fail(text);
    assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
    problems.remove(0)
}

/// Asserts `p` is at `key` with `kind` and a message containing `needle`.
#[track_caller]
pub(crate) fn assert_problem(p: &Problem, key: &str, kind: ProblemKind, needle: &str) {
    assert_eq!(p.key, key, "{p}");
    assert_eq!(p.kind, kind, "{p}");
    assert!(
        p.message.contains(needle),
        "message of {p} lacks {needle:?}"
    );
}
