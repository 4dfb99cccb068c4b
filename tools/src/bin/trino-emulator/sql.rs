//! What a statement asks the emulator for: its kind ([`classify`]) and its hints ([`parse_hints`]).
//!
//! The emulator has no SQL engine. It recognises the session and transaction statements the clients
//! send on their own (`SET SESSION`, `RESET SESSION`, `START TRANSACTION`, `COMMIT`, `ROLLBACK`), plus
//! `SHOW SESSION`; a statement containing `emulator_fail` anywhere fails; everything else is an ordinary
//! query answering rows `(cluster, page, row)`.
//!
//! Hints ride in a comment anywhere in the text:
//! `/* emulator: pages=N rows=M delay_ms=D queued_polls=Q spooled=0|1 */`. Every key is optional; an
//! unknown key or a bad value makes the query fail (so a typo in a test shows). `spooled` matters only to a
//! client that negotiated the spooling protocol ([`crate::spooling`]): 1 spools every data page, 0 none.

/// The most pages / rows per page a hint may ask for (keeps one page's JSON in the tens of megabytes; a
/// row is about 20 bytes for a short `--name`, so a 5 MB page takes some 250,000 rows).
pub const MAX_PAGES: u32 = 1_000_000;
pub const MAX_ROWS_PER_PAGE: u32 = 1_000_000;

/// The text that makes a statement fail.
pub const FAIL_MARKER: &str = "emulator_fail";

/// What the statement is, as far as the emulator cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement {
    /// Anything not listed below: answers `(cluster, page, row)` rows.
    Select,
    ShowSession,
    SetSession {
        name: String,
        value: String,
    },
    ResetSession {
        name: String,
    },
    /// `USE catalog.schema` or `USE schema`.
    Use {
        catalog: Option<String>,
        schema: String,
    },
    StartTransaction,
    Commit,
    Rollback,
    /// The text contains [`FAIL_MARKER`].
    Fail,
    /// A recognised statement that is malformed (a syntax error in Trino).
    Invalid(String),
}

/// Hints from `/* emulator: ... */` comments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hints {
    pub pages: u32,
    pub rows: u32,
    pub delay_ms: u64,
    /// Overrides `--queued-polls` for this query.
    pub queued_polls: Option<u32>,
    /// `spooled=1` / `spooled=0`: spool every data page / none (spooling protocol only).
    pub spooled: Option<bool>,
}

impl Default for Hints {
    fn default() -> Self {
        Self { pages: 1, rows: 1, delay_ms: 0, queued_polls: None, spooled: None }
    }
}

/// Reads every `/* emulator: k=v ... */` comment of `sql`; later keys override earlier ones.
pub fn parse_hints(sql: &str) -> Result<Hints, String> {
    let mut hints = Hints::default();
    let mut rest = sql;
    while let Some(start) = rest.find("/*") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("*/") else { break };
        let body = after[..end].trim();
        rest = &after[end + 2..];
        let Some(pairs) = strip_prefix_ignore_case(body, "emulator:") else {
            continue;
        };
        for pair in pairs.split_whitespace() {
            let (key, value) =
                pair.split_once('=').ok_or_else(|| format!("emulator hint {pair:?} is not key=value"))?;
            let bad = |e: std::num::ParseIntError| format!("emulator hint {pair:?}: {e}");
            match key {
                "pages" => hints.pages = value.parse().map_err(bad)?,
                "rows" => hints.rows = value.parse().map_err(bad)?,
                "delay_ms" => hints.delay_ms = value.parse().map_err(bad)?,
                "queued_polls" => hints.queued_polls = Some(value.parse().map_err(bad)?),
                "spooled" => {
                    hints.spooled = Some(match value {
                        "1" => true,
                        "0" => false,
                        _ => return Err(format!("emulator hint {pair:?}: expected 0 or 1")),
                    });
                }
                _ => return Err(format!("unknown emulator hint {key:?}")),
            }
        }
    }
    if hints.pages > MAX_PAGES || hints.rows > MAX_ROWS_PER_PAGE {
        return Err(format!("emulator hints allow at most pages={MAX_PAGES} rows={MAX_ROWS_PER_PAGE}"));
    }
    Ok(hints)
}

