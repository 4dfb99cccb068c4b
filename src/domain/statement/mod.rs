//! SQL text → statement facts: what kind of statement a request carries and which catalogs, schemas,
//! tables and query ids it names. Pure: no I/O, no clocks; one call per statement, bounded work.
//!
//! sqlparser has no Trino dialect. The one here is sqlparser's `GenericDialect` (of its dialects the
//! one that reads the most Trino SQL) plus lambdas, `EXECUTE IMMEDIATE` and table versioning; Trino's
//! time travel (`FOR VERSION AS OF`, `FOR TIMESTAMP AS OF`) is respelled at the token level as the
//! `FOR SYSTEM_TIME AS OF` sqlparser knows. What the parser still cannot read (`RESET SESSION`,
//! `ALTER TABLE ... EXECUTE`, `PREPARE ... FROM`, bare `VALUES 1, 2`, `TABLE t`, ...) falls back to a
//! scan of the leading keywords: the kind is right wherever the first keywords say it, and the target
//! of the simple forms (`ALTER TABLE t ...`, `INSERT INTO t ...`) is still named.
//!
//! Work is bounded before the parser runs. Text that does not start like a Trino statement is
//! [`StatementKind::Unknown`] at once; SQL longer than [`Limits::max_bytes`] is only scanned; a cheap
//! pre-scan refuses control characters, unterminated quotes and comments, nesting deeper than
//! [`MAX_NESTING`] and more than [`MAX_OPERATORS`] operators. A long `a OR b OR ...` chain parses
//! fine, but its syntax tree is dropped recursively, which overflows a 2 MiB stack near 40,000 links.
//! sqlparser's recursion limit stays at its default (50): its statement-level recursion
//! (`EXPLAIN EXPLAIN ...`) is not stack-protected and overflows a 2 MiB debug-build stack near 100
//! levels. Within these bounds the cost is linear in the length of the SQL.
//!
//! Names: unquoted identifiers are lower-cased, quoted ones kept as written; a 1-part table name takes
//! the catalog and schema of [`Defaults`], a 2-part one the catalog. A name that cannot be completed is
//! left out of `tables`, but the catalog (and schema) that is known still counts. CTE names, `UNNEST`
//! and table functions are not tables.

use std::any::TypeId;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

use percent_encoding::percent_decode_str;
use sqlparser::ast::{
    AlterTableOperation, CommentObject, ContextModifier, CreateTableLikeKind, Expr, FromTable, FunctionArg,
    FunctionArgExpr, FunctionArguments, GrantObjects, Ident, ObjectName, ObjectType, Query,
    RenameTableNameKind, SchemaName, Set, ShowCreateObject, ShowStatementOptions, Statement, TableFactor,
    TableObject, Use, Value, Visit, Visitor,
};
use sqlparser::dialect::{Dialect, GenericDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::domain::query_id::QueryId;

mod keywords;
mod names;

use keywords::*;
use names::*;

/// Deeper nesting of parentheses and brackets is not parsed: sqlparser's recursion limit (50, which
/// also keeps its unprotected recursion within a 2 MiB stack) stops well before.
pub const MAX_NESTING: usize = 50;

/// More operators than this (symbols other than `,` `.` `;` and brackets; `AND`, `OR`, `UNION`, ...)
/// are not parsed.
pub const MAX_OPERATORS: usize = 10_000;

/// The session's catalog and schema, from `X-Trino-Catalog` and `X-Trino-Schema`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defaults<'a> {
    pub catalog: Option<&'a str>,
    pub schema: Option<&'a str>,
}

/// How much work one statement may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// SQL longer than this is not parsed: its kind comes from a scan of this many leading bytes.
    pub max_bytes: usize,
}

impl Default for Limits {
    /// 256 KiB: about 20 ms for a 256 KiB `IN` list in a release build (a 2 KB query takes 0.3 ms).
    fn default() -> Limits {
        Limits { max_bytes: 256 * 1024 }
    }
}

