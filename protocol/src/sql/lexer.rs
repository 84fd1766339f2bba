//! A borrowing SQL tokenizer for the PostgreSQL and MySQL (MariaDB, TiDB) dialects.
//!
//! It knows exactly what can hide SQL text from a reader — comments, string literals, quoted
//! identifiers, dollar quoting — and nothing about grammar. Tokens are slices of the input; the
//! lexer never allocates. Anything it cannot finish (a string, comment or identifier without its
//! end) becomes one [`TokenKind::Unterminated`] token covering the rest of the input, after which
//! the lexer yields nothing.

use super::Dialect;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A keyword or unquoted identifier (compare with [`Token::is`]).
    Word,
    /// A quoted identifier: `"name"` (PostgreSQL) or `` `name` `` (MySQL); quotes included.
    QuotedIdent,
    /// A string literal of any form, quotes included: `'x'`, `E'x'`'s quoted part, `$$x$$`,
    /// `$tag$x$tag$`, and MySQL `"x"`.
    String,
    /// A numeric literal.
    Number,
    /// A PostgreSQL positional parameter: `$1`.
    Param,
    /// A MySQL user variable: `@name`, `@'name'`.
    UserVar,
    /// A MySQL system variable: `@@name`, `@@session.name`.
    SystemVar,
    /// A comment, delimiters included: `-- x`, `/* x */`, MySQL `# x`.
    Comment,
    /// Any other single byte: `(`, `)`, `;`, `,`, `.`, operators.
    Punct,
    /// A string, quoted identifier or comment that never ends: the rest of the input.
    Unterminated,
}

/// One token: a slice of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// What the token is.
    pub kind: TokenKind,
    /// The token's bytes in the input.
    pub text: &'a [u8],
    /// Parentheses open before this token; `(` and `)` carry the depth outside them.
    pub depth: u32,
}

impl<'a> Token<'a> {
    /// Whether this is the word `keyword` (ASCII case-insensitive; `keyword` in lowercase).
    pub fn is(&self, keyword: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(keyword.as_bytes())
    }

    /// Whether this is the punctuation byte `b`.
    pub fn is_punct(&self, b: u8) -> bool {
        self.kind == TokenKind::Punct && self.text == [b]
    }

    /// The name an identifier token stands for: a word as written, a quoted identifier without
    /// its quotes. `None` for other kinds.
    pub fn ident(&self) -> Option<&'a [u8]> {
        match self.kind {
            TokenKind::Word => Some(self.text),
            TokenKind::QuotedIdent => self.text.get(1..self.text.len().saturating_sub(1)),
            _ => None,
        }
    }
}

/// A tokenizer over one SQL text. Cheap to clone (a clone is a saved position).
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    depth: u32,
    dialect: Dialect,
    backslash_escapes: bool,
    in_executable_comment: bool,
    saw_mode_dependent_backslash: bool,
    done: bool,
}

impl<'a> Lexer<'a> {
    /// A lexer with the server defaults of `dialect`: PostgreSQL `standard_conforming_strings =
    /// on` (backslash is literal in `'x'`), MySQL without `NO_BACKSLASH_ESCAPES`.
    pub fn new(src: &'a [u8], dialect: Dialect) -> Self {
        Self::with_backslash_escapes(src, dialect, dialect == Dialect::MySql)
    }

    /// A lexer where backslash escapes in plain `'x'` strings (and MySQL `"x"` strings) are on or
    /// off, whatever the dialect's default. PostgreSQL `E'x'` always has them.
    pub fn with_backslash_escapes(src: &'a [u8], dialect: Dialect, on: bool) -> Self {
        Self {
            src,
            pos: 0,
            depth: 0,
            dialect,
            backslash_escapes: on,
            in_executable_comment: false,
            saw_mode_dependent_backslash: false,
            done: false,
        }
    }

    /// Whether a string lexed so far held a backslash whose meaning depends on a server setting
    /// (`standard_conforming_strings`, `NO_BACKSLASH_ESCAPES`, `ANSI_QUOTES`): then the same
    /// text lexed with the other setting may split differently.
    pub fn saw_mode_dependent_backslash(&self) -> bool {
        self.saw_mode_dependent_backslash
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    fn token(&mut self, kind: TokenKind, start: usize, end: usize) -> Token<'a> {
        let end = end.min(self.src.len());
        self.pos = end;
        Token {
            kind,
            text: self.src.get(start..end).unwrap_or_default(),
            depth: self.depth,
        }
    }