/// Recognises the statement kind of `sql`.
pub fn classify(sql: &str) -> Statement {
    if sql.to_ascii_lowercase().contains(FAIL_MARKER) {
        return Statement::Fail;
    }
    let text = strip_comments(sql);
    let text = text.trim().trim_end_matches(';').trim_end();
    let words: Vec<String> = text.split_whitespace().take(3).map(str::to_ascii_uppercase).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["SET", "SESSION", ..] => set_session(after_words(text, 2)),
        ["RESET", "SESSION", ..] => {
            let name = after_words(text, 2).trim();
            if is_property_name(name) {
                Statement::ResetSession { name: name.to_owned() }
            } else {
                Statement::Invalid(format!("RESET SESSION: bad property name {name:?}"))
            }
        }
        ["SHOW", "SESSION", ..] => Statement::ShowSession,
        ["USE", _] => use_schema(after_words(text, 1)),
        ["START", "TRANSACTION", ..] => Statement::StartTransaction,
        ["COMMIT"] | ["COMMIT", "WORK"] => Statement::Commit,
        ["ROLLBACK"] | ["ROLLBACK", "WORK"] => Statement::Rollback,
        _ => Statement::Select,
    }
}

/// `name = value` after `SET SESSION`; a string literal's value is its unquoted content.
fn set_session(rest: &str) -> Statement {
    let Some((name, value)) = rest.split_once('=') else {
        return Statement::Invalid("SET SESSION needs name = value".to_owned());
    };
    let name = name.trim();
    let value = value.trim();
    if !is_property_name(name) {
        return Statement::Invalid(format!("SET SESSION: bad property name {name:?}"));
    }
    if value.is_empty() {
        return Statement::Invalid("SET SESSION: missing value".to_owned());
    }
    let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'"),
        None => value.to_owned(),
    };
    Statement::SetSession { name: name.to_owned(), value }
}

/// `catalog.schema` or `schema` after `USE`.
fn use_schema(target: &str) -> Statement {
    if !is_property_name(target) {
        return Statement::Invalid(format!("USE: bad schema name {target:?}"));
    }
    match target.split_once('.') {
        Some((catalog, schema)) => {
            Statement::Use { catalog: Some(catalog.to_owned()), schema: schema.to_owned() }
        }
        None => Statement::Use { catalog: None, schema: target.to_owned() },
    }
}