/// What a statement is and what it names. Every list is sorted and free of duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementFacts {
    pub kind: StatementKind,
    /// Catalogs the statement touches.
    pub catalogs: Vec<String>,
    /// `catalog.schema`.
    pub schemas: Vec<String>,
    /// `catalog.schema.table`: every table read or written.
    pub tables: Vec<String>,
    /// Tables read (sources of queries; tables described or shown).
    pub tables_read: Vec<String>,
    /// Tables written: targets of INSERT, CTAS, UPDATE, DELETE, MERGE, DDL.
    pub tables_written: Vec<String>,
    /// Well-formed query ids the statement names (`CALL system.runtime.kill_query(...)`).
    pub query_ids: Vec<String>,
    /// `START TRANSACTION`.
    pub starts_transaction: bool,
}

/// The kind of a statement, as routing rules name it ([`StatementKind::as_str`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// A query: `SELECT`, `WITH`, `VALUES`, `TABLE`.
    Select,
    Insert,
    CreateTableAs,
    Update,
    Delete,
    Merge,
    /// `CREATE`/`ALTER`/`DROP` (tables without `AS`, views, schemas, ...), `COMMENT`, `GRANT`,
    /// `REVOKE`, `TRUNCATE`.
    Ddl,
    /// `SHOW ...`, `DESCRIBE ...`.
    ShowDescribe,
    Explain,
    ExplainAnalyze,
    SetSession,
    ResetSession,
    Use,
    Call,
    /// `EXECUTE name`: the statement is in `X-Trino-Prepared-Statement` (see [`analyze_execute`]).
    /// `EXECUTE IMMEDIATE '...'` is analyzed as the statement it carries.
    Execute,
    Prepare,
    Deallocate,
    /// `START TRANSACTION`, `COMMIT`, `ROLLBACK`.
    TransactionControl,
    /// A statement of another kind (`SET ROLE`, `SET TIME ZONE`, `ANALYZE`, `REFRESH MATERIALIZED
    /// VIEW`, ...).
    Other,
    /// Not a statement the router can read.
    #[default]
    Unknown,
}

impl StatementKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::CreateTableAs => "create_table_as",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::Ddl => "ddl",
            StatementKind::ShowDescribe => "show_describe",
            StatementKind::Explain => "explain",
            StatementKind::ExplainAnalyze => "explain_analyze",
            StatementKind::SetSession => "set_session",
            StatementKind::ResetSession => "reset_session",
            StatementKind::Use => "use",
            StatementKind::Call => "call",
            StatementKind::Execute => "execute",
            StatementKind::Prepare => "prepare",
            StatementKind::Deallocate => "deallocate",
            StatementKind::TransactionControl => "transaction_control",
            StatementKind::Other => "other",
            StatementKind::Unknown => "unknown",
        }
    }
}

/// The facts of one SQL statement. Never panics; input that is not one readable statement gives
/// [`StatementKind::Unknown`] (or the kind its leading keywords name) and no names.
pub fn analyze(sql: &str, defaults: &Defaults<'_>, limits: &Limits) -> StatementFacts {
    analyze_in(sql, &Scope::new(defaults), limits, false)
}

/// The facts of the prepared statement `name` that `EXECUTE name` runs, from the request's
/// `X-Trino-Prepared-Statement` header (`name1=urlencoded-sql1,name2=...`, form-encoded as Trino's
/// clients write it). `None` when the header does not hold `name` (matched exactly, else ignoring
/// ASCII case) or its SQL is not valid UTF-8.
pub fn analyze_execute(
    prepared_statement_header: &str,
    name: &str,
    defaults: &Defaults<'_>,
    limits: &Limits,
) -> Option<StatementFacts> {
    let entries = || {
        prepared_statement_header.split(',').filter_map(|entry| {
            let (key, sql) = entry.split_once('=')?;
            Some((form_decode(key.trim())?, sql.trim()))
        })
    };
    let sql = entries()
        .find(|(key, _)| key == name)
        .or_else(|| entries().find(|(key, _)| key.eq_ignore_ascii_case(name)))
        .map(|(_, sql)| sql)?;
    Some(analyze(&form_decode(sql)?, defaults, limits))
}

