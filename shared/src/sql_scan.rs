//! Splits SQL text into its top-level statements the way `psql` does — quotes, quoted
//! identifiers, dollar quotes, nested comments and `BEGIN ATOMIC … END` function bodies
//! are skipped — so a migration file can be checked before it runs, without a parser.
//! Used to refuse files that would escape the transaction pgfleet runs each migration in,
//! and to run a `-- pgfleet:no-transaction` file one statement at a time.

/// One top-level statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// 1-based line of its first keyword.
    pub line: usize,
    /// The statement's text, without the terminating semicolon, trimmed.
    pub text: String,
    /// Its first few words, upper-cased (keywords only: quoted text stops the list).
    pub words: Vec<String>,
}

/// How a statement relates to the transaction it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionUse {
    /// Runs inside a transaction like any other.
    Ordinary,
    /// Starts, ends or splits a transaction (`BEGIN`, `COMMIT`, `SAVEPOINT`, …).
    Control,
    /// Cannot run inside a transaction block (`CREATE INDEX CONCURRENTLY`, `VACUUM`, …).
    NeedsNoTransaction,
}

impl Statement {
    pub fn transaction_use(&self) -> TransactionUse {
        let w: Vec<&str> = self.words.iter().map(String::as_str).collect();
        let first = w.first().copied().unwrap_or("");
        let has = |word: &str| w.contains(&word);
        match first {
            "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE" => {
                TransactionUse::Control
            }
            "START" if w.get(1) == Some(&"TRANSACTION") => TransactionUse::Control,
            "PREPARE" if w.get(1) == Some(&"TRANSACTION") => TransactionUse::Control,
            "VACUUM" => TransactionUse::NeedsNoTransaction,
            "CREATE" | "DROP" if matches!(w.get(1), Some(&"DATABASE") | Some(&"TABLESPACE")) => {
                TransactionUse::NeedsNoTransaction
            }
            "CREATE" | "DROP" if has("INDEX") && has("CONCURRENTLY") => TransactionUse::NeedsNoTransaction,
            "REINDEX" if has("CONCURRENTLY") => TransactionUse::NeedsNoTransaction,
            "ALTER" if w.get(1) == Some(&"SYSTEM") => TransactionUse::NeedsNoTransaction,
            "CREATE" | "DROP" | "ALTER" if w.get(1) == Some(&"SUBSCRIPTION") => {
                TransactionUse::NeedsNoTransaction
            }
            "CLUSTER" if w.len() == 1 => TransactionUse::NeedsNoTransaction,
            "DISCARD" if w.get(1) == Some(&"ALL") => TransactionUse::NeedsNoTransaction,
            _ => TransactionUse::Ordinary,
        }
    }
}

/// Words of a statement kept for classification.
const WORDS_KEPT: usize = 6;

/// The top-level statements of `sql`; empty statements (`;;`, comments only) are dropped.
pub fn statements(sql: &str) -> Vec<Statement> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let mut start = 0;
    let mut current = Current::default();
    let mut paren_depth = 0i32;
    let mut begin_depth = 0i32;

    let finish = |current: &mut Current, start: usize, end: usize, out: &mut Vec<Statement>| {
        let text = sql[start..end].trim();
        if let Some(first_line) = current.first_line {
            out.push(Statement {
                line: first_line,
                text: text.to_owned(),
                words: std::mem::take(&mut current.words),
            });
        }
        *current = Current::default();
    };

    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if bytes[i] == b'\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            b'\'' => {
                current.note(line, None);
                // E'…' (or e'…') allows backslash escapes; otherwise a backslash is literal.
                let escapes =
                    i > 0 && matches!(bytes[i - 1], b'E' | b'e') && (i < 2 || !is_ident_char(bytes[i - 2]));
                i = skip_quoted(bytes, i, b'\'', escapes, &mut line);
            }
            b'"' => {
                current.note(line, None);
                i = skip_quoted(bytes, i, b'"', false, &mut line);
            }
            b'$' if i == 0 || !is_ident_char(bytes[i - 1]) => match dollar_tag(bytes, i) {
                Some(tag_len) => {
                    current.note(line, None);
                    let tag = &bytes[i..i + tag_len];
                    let body = i + tag_len;
                    let end = find(bytes, body, tag).unwrap_or(bytes.len());
                    line += bytes[i..end].iter().filter(|b| **b == b'\n').count();
                    i = (end + tag_len).min(bytes.len());
                }
                None => i += 1,
            },
            b'(' => {
                current.note(line, None);
                paren_depth += 1;
                i += 1;
            }
            b')' => {
                paren_depth -= 1;
                i += 1;
            }
            b';' if begin_depth == 0 => {
                finish(&mut current, start, i, &mut out);
                paren_depth = 0;
                i += 1;
                start = i;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let word_start = i;
                while i < bytes.len() && is_ident_char(bytes[i]) {
                    i += 1;
                }
                let word = sql[word_start..i].to_ascii_uppercase();
                // psql's heuristic: inside CREATE [OR REPLACE] FUNCTION|PROCEDURE, BEGIN
                // (and CASE within it) opens a block that END closes.
                if current.is_routine() && paren_depth == 0 {
                    match word.as_str() {
                        "BEGIN" => begin_depth += 1,
                        "CASE" if begin_depth > 0 => begin_depth += 1,
                        "END" if begin_depth > 0 => begin_depth -= 1,
                        _ => {}
                    }
                }
                current.note(line, Some(word));
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                current.note(line, None);
                i += 1;
            }
        }
    }
    finish(&mut current, start, bytes.len(), &mut out);
    out
}