/// `name` or `catalog.name`, made of letters, digits and underscores.
fn is_property_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').count() <= 2
        && name
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// The text after the first `n` whitespace-separated words.
fn after_words(text: &str, n: usize) -> &str {
    let mut rest = text.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = rest[end..].trim_start();
    }
    rest
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// `sql` with `-- line` and `/* block */` comments replaced by a space; quoted text is kept as is.
fn strip_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Statement::*;
    use super::*;

    fn set(name: &str, value: &str) -> Statement {
        SetSession { name: name.to_owned(), value: value.to_owned() }
    }

    fn hints(pages: u32, rows: u32, delay_ms: u64, queued_polls: Option<u32>) -> Hints {
        Hints { pages, rows, delay_ms, queued_polls, spooled: None }
    }

    #[test]
    fn classify_statements() {
        for (sql, expected) in [
            ("SELECT 1", Select),
            ("select * from t", Select),
            ("SHOW SESSION", ShowSession),
            ("  show   session ;", ShowSession),
            ("SET SESSION query_max_run_time = '10m'", set("query_max_run_time", "10m")),
            ("set session hive.x=true", set("hive.x", "true")),
            ("SET SESSION a = 'it''s'", set("a", "it's")),
            ("SET SESSION a = 5 /* emulator: delay_ms=5 */", set("a", "5")),
            ("/* lead */ SET SESSION a = 1;", set("a", "1")),
            ("-- c\nSET SESSION a = 1", set("a", "1")),
            ("SET SESSION a", Invalid("SET SESSION needs name = value".to_owned())),
            ("SET SESSION = 1", Invalid("SET SESSION: bad property name \"\"".to_owned())),
            ("RESET SESSION a.b", ResetSession { name: "a.b".to_owned() }),
            ("RESET SESSION", Invalid("RESET SESSION: bad property name \"\"".to_owned())),
            ("USE hive.web", Use { catalog: Some("hive".to_owned()), schema: "web".to_owned() }),
            ("use web;", Use { catalog: None, schema: "web".to_owned() }),
            ("USE a.b.c", Invalid("USE: bad schema name \"a.b.c\"".to_owned())),
            ("USE a b", Select),
            ("START TRANSACTION", StartTransaction),
            ("start transaction isolation level read committed", StartTransaction),
            ("COMMIT", Commit),
            ("commit work", Commit),
            ("ROLLBACK", Rollback),
            ("ROLLBACK WORK;", Rollback),
            ("SELECT 'emulator_fail'", Fail),
            ("SET SESSION a = 1 /* EMULATOR_FAIL */", Fail),
            ("SELECT '/* SET SESSION a = 1 */'", Select),
            ("", Select),
        ] {
            assert_eq!(classify(sql), expected, "{sql:?}");
        }
    }

    #[test]
    fn hint_parsing() {
        for (sql, expected) in [
            ("SELECT 1", Ok(hints(1, 1, 0, None))),
            ("SELECT 1 /* emulator: pages=3 rows=7 */", Ok(hints(3, 7, 0, None))),
            ("/*emulator:delay_ms=250*/ SELECT 1", Ok(hints(1, 1, 250, None))),
            ("SELECT /* Emulator: queued_polls=0 */ 1", Ok(hints(1, 1, 0, Some(0)))),
            ("/* emulator: pages=2 */ x /* emulator: pages=5 rows=0 */", Ok(hints(5, 0, 0, None))),
            ("SELECT 1 /* other comment pages=9 */", Ok(hints(1, 1, 0, None))),
            ("SELECT 1 /* emulator: pages=0 */", Ok(hints(0, 1, 0, None))),
            (
                "SELECT 1 /* emulator: pages=x */",
                Err("emulator hint \"pages=x\": invalid digit found in string"),
            ),
            ("SELECT 1 /* emulator: page=2 */", Err("unknown emulator hint \"page\"")),
            ("SELECT 1 /* emulator: pages */", Err("emulator hint \"pages\" is not key=value")),
            (
                "SELECT 1 /* emulator: rows=1000001 */",
                Err("emulator hints allow at most pages=1000000 rows=1000000"),
            ),
            ("SELECT 1 /* emulator: pages=2", Ok(hints(1, 1, 0, None))),
            (
                "SELECT 1 /* emulator: spooled=1 rows=5 */",
                Ok(Hints { spooled: Some(true), ..hints(1, 5, 0, None) }),
            ),
            (
                "SELECT 1 /* emulator: spooled=0 */",
                Ok(Hints { spooled: Some(false), ..hints(1, 1, 0, None) }),
            ),
            ("SELECT 1 /* emulator: spooled=yes */", Err("emulator hint \"spooled=yes\": expected 0 or 1")),
        ] {
            assert_eq!(parse_hints(sql), expected.map_err(str::to_owned), "{sql:?}");
        }
    }

    #[test]
    fn comments_are_stripped_outside_quotes() {
        for (sql, expected) in [
            ("a /* b */ c", "a   c"),
            ("a -- b\nc", "a  c"),
            ("'/* x */' -- y", "'/* x */'  "),
            ("\"--x\" y", "\"--x\" y"),
        ] {
            assert_eq!(strip_comments(sql), expected, "{sql:?}");
        }
    }
}
