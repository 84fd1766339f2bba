//! Walking the spanned TOML tree: the "raw" stage. Type errors and unknown keys become
//! [`Problem`]s with positions instead of stopping the walk, so one pass finds them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml_edit::{InlineTable, Item, Table, Value};

use crate::duration::parse_duration;
use crate::keyword::{Keyword, spellings};
use crate::{Problem, ProblemKind};

/// Collects problems while the tree is walked, and carries what building values needs.
pub(crate) struct Ctx<'a> {
    origin: &'a str,
    text: &'a str,
    line_starts: Vec<usize>,
    problems: Vec<(usize, Problem)>,
    /// Looks up `${NAME}` in `password`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Directory that relative paths are resolved against (`None`: leave them relative).
    pub base_dir: Option<&'a Path>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        text: &'a str,
        origin: &'a str,
        env: &'a dyn Fn(&str) -> Option<String>,
        base_dir: Option<&'a Path>,
    ) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            origin,
            text,
            line_starts,
            problems: Vec::new(),
            env,
            base_dir,
        }
    }

    /// Records a problem at byte offset `at` of the text.
    pub fn report(&mut self, at: usize, key: &str, kind: ProblemKind, message: impl Into<String>) {
        self.push(at, key, kind, message.into(), None);
    }

    /// Records a problem caused by an I/O error.
    pub fn report_io(&mut self, at: usize, key: &str, message: String, err: std::io::Error) {
        self.push(at, key, ProblemKind::Secret, message, Some(Arc::new(err)));
    }

    fn push(
        &mut self,
        at: usize,
        key: &str,
        kind: ProblemKind,
        message: String,
        source: Option<Arc<std::io::Error>>,
    ) {
        let (line, column) = self.position(at);
        let problem = Problem {
            origin: self.origin.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message,
            kind,
            source,
        };
        self.problems.push((at, problem));
    }

    /// 1-based line and character column of byte offset `at`.
    pub fn position(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= at);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..at)
            .map_or(at - start, |s| s.chars().count())
            + 1;
        (line, column)
    }

    /// `path` as written, or joined to the config file's directory when relative.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        match self.base_dir {
            Some(dir) if Path::new(path).is_relative() => dir.join(path),
            _ => PathBuf::from(path),
        }
    }

    /// The problems in file order (stable for problems at the same place).
    pub fn finish(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|(at, _)| *at);
        self.problems.into_iter().map(|(_, p)| p).collect()
    }
}

#[derive(Clone, Copy)]
enum TableRef<'d> {
    Table(&'d Table),
    Inline(&'d InlineTable),
}

/// A TOML table (`[x]`, `[[x]]` entry or inline `{...}`) at key path `path`.
pub(crate) struct Section<'d> {
    /// Dotted key path, empty for the root.
    pub path: String,
    /// Byte offset of the header or inline table (the key when implicit).
    pub at: usize,
    table: TableRef<'d>,
}

/// One key's value inside a [`Section`].
pub(crate) struct Field<'d> {
    /// Dotted key path.
    pub path: String,
    /// Byte offset of the value (the key when the value has no span).
    pub at: usize,
    item: &'d Item,
}

impl<'d> Section<'d> {
    pub fn root(table: &'d Table) -> Self {
        Self {
            path: String::new(),
            at: 0,
            table: TableRef::Table(table),
        }
    }

    /// Joins `key` onto this section's path.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Reports every key not in `allowed`, with a suggestion or the list of valid keys.
    pub fn check_keys(&self, ctx: &mut Ctx<'_>, allowed: &[&str]) {
        for key in self.keys() {
            if allowed.contains(&key) {
                continue;
            }
            let message = match suggest(key, allowed.iter().copied()) {
                Some(near) => format!("unknown key `{key}`; did you mean `{near}`?"),
                None => format!(
                    "unknown key `{key}`; valid keys here: {}",
                    allowed.join(", ")
                ),
            };
            let at = self.key_at(key);
            ctx.report(at, &self.key_path(key), ProblemKind::UnknownKey, message);
        }
    }

