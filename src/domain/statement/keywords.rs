//! The cheap scan: bounds the parser's work (what is worth parsing at all), and reads what the parser
//! cannot (the kind, and the target of the simple forms, from the leading keywords).

use super::*;

/// Whether `sql` is worth parsing: no control characters, no unterminated quote or comment, no
/// unopened parenthesis, nesting (of brackets and of `EXPLAIN`s) and operator count within bounds.
pub(super) fn prescan(sql: &str) -> bool {
    let mut depth = 0usize;
    let mut operators = 0usize;
    let mut explains = 0usize;
    for lexeme in Lexer::new(sql) {
        match lexeme {
            Lex::Bad => return false,
            Lex::Punct(b'(' | b'[') => {
                // `a[1][2]...` nests without depth, so `[` is an operator too.
                operators += usize::from(lexeme == Lex::Punct(b'['));
                depth += 1;
                if depth > MAX_NESTING {
                    return false;
                }
            }
            Lex::Punct(b')' | b']') => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Lex::Punct(b',' | b'.' | b';') => {}
            Lex::Punct(_) => operators += 1,
            Lex::Word(w) if is_operator_word(w) => operators += 1,
            Lex::Word(w) if w.eq_ignore_ascii_case("EXPLAIN") => {
                // `EXPLAIN EXPLAIN ...` nests statements.
                explains += 1;
                if explains > MAX_NESTING {
                    return false;
                }
            }
            _ => {}
        }
        if operators > MAX_OPERATORS {
            return false;
        }
    }
    true
}