    fn unterminated(&mut self, start: usize) -> Token<'a> {
        self.done = true;
        self.token(TokenKind::Unterminated, start, self.src.len())
    }

    /// Lexes a quoted run opened at `start` (opening delimiter `open_len` bytes long) and closed
    /// by `quote`; a doubled `quote` stands for itself.
    fn quoted(
        &mut self,
        kind: TokenKind,
        start: usize,
        open_len: usize,
        quote: u8,
        backslash: Backslash,
    ) -> Token<'a> {
        let mut i = start + open_len;
        loop {
            let rest = self.src.get(i..).unwrap_or_default();
            let Some(off) = memchr::memchr2(quote, b'\\', rest) else {
                return self.unterminated(start);
            };
            i += off;
            if self.at(i) == Some(b'\\') {
                match backslash {
                    Backslash::Literal => i += 1,
                    Backslash::Escapes => i += 2,
                    Backslash::ModeDependent => {
                        self.saw_mode_dependent_backslash = true;
                        i += if self.backslash_escapes { 2 } else { 1 };
                    }
                }
            } else if self.at(i + 1) == Some(quote) {
                i += 2;
            } else {
                return self.token(kind, start, i + 1);
            }
        }
    }

    fn block_comment(&mut self, start: usize) -> Token<'a> {
        let nests = self.dialect == Dialect::Postgres;
        let mut level = 1u32;
        let mut i = start + 2;
        loop {
            let rest = self.src.get(i..).unwrap_or_default();
            let Some(off) = memchr::memchr2(b'*', b'/', rest) else {
                return self.unterminated(start);
            };
            i += off;
            match (self.at(i), self.at(i + 1)) {
                (Some(b'*'), Some(b'/')) => {
                    level -= 1;
                    i += 2;
                    if level == 0 {
                        return self.token(TokenKind::Comment, start, i);
                    }
                }
                (Some(b'/'), Some(b'*')) if nests => {
                    level = level.saturating_add(1);
                    i += 2;
                }
                _ => i += 1,
            }
        }
    }

    fn line_comment(&mut self, start: usize) -> Token<'a> {
        let rest = self.src.get(start..).unwrap_or_default();
        let end = memchr::memchr(b'\n', rest).map_or(self.src.len(), |off| start + off);
        self.token(TokenKind::Comment, start, end)
    }

    /// `$` in PostgreSQL: a parameter (`$1`), a dollar-quoted string (`$$`, `$tag$`) or an
    /// operator byte.
    fn dollar(&mut self, start: usize) -> Token<'a> {
        if self.at(start + 1).is_some_and(|b| b.is_ascii_digit()) {
            let end = self.scan_while(start + 1, |b| b.is_ascii_digit());
            return self.token(TokenKind::Param, start, end);
        }
        let tag_end = self.scan_while(start + 1, is_ident_continue_no_dollar);
        if self.at(tag_end) != Some(b'$') {
            return self.token(TokenKind::Punct, start, start + 1);
        }
        let tag = self.src.get(start..=tag_end).unwrap_or_default();
        let mut i = tag_end + 1;
        loop {
            let rest = self.src.get(i..).unwrap_or_default();
            let Some(off) = memchr::memchr(b'$', rest) else {
                return self.unterminated(start);
            };
            i += off;
            if self.src.get(i..).is_some_and(|r| r.starts_with(tag)) {
                return self.token(TokenKind::String, start, i + tag.len());
            }
            i += 1;
        }
    }

    /// `@` in MySQL: a user or system variable.
    fn variable(&mut self, start: usize) -> Token<'a> {
        if self.at(start + 1) == Some(b'@') {
            let end = self.scan_while(start + 2, |b| is_ident_continue(b) || b == b'.');
            return self.token(TokenKind::SystemVar, start, end);
        }
        match self.at(start + 1) {
            Some(q @ (b'\'' | b'"' | b'`')) => {
                let backslash = if q == b'`' {
                    Backslash::Literal
                } else {
                    Backslash::ModeDependent
                };
                let tok = self.quoted(TokenKind::UserVar, start, 2, q, backslash);
                if tok.kind == TokenKind::Unterminated {
                    return tok;
                }
                Token {
                    kind: TokenKind::UserVar,
                    ..tok
                }
            }
            _ => {
                let end = self.scan_while(start + 1, |b| is_ident_continue(b) || b == b'.');
                let kind = if end > start + 1 {
                    TokenKind::UserVar
                } else {
                    TokenKind::Punct
                };
                self.token(kind, start, end)
            }
        }
    }

    fn scan_while(&self, from: usize, pred: impl Fn(u8) -> bool) -> usize {
        let rest = self.src.get(from..).unwrap_or_default();
        from + rest.iter().position(|&b| !pred(b)).unwrap_or(rest.len())
    }

    fn number(&mut self, start: usize) -> Token<'a> {
        let mut i = start;
        while let Some(b) = self.at(i) {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' {
                i += 1;
                if matches!(b, b'e' | b'E') && matches!(self.at(i), Some(b'+' | b'-')) {
                    i += 1;
                }
            } else {
                break;
            }
        }
        self.token(TokenKind::Number, start, i)
    }

    fn word(&mut self, start: usize) -> Token<'a> {
        let end = self.scan_while(start, is_ident_continue);
        // PostgreSQL `E'...'`: a string where backslash escapes are always on.
        if self.dialect == Dialect::Postgres
            && end == start + 1
            && matches!(self.at(start), Some(b'e' | b'E'))
            && self.at(end) == Some(b'\'')
        {
            return self.quoted(TokenKind::String, start, 2, b'\'', Backslash::Escapes);
        }
        self.token(TokenKind::Word, start, end)
    }

    fn skip_whitespace(&mut self) {
        self.pos = self.scan_while(self.pos, |b| b.is_ascii_whitespace() || b == 0x0b);
    }

    /// MySQL `/*!` / `/*M!` executable comment: the text inside is SQL. Skips the opener and its
    /// version number; the matching `*/` is skipped when reached.
    fn enter_executable_comment(&mut self, start: usize) -> bool {
        let open = match (self.at(start + 2), self.at(start + 3)) {
            (Some(b'!'), _) => 3,
            (Some(b'M'), Some(b'!')) => 4,
            _ => return false,
        };
        self.pos = self.scan_while(start + open, |b| b.is_ascii_digit());
        self.in_executable_comment = true;
        true
    }

    fn next_token(&mut self) -> Option<Token<'a>> {
        loop {
            self.skip_whitespace();
            let start = self.pos;
            let b = self.at(start)?;
            let next = self.at(start + 1);
            let mysql = self.dialect == Dialect::MySql;
            return Some(match b {
                b'-' if next == Some(b'-') => {
                    // MySQL needs whitespace (or the end) after `--`; `1--1` is arithmetic.
                    let third = self.at(start + 2);
                    if !mysql || third.is_none_or(|c| c <= b' ') {
                        self.line_comment(start)
                    } else {
                        self.token(TokenKind::Punct, start, start + 1)
                    }
                }
                b'#' if mysql => self.line_comment(start),
                b'/' if next == Some(b'*') => {
                    if mysql && self.enter_executable_comment(start) {
                        continue;
                    }
                    self.block_comment(start)
                }
                b'*' if next == Some(b'/') && self.in_executable_comment => {
                    self.in_executable_comment = false;
                    self.pos = start + 2;
                    continue;
                }
                b'\'' => self.quoted(TokenKind::String, start, 1, b'\'', Backslash::ModeDependent),
                b'"' if mysql => {
                    self.quoted(TokenKind::String, start, 1, b'"', Backslash::ModeDependent)
                }
                b'"' => self.quoted(TokenKind::QuotedIdent, start, 1, b'"', Backslash::Literal),
                b'`' if mysql => {
                    self.quoted(TokenKind::QuotedIdent, start, 1, b'`', Backslash::Literal)
                }
                b'$' if !mysql => self.dollar(start),
                b'@' if mysql => self.variable(start),
                b'(' => {
                    let tok = self.token(TokenKind::Punct, start, start + 1);
                    self.depth = self.depth.saturating_add(1);
                    tok
                }
                b')' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.token(TokenKind::Punct, start, start + 1)
                }
                b'0'..=b'9' => self.number(start),
                b'.' if next.is_some_and(|c| c.is_ascii_digit()) => self.number(start),
                c if is_ident_start(c) => self.word(start),
                _ => self.token(TokenKind::Punct, start, start + 1),
            });
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if self.done {
            return None;
        }
        let tok = self.next_token();
        if tok.is_none() && self.in_executable_comment {
            // `/*!` without its `*/`: MySQL rejects it, and so does the classifier.
            self.done = true;
            return Some(Token {
                kind: TokenKind::Unterminated,
                text: &[],
                depth: self.depth,
            });
        }
        tok
    }
}

/// How a backslash inside a quoted run behaves.
#[derive(Debug, Clone, Copy)]
enum Backslash {
    /// Always a plain character (identifiers, dollar quotes).
    Literal,
    /// Always escapes the next byte (PostgreSQL `E'...'`).
    Escapes,
    /// Depends on a server setting (`standard_conforming_strings`, `NO_BACKSLASH_ESCAPES`).
    ModeDependent,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_continue(b: u8) -> bool {
    is_ident_continue_no_dollar(b) || b == b'$'
}

fn is_ident_continue_no_dollar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}