/// The prepared-statement name of `EXECUTE name [USING ...]`, as [`analyze_execute`] wants it: an
/// unquoted name as written, a quoted one unquoted. `None` for any other statement, including
/// `EXECUTE IMMEDIATE`.
pub fn execute_name(sql: &str) -> Option<String> {
    let mut lexemes = Lexer::new(sql);
    if !matches!(lexemes.next(), Some(Lex::Word(w)) if w.eq_ignore_ascii_case("EXECUTE")) {
        return None;
    }
    match lexemes.next()? {
        Lex::Word(w) if w.eq_ignore_ascii_case("IMMEDIATE") => None,
        Lex::Word(w) => Some(w.to_owned()),
        // `""` is no name: Trino refuses zero-length delimited identifiers.
        Lex::Quoted(q) if !q.is_empty() => Some(q.replace("\"\"", "\"")),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space.
fn form_decode(text: &str) -> Option<String> {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8().ok().map(|s| s.into_owned())
}

fn analyze_in(sql: &str, scope: &Scope, limits: &Limits, nested: bool) -> StatementFacts {
    let mut cursor = Cursor::new(floor_boundary(sql, limits.max_bytes));
    let Some(first) = first_keyword(&mut cursor) else {
        // Not a statement Trino runs: not worth parsing.
        return StatementFacts::default();
    };
    if sql.len() <= limits.max_bytes
        && prescan(sql)
        && let Some(facts) = parse(sql, scope, limits, nested)
    {
        return facts;
    }
    let mut facts = Collector::new(scope);
    let kind = fallback_kind(first, &mut cursor, &mut facts);
    facts.finish(kind)
}

/// What placement needs of a statement when no rule reads its facts, from its first keywords alone:
/// whether it starts a transaction. `None` when only [`analyze`] can tell, because the statement may
/// name queries (`kill_query`) or runs a prepared statement (`EXECUTE`).
pub fn quick_placement(sql: &str, limits: &Limits) -> Option<bool> {
    if sql.as_bytes().windows(KILL_QUERY.len()).any(|w| w.eq_ignore_ascii_case(KILL_QUERY)) {
        return None;
    }
    let mut cursor = Cursor::new(floor_boundary(sql, limits.max_bytes));
    match first_keyword(&mut cursor) {
        Some("EXECUTE") => None,
        Some("START") => Some(cursor.eat("TRANSACTION")),
        _ => Some(false),
    }
}

/// The only procedure whose arguments name queries.
const KILL_QUERY: &[u8] = b"kill_query";

fn floor_boundary(sql: &str, max: usize) -> &str {
    let mut end = max.min(sql.len());
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    &sql[..end]
}

// ---------------------------------------------------------------------------------------------------
// Parsing

/// sqlparser's `GenericDialect`, plus what Trino has and it lacks. Parsing code that asks "is this the
/// generic dialect?" gets yes.
#[derive(Debug)]
struct TrinoDialect;

macro_rules! generic_flags {
    ($($flag:ident)*) => {
        $(fn $flag(&self) -> bool { GenericDialect.$flag() })*
    };
}

impl Dialect for TrinoDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<GenericDialect>()
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        GenericDialect.is_identifier_part(ch)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_delimited_identifier_start(ch)
    }
    fn supports_lambda_functions(&self) -> bool {
        true
    }
    fn supports_execute_immediate(&self) -> bool {
        true
    }
    fn supports_table_versioning(&self) -> bool {
        true
    }
    // Every flag GenericDialect sets in sqlparser 0.64.
    generic_flags! {
        supports_map_typedef_with_parentheses supports_unicode_string_literal
        supports_literal_prefix_in_qualified_name supports_partition_by_after_order_by
        supports_array_join_syntax supports_group_by_expr supports_group_by_with_modifier
        supports_left_associative_joins_without_parens supports_connect_by supports_match_recognize
        supports_pipe_operator supports_start_transaction_modifier
        supports_window_function_null_treatment_arg supports_dictionary_syntax
        supports_window_clause_named_window_reference supports_parenthesized_set_variables
        supports_select_wildcard_except support_map_literal_syntax allow_extract_custom
        allow_extract_single_quotes supports_extract_comma_syntax supports_create_view_comment_syntax
        supports_parens_around_table_factor supports_values_as_table_factor
        supports_create_index_with_clause supports_sql_option_without_value
        supports_explain_with_utility_options supports_exclude_constraint supports_limit_comma
        supports_update_order_by supports_from_first_select supports_projection_trailing_commas
        supports_asc_desc_in_column_definition supports_try_convert supports_bitwise_shift_operators
        supports_singular_value_keyword supports_comma_join_constraint supports_tilde_like_match_operator
        supports_aggregate_order_by_with_empty_args supports_in_table_expression
        supports_comparison_in_between_low_bound supports_comment_on supports_load_extension
        supports_named_fn_args_with_assignment_operator supports_struct_literal
        supports_empty_projections supports_nested_comments supports_multiline_comment_hints
        supports_copy_from_stdin_data supports_user_host_grantee supports_string_escape_constant
        supports_array_typedef_with_brackets supports_match_against supports_set_names
        supports_comma_separated_set_assignments supports_filter_during_aggregation
        supports_select_wildcard_exclude supports_data_type_signed_suffix
        supports_data_type_zerofill_suffix supports_interval_options supports_quote_delimited_string
        supports_select_wildcard_replace supports_select_wildcard_ilike supports_select_wildcard_rename
        supports_optimize_table supports_install supports_detach supports_prewhere supports_with_fill
        supports_limit_by supports_interpolate supports_settings supports_table_partitions
        supports_table_inheritance_markers supports_select_format supports_comment_optimizer_hint
        supports_constraint_keyword_without_name supports_key_column_option supports_comma_separated_trim
        supports_cte_without_as supports_select_item_multi_column_alias supports_xml_expressions
        supports_aliased_function_args supports_alter_column_position supports_add_column_if_not_exists
    }
}