/// Words that chain expressions or queries (each link is one level of the syntax tree): sqlparser's
/// keyword operators and set operations.
pub(super) fn is_operator_word(word: &str) -> bool {
    #[rustfmt::skip]
    const WORDS: [&str; 25] = [
        "AND", "OR", "NOT", "XOR", "DIV", "IS", "IN", "LIKE", "ILIKE", "RLIKE", "REGEXP", "GLOB", "SIMILAR",
        "MATCH", "MEMBER", "OVERLAPS", "BETWEEN", "AT", "COLLATE", "NOTNULL", "OPERATOR", "UNION", "EXCEPT",
        "INTERSECT", "MINUS",
    ];
    word.len() <= 9 && WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// The words a Trino statement starts with.
#[rustfmt::skip]
pub(super) const STATEMENT_WORDS: [&str; 32] = [
    "SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "ALTER", "DROP",
    "TRUNCATE", "COMMENT", "GRANT", "REVOKE", "DENY", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "SET", "RESET",
    "USE", "CALL", "EXECUTE", "PREPARE", "DEALLOCATE", "START", "COMMIT", "ROLLBACK", "ANALYZE", "REFRESH",
];

/// The first word of a statement, upper-cased, when a Trino statement can start with it (after
/// parentheses, only a query can).
pub(super) fn first_keyword(c: &mut Cursor<'_>) -> Option<&'static str> {
    let mut parens = 0;
    while c.eat_punct(b'(') {
        parens += 1;
        if parens > MAX_NESTING {
            return None;
        }
    }
    let Some(Lex::Word(word)) = c.bump() else { return None };
    let keyword = STATEMENT_WORDS.into_iter().find(|k| k.eq_ignore_ascii_case(word))?;
    (parens == 0 || matches!(keyword, "SELECT" | "WITH" | "VALUES" | "TABLE")).then_some(keyword)
}

/// The kind an unparsed statement's leading keywords give (`first` already read), and the names of
/// its simple forms.
pub(super) fn fallback_kind(first: &str, c: &mut Cursor<'_>, facts: &mut Collector<'_>) -> StatementKind {
    use StatementKind as K;
    match first {
        "SELECT" | "WITH" | "VALUES" => K::Select,
        "TABLE" => {
            c.table(facts, Access::Read);
            K::Select
        }
        "INSERT" => {
            if c.eat("INTO") || c.eat("OVERWRITE") {
                c.eat("TABLE");
                c.table(facts, Access::Write);
            }
            K::Insert
        }
        "UPDATE" => {
            c.table(facts, Access::Write);
            K::Update
        }
        "DELETE" => {
            if c.eat("FROM") {
                c.table(facts, Access::Write);
            }
            K::Delete
        }
        "MERGE" => {
            if c.eat("INTO") {
                c.table(facts, Access::Write);
            }
            K::Merge
        }
        "CREATE" => {
            if c.eat("OR") {
                c.eat("REPLACE");
            }
            if c.eat("TABLE") {
                c.if_exists();
                c.table(facts, Access::Write);
                if c.any_top_level("AS") { K::CreateTableAs } else { K::Ddl }
            } else {
                c.ddl_object(facts);
                K::Ddl
            }
        }
        "ALTER" | "DROP" => {
            if c.eat("TABLE") {
                c.if_exists();
                c.table(facts, Access::Write);
            } else {
                c.ddl_object(facts);
            }
            K::Ddl
        }
        "TRUNCATE" => {
            c.eat("TABLE");
            c.table(facts, Access::Write);
            K::Ddl
        }
        "COMMENT" | "GRANT" | "REVOKE" | "DENY" => K::Ddl,
        "SHOW" | "DESCRIBE" | "DESC" => K::ShowDescribe,
        "EXPLAIN" => {
            if c.eat("ANALYZE") {
                K::ExplainAnalyze
            } else {
                K::Explain
            }
        }
        "SET" | "RESET" => {
            if !c.eat("SESSION") || c.eat("AUTHORIZATION") {
                return K::Other;
            }
            if let Some([catalog, _]) = c.name().as_deref() {
                facts.catalog(catalog);
            }
            if first == "SET" { K::SetSession } else { K::ResetSession }
        }
        "USE" => {
            if let Some(name) = c.name() {
                facts.schema_parts(&name);
            }
            K::Use
        }
        "CALL" => {
            if let Some(name) = c.name() {
                facts.object(&name, None);
            }
            K::Call
        }
        "EXECUTE" => K::Execute,
        "PREPARE" => K::Prepare,
        "DEALLOCATE" => K::Deallocate,
        "START" => {
            if !c.eat("TRANSACTION") {
                return K::Unknown;
            }
            facts.starts_transaction = true;
            K::TransactionControl
        }
        "COMMIT" | "ROLLBACK" => K::TransactionControl,
        "ANALYZE" => {
            c.table(facts, Access::Read);
            K::Other
        }
        "REFRESH" => {
            if c.eat("MATERIALIZED") && c.eat("VIEW") {
                c.table(facts, Access::Write);
            }
            K::Other
        }
        _ => K::Unknown,
    }
}

/// Lexemes with one of look-ahead, and the few phrases the fallback reads.
pub(super) struct Cursor<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Option<Lex<'a>>>,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(sql: &'a str) -> Cursor<'a> {
        Cursor { lexer: Lexer::new(sql), peeked: None }
    }

    pub(super) fn peek(&mut self) -> Option<Lex<'a>> {
        *self.peeked.get_or_insert_with(|| self.lexer.next())
    }

    pub(super) fn bump(&mut self) -> Option<Lex<'a>> {
        self.peeked.take().unwrap_or_else(|| self.lexer.next())
    }

    pub(super) fn eat(&mut self, keyword: &str) -> bool {
        let hit = matches!(self.peek(), Some(Lex::Word(w)) if w.eq_ignore_ascii_case(keyword));
        if hit {
            self.bump();
        }
        hit
    }

    pub(super) fn eat_punct(&mut self, punct: u8) -> bool {
        let hit = self.peek() == Some(Lex::Punct(punct));
        if hit {
            self.bump();
        }
        hit
    }

    pub(super) fn if_exists(&mut self) {
        if self.eat("IF") {
            self.eat("NOT");
            self.eat("EXISTS");
        }
    }

    /// A name of 1 to 3 parts, normalized.
    pub(super) fn name(&mut self) -> Option<Vec<String>> {
        let mut parts = Vec::new();
        loop {
            match self.bump()? {
                Lex::Word(w) => parts.push(w.to_lowercase()),
                Lex::Quoted(q) => parts.push(q.replace("\"\"", "\"")),
                _ => return None,
            }
            if !self.eat_punct(b'.') {
                return Some(parts);
            }
            if parts.len() == 3 {
                return None;
            }
        }
    }

    pub(super) fn table(&mut self, facts: &mut Collector<'_>, access: Access) {
        if let Some(name) = self.name() {
            facts.object(&name, Some(access));
        }
    }

    /// After `CREATE`, `ALTER` or `DROP` (not followed by `TABLE`): a view or a schema.
    pub(super) fn ddl_object(&mut self, facts: &mut Collector<'_>) {
        self.eat("MATERIALIZED");
        if self.eat("VIEW") {
            self.if_exists();
            self.table(facts, Access::Write);
        } else if self.eat("SCHEMA") {
            self.if_exists();
            if let Some(name) = self.name() {
                facts.schema_parts(&name);
            }
        }
    }

    /// Whether `keyword` follows outside any parentheses.
    pub(super) fn any_top_level(&mut self, keyword: &str) -> bool {
        let mut depth = 0usize;
        while let Some(lexeme) = self.bump() {
            match lexeme {
                Lex::Punct(b'(') => depth += 1,
                Lex::Punct(b')') => depth = depth.saturating_sub(1),
                Lex::Word(w) if depth == 0 && w.eq_ignore_ascii_case(keyword) => return true,
                Lex::Bad => return false,
                _ => {}
            }
        }
        false
    }
}