#[derive(Default)]
struct Current {
    first_line: Option<usize>,
    words: Vec<String>,
    /// Set once something other than a bare word was seen: later words are not collected.
    words_done: bool,
}

impl Current {
    fn note(&mut self, line: usize, word: Option<String>) {
        self.first_line.get_or_insert(line);
        match word {
            Some(word) if !self.words_done && self.words.len() < WORDS_KEPT => self.words.push(word),
            Some(_) => {}
            None => self.words_done = true,
        }
    }

    fn is_routine(&self) -> bool {
        let w: Vec<&str> = self.words.iter().map(String::as_str).collect();
        matches!(
            w.as_slice(),
            ["CREATE", "FUNCTION" | "PROCEDURE", ..]
                | ["CREATE", "OR", "REPLACE", "FUNCTION" | "PROCEDURE", ..]
        )
    }
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Skips a quoted string or identifier starting at `open`; returns the index after it.
fn skip_quoted(bytes: &[u8], open: usize, quote: u8, escapes: bool, line: &mut usize) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if escapes => i += 2,
            b if b == quote => {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            b'\n' => {
                *line += 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Length of a dollar-quote tag (`$$`, `$body$`) at `i`, if one starts there.
fn dollar_tag(bytes: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if bytes.get(j).is_some_and(|b| b.is_ascii_digit()) {
        return None; // $1: a parameter
    }
    while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_' || bytes[j] >= 0x80) {
        j += 1;
    }
    (bytes.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(sql: &str) -> Vec<(usize, TransactionUse)> {
        statements(sql)
            .iter()
            .map(|s| (s.line, s.transaction_use()))
            .collect()
    }

    #[test]
    fn splits_like_psql() {
        let sql = "CREATE TABLE a (x text DEFAULT ';');\n\
                   -- a comment; with a semicolon\n\
                   /* nested /* comment; */ still; */ INSERT INTO a VALUES ($$ ; COMMIT; $$);\n\
                   CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN COMMIT; RETURN 1; END $body$;\n\
                   SELECT E'it\\'s; fine', 'x''y;', \"we;ird\";\n\
                   ;;";
        let s = statements(sql);
        assert_eq!(s.len(), 4, "{s:#?}");
        assert_eq!(s[0].words, ["CREATE", "TABLE", "A"]);
        assert_eq!(s[1].line, 3);
        assert_eq!(s[1].words, ["INSERT", "INTO", "A", "VALUES"]);
        assert_eq!(s[3].line, 5);
        assert!(s.iter().all(|s| s.transaction_use() == TransactionUse::Ordinary));
    }

    #[test]
    fn begin_atomic_bodies_are_one_statement() {
        let sql = "CREATE OR REPLACE FUNCTION f(a int) RETURNS int LANGUAGE sql\n\
                   BEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;\n  SELECT 2;\nEND;\nSELECT now();";
        let s = statements(sql);
        assert_eq!(s.len(), 2, "{s:#?}");
        assert_eq!(s[1].words, ["SELECT", "NOW"]);
    }

    #[test]
    fn finds_transaction_control_and_non_transactional_statements() {
        let sql = "CREATE TABLE t (x int);\nCOMMIT;\nbegin;\nSTART TRANSACTION;\nsavepoint s;\nEND;\n\
                   CREATE UNIQUE INDEX CONCURRENTLY i ON t (x);\nVACUUM t;\nPREPARE p AS SELECT 1;\n\
                   PREPARE TRANSACTION 'x';\nROLLBACK;";
        assert_eq!(
            uses(sql),
            [
                (1, TransactionUse::Ordinary),
                (2, TransactionUse::Control),
                (3, TransactionUse::Control),
                (4, TransactionUse::Control),
                (5, TransactionUse::Control),
                (6, TransactionUse::Control),
                (7, TransactionUse::NeedsNoTransaction),
                (8, TransactionUse::NeedsNoTransaction),
                (9, TransactionUse::Ordinary),
                (10, TransactionUse::Control),
                (11, TransactionUse::Control),
            ]
        );
    }

    #[test]
    fn words_in_strings_and_bodies_do_not_count() {
        for sql in [
            "INSERT INTO log VALUES ('COMMIT');",
            "DO $$ BEGIN PERFORM 1; END $$;",
            "COMMENT ON TABLE t IS 'BEGIN; COMMIT;';",
            "SELECT \"commit\" FROM t;",
        ] {
            assert!(
                uses(sql).iter().all(|(_, u)| *u == TransactionUse::Ordinary),
                "{sql}"
            );
        }
    }
}