/// Parses `sql` as exactly one statement; `None` when sqlparser cannot.
fn parse(sql: &str, scope: &Scope, limits: &Limits, nested: bool) -> Option<StatementFacts> {
    let mut tokens = Tokenizer::new(&TrinoDialect, sql).tokenize_with_location().ok()?;
    respell_time_travel(&mut tokens);
    let statements = Parser::new(&TrinoDialect).with_tokens_with_locations(tokens).parse_statements().ok()?;
    Some(match statements.as_slice() {
        [statement] => statement_facts(statement, scope, limits, nested),
        // Nothing but comments, or several statements: Trino runs neither.
        _ => StatementFacts::default(),
    })
}

/// `FOR VERSION AS OF x` and `FOR TIMESTAMP AS OF x` (Trino) → `FOR SYSTEM_TIME AS OF x` (sqlparser).
fn respell_time_travel(tokens: &mut [TokenWithSpan]) {
    let is = |t: &TokenWithSpan, k: Keyword| matches!(&t.token, Token::Word(w) if w.keyword == k && w.quote_style.is_none());
    // The last three tokens that are not whitespace or comments.
    let mut last: [Option<usize>; 3] = [None; 3];
    for i in 0..tokens.len() {
        if matches!(tokens[i].token, Token::Whitespace(_)) {
            continue;
        }
        if let [Some(f), Some(v), Some(a)] = last
            && is(&tokens[f], Keyword::FOR)
            && (is(&tokens[v], Keyword::VERSION) || is(&tokens[v], Keyword::TIMESTAMP))
            && is(&tokens[a], Keyword::AS)
            && is(&tokens[i], Keyword::OF)
        {
            tokens[v].token = Token::make_keyword("SYSTEM_TIME");
        }
        last = [last[1], last[2], Some(i)];
    }
}

fn statement_facts(statement: &Statement, scope: &Scope, limits: &Limits, nested: bool) -> StatementFacts {
    match statement {
        Statement::Explain { analyze, statement, .. } => {
            let mut facts = statement_facts(statement, scope, limits, nested);
            if *analyze {
                facts.kind = StatementKind::ExplainAnalyze;
            } else {
                // Planned, not run: nothing is written, killed or begun.
                facts.kind = StatementKind::Explain;
                facts.tables_written.clear();
                facts.query_ids.clear();
                facts.starts_transaction = false;
            }
            facts
        }
        Statement::Execute { immediate: true, parameters, .. } => match parameters.as_slice() {
            [Expr::Value(v)] if !nested => match &v.value {
                Value::SingleQuotedString(sql) => analyze_in(sql, scope, limits, true),
                _ => kind_only(StatementKind::Execute),
            },
            _ => kind_only(StatementKind::Execute),
        },
        _ => {
            let mut facts = Collector::new(scope);
            let (kind, target) = facts.describe(statement);
            facts.sources(statement, target);
            facts.finish(kind)
        }
    }
}

fn kind_only(kind: StatementKind) -> StatementFacts {
    StatementFacts { kind, ..StatementFacts::default() }
}

#[cfg(test)]
mod tests;