/// One lexeme of the cheap scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lex<'a> {
    /// An unquoted identifier or keyword.
    Word(&'a str),
    /// The text between double quotes, doubled quotes still doubled.
    Quoted(&'a str),
    /// A string or number literal.
    Literal,
    Punct(u8),
    /// A control character, or an unterminated quote or comment (which ends the scan).
    Bad,
}

/// Trino's lexical structure, roughly: enough to skip comments and literals and to find words.
pub(super) struct Lexer<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(text: &'a str) -> Lexer<'a> {
        Lexer { text, at: 0 }
    }

    /// The index of the quote closing one opened before `from` (a doubled quote is an escape).
    pub(super) fn closing(&self, from: usize, quote: u8) -> Option<usize> {
        let bytes = self.text.as_bytes();
        let mut i = from;
        loop {
            i += bytes.get(i..)?.iter().position(|&b| b == quote)?;
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i);
            }
        }
    }

    pub(super) fn bad(&mut self) -> Option<Lex<'a>> {
        self.at = self.text.len();
        Some(Lex::Bad)
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Lex<'a>;

    fn next(&mut self) -> Option<Lex<'a>> {
        let bytes = self.text.as_bytes();
        loop {
            match (bytes.get(self.at)?, bytes.get(self.at + 1)) {
                (b' ' | b'\t' | b'\n' | b'\r' | 0x0c, _) => self.at += 1,
                (b'-', Some(b'-')) => {
                    self.at = bytes[self.at..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(bytes.len(), |n| self.at + n);
                }
                (b'/', Some(b'*')) => match self.text[self.at + 2..].find("*/") {
                    Some(n) => self.at += n + 4,
                    None => return self.bad(),
                },
                _ => break,
            }
        }
        let start = self.at;
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
        Some(match bytes[start] {
            q @ (b'\'' | b'"') => {
                let Some(end) = self.closing(start + 1, q) else { return self.bad() };
                self.at = end + 1;
                if q == b'"' { Lex::Quoted(&self.text[start + 1..end]) } else { Lex::Literal }
            }
            b if b.is_ascii_digit() => {
                self.at += bytes[start..]
                    .iter()
                    .position(|&b| !(word(b) || b == b'.'))
                    .unwrap_or(bytes.len() - start);
                Lex::Literal
            }
            b if word(b) => {
                self.at += bytes[start..].iter().position(|&b| !word(b)).unwrap_or(bytes.len() - start);
                Lex::Word(&self.text[start..self.at])
            }
            b if b < 0x20 || b == 0x7f => return self.bad(),
            b => {
                self.at += 1;
                Lex::Punct(b)
            }
        })
    }
}