    fn keys(&self) -> Vec<&'d str> {
        match self.table {
            TableRef::Table(t) => t.iter().map(|(k, _)| k).collect(),
            TableRef::Inline(t) => t.iter().map(|(k, _)| k).collect(),
        }
    }

    fn key_at(&self, key: &str) -> usize {
        let span = match self.table {
            TableRef::Table(t) => t.key(key).and_then(|k| k.span()),
            TableRef::Inline(t) => t.key(key).and_then(|k| k.span()),
        };
        span.map_or(self.at, |s| s.start)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<Field<'d>> {
        let (_, item) = match self.table {
            TableRef::Table(t) => t.get_key_value(key)?,
            TableRef::Inline(t) => t.get_key_value(key)?,
        };
        if item.is_none() {
            return None;
        }
        let at = item.span().map_or_else(|| self.key_at(key), |s| s.start);
        Some(Field {
            path: self.key_path(key),
            at,
            item,
        })
    }

    /// Offset of `key`'s value, or of this section when the key is absent (for problems about
    /// defaults).
    pub fn at_of(&self, key: &str) -> usize {
        self.get(key).map_or(self.at, |f| f.at)
    }

    /// The sub-table at `key`, reporting a type problem if it is not a table.
    pub fn section(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<Section<'d>> {
        self.get(key).and_then(|f| f.table(ctx))
    }
}

impl<'d> Field<'d> {
    fn type_problem(&self, ctx: &mut Ctx<'_>, expected: &str) {
        let message = format!("expected {expected}, found {}", self.item.type_name());
        ctx.report(self.at, &self.path, ProblemKind::Type, message);
    }

    /// A value problem at this field.
    pub fn problem(&self, ctx: &mut Ctx<'_>, message: impl Into<String>) {
        ctx.report(self.at, &self.path, ProblemKind::Value, message);
    }

    pub fn table(&self, ctx: &mut Ctx<'_>) -> Option<Section<'d>> {
        let table = match self.item {
            Item::Table(t) => TableRef::Table(t),
            Item::Value(Value::InlineTable(t)) => TableRef::Inline(t),
            _ => {
                self.type_problem(ctx, "a table");
                return None;
            }
        };
        Some(Section {
            path: self.path.clone(),
            at: self.at,
            table,
        })
    }

    /// An array of tables (`[[x]]` entries or an inline array of inline tables).
    pub fn tables(&self, ctx: &mut Ctx<'_>) -> Option<Vec<Section<'d>>> {
        let element = |i: usize, at: usize, table| Section {
            path: format!("{}[{i}]", self.path),
            at,
            table,
        };
        match self.item {
            Item::ArrayOfTables(array) => Some(
                array
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        element(i, t.span().map_or(self.at, |s| s.start), TableRef::Table(t))
                    })
                    .collect(),
            ),
            Item::Value(Value::Array(array)) => {
                let mut out = Vec::new();
                for (i, value) in array.iter().enumerate() {
                    let at = value.span().map_or(self.at, |s| s.start);
                    match value {
                        Value::InlineTable(t) => out.push(element(i, at, TableRef::Inline(t))),
                        other => {
                            let path = format!("{}[{i}]", self.path);
                            let message = format!("expected a table, found {}", other.type_name());
                            ctx.report(at, &path, ProblemKind::Type, message);
                        }
                    }
                }
                Some(out)
            }
            Item::Table(_) => {
                let key = self.path.rsplit('.').next().unwrap_or(&self.path);
                let message = format!("expected an array of tables; write [[{key}]], not [{key}]");
                ctx.report(self.at, &self.path, ProblemKind::Type, message);
                None
            }
            _ => {
                self.type_problem(ctx, "an array of tables");
                None
            }
        }
    }

    pub fn str(&self, ctx: &mut Ctx<'_>) -> Option<&'d str> {
        match self.item.as_str() {
            Some(s) => Some(s),
            None => {
                self.type_problem(ctx, "a string");
                None
            }
        }
    }

    pub fn bool(&self, ctx: &mut Ctx<'_>) -> Option<bool> {
        let b = self.item.as_bool();
        if b.is_none() {
            self.type_problem(ctx, "a boolean (true or false)");
        }
        b
    }

    /// An integer in `min..=max`.
    pub fn int(&self, ctx: &mut Ctx<'_>, min: i64, max: i64) -> Option<i64> {
        let Some(n) = self.item.as_integer() else {
            self.type_problem(ctx, "an integer");
            return None;
        };
        if n < min {
            self.problem(ctx, format!("must be at least {min}, found {n}"));
            None
        } else if n > max {
            self.problem(ctx, format!("must be at most {max}, found {n}"));
            None
        } else {
            Some(n)
        }
    }

    /// A `u32` of at least `min`.
    pub fn u32(&self, ctx: &mut Ctx<'_>, min: u32) -> Option<u32> {
        let n = self.int(ctx, min.into(), u32::MAX.into())?;
        u32::try_from(n).ok()
    }

    /// A duration string; bare numbers get a hint to add a unit.
    pub fn duration(&self, ctx: &mut Ctx<'_>) -> Option<Duration> {
        if let Some(n) = self.item.as_integer() {
            let message = format!(
                "expected a duration string, found integer {n}; durations need a unit: write \"{n}s\""
            );
            ctx.report(self.at, &self.path, ProblemKind::Type, message);
            return None;
        }
        if self.item.as_float().is_some() {
            let message = "expected a duration string, found float; write e.g. \"1s500ms\"";
            ctx.report(self.at, &self.path, ProblemKind::Type, message);
            return None;
        }
        let text = self.str(ctx)?;
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(message) => {
                self.problem(ctx, message);
                None
            }
        }
    }

    /// One of `K`'s spellings.
    pub fn keyword<K: Keyword>(&self, ctx: &mut Ctx<'_>) -> Option<K> {
        let text = self.str(ctx)?;
        if let Some(k) = K::from_keyword(text) {
            return Some(k);
        }
        let message = match suggest(text, K::ALL.iter().map(|k| k.as_str())) {
            Some(near) => format!("unknown {} `{text}`; did you mean `{near}`?", K::WHAT),
            None => {
                format!(
                    "unknown {} `{text}`; expected one of: {}",
                    K::WHAT,
                    spellings::<K>()
                )
            }
        };
        self.problem(ctx, message);
        None
    }

    /// An `IP:port` listen address.
    pub fn socket_addr(&self, ctx: &mut Ctx<'_>) -> Option<SocketAddr> {
        let text = self.str(ctx)?;
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let hint = if text.starts_with("localhost") {
                    "; use an IP address such as \"127.0.0.1:6432\", not a host name"
                } else {
                    ""
                };
                self.problem(
                    ctx,
                    format!("invalid listen address {text:?}: expected IP:port{hint}"),
                );
                None
            }
        }
    }

    /// An array of strings, each with its own path and offset.
    pub fn strings(&self, ctx: &mut Ctx<'_>) -> Option<Vec<Elem<'d>>> {
        let Some(array) = self.item.as_array() else {
            self.type_problem(ctx, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        for (i, value) in array.iter().enumerate() {
            let path = format!("{}[{i}]", self.path);
            let at = value.span().map_or(self.at, |s| s.start);
            match value.as_str() {
                Some(text) => out.push(Elem { text, path, at }),
                None => {
                    let message = format!("expected a string, found {}", value.type_name());
                    ctx.report(at, &path, ProblemKind::Type, message);
                }
            }
        }
        Some(out)
    }
}

/// One string of an array.
pub(crate) struct Elem<'d> {
    pub text: &'d str,
    pub path: String,
    pub at: usize,
}

/// The candidate closest to `word` if it is a plausible typo of it.
pub(crate) fn suggest<'c>(
    word: &str,
    candidates: impl Iterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(&word.to_ascii_lowercase(), c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggest_finds_near_misses_only() {
        let keys = ["max_open", "max_idle", "min_idle"];
        assert_eq!(suggest("max_opne", keys.iter().copied()), Some("max_open"));
        assert_eq!(suggest("Max_Idle", keys.iter().copied()), Some("max_idle"));
        assert_eq!(suggest("bananas", keys.iter().copied()), None);
    }

    #[test]
    fn position_counts_lines_and_character_columns_from_one() {
        let env = |_: &str| None;
        let ctx = Ctx::new("ab\n\u{e9}x = 1\n", "f", &env, None);
        assert_eq!(ctx.position(0), (1, 1));
        assert_eq!(ctx.position(3), (2, 1));
        // `é` is two bytes but one column.
        assert_eq!(ctx.position(5), (2, 2));
    }
}
