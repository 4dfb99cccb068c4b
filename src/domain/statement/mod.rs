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
    let mut facts = Facts::new(scope);
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
            let mut facts = Facts::new(scope);
            let (kind, target) = facts.describe(statement);
            facts.sources(statement, target);
            facts.finish(kind)
        }
    }
}

fn kind_only(kind: StatementKind) -> StatementFacts {
    StatementFacts { kind, ..StatementFacts::default() }
}

// ---------------------------------------------------------------------------------------------------
// Names

/// The session's catalog and schema, normalized.
struct Scope {
    catalog: Option<String>,
    schema: Option<String>,
}

impl Scope {
    fn new(defaults: &Defaults<'_>) -> Scope {
        let norm = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_lowercase);
        Scope { catalog: norm(defaults.catalog), schema: norm(defaults.schema) }
    }
}

fn ident(ident: &Ident) -> String {
    match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    }
}

/// The normalized parts of a name; `None` when a part is not an identifier.
fn parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0.iter().map(|part| part.as_ident().map(ident)).collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// The facts gathered so far.
struct Facts<'s> {
    scope: &'s Scope,
    catalogs: BTreeSet<String>,
    schemas: BTreeSet<String>,
    read: BTreeSet<String>,
    written: BTreeSet<String>,
    query_ids: BTreeSet<String>,
    starts_transaction: bool,
}

impl<'s> Facts<'s> {
    fn new(scope: &'s Scope) -> Facts<'s> {
        Facts {
            scope,
            catalogs: BTreeSet::new(),
            schemas: BTreeSet::new(),
            read: BTreeSet::new(),
            written: BTreeSet::new(),
            query_ids: BTreeSet::new(),
            starts_transaction: false,
        }
    }

    fn finish(self, kind: StatementKind) -> StatementFacts {
        StatementFacts {
            kind,
            catalogs: self.catalogs.into_iter().collect(),
            schemas: self.schemas.into_iter().collect(),
            tables: self.read.union(&self.written).cloned().collect(),
            tables_read: self.read.into_iter().collect(),
            tables_written: self.written.into_iter().collect(),
            query_ids: self.query_ids.into_iter().collect(),
            starts_transaction: self.starts_transaction,
        }
    }

    fn catalog(&mut self, catalog: &str) {
        if !self.catalogs.contains(catalog) {
            self.catalogs.insert(catalog.to_owned());
        }
    }

    /// Records what a `catalog`, `schema` pair names; each may be unknown.
    fn catalog_schema(&mut self, catalog: Option<&str>, schema: Option<&str>) -> Option<String> {
        let catalog = catalog?;
        self.catalog(catalog);
        let qualified = format!("{catalog}.{}", schema?);
        self.schemas.insert(qualified.clone());
        Some(qualified)
    }

    /// A table, view or routine name of 1 to 3 parts; a table is recorded unless `access` is `None`.
    fn object(&mut self, parts: &[String], access: Option<Access>) {
        let scope = self.scope;
        let (catalog, schema, table) = match parts {
            [t] => (scope.catalog.as_deref(), scope.schema.as_deref(), t),
            [s, t] => (scope.catalog.as_deref(), Some(s.as_str()), t),
            [c, s, t] => (Some(c.as_str()), Some(s.as_str()), t),
            _ => return,
        };
        let (Some(schema), Some(access)) = (self.catalog_schema(catalog, schema), access) else {
            return;
        };
        let table = format!("{schema}.{table}");
        match access {
            Access::Read => self.read.insert(table),
            Access::Write => self.written.insert(table),
        };
    }

    fn table(&mut self, name: &ObjectName, access: Access) {
        if let Some(parts) = parts(name) {
            self.object(&parts, Some(access));
        }
    }

    /// A schema name of 1 or 2 parts.
    fn schema_parts(&mut self, parts: &[String]) {
        match parts {
            [s] => self.catalog_schema(self.scope.catalog.as_deref(), Some(s)),
            [c, s] => self.catalog_schema(Some(c), Some(s)),
            _ => None,
        };
    }

    fn schema(&mut self, name: &ObjectName) {
        if let Some(parts) = parts(name) {
            self.schema_parts(&parts);
        }
    }

    /// The kind of `statement`; records the names it defines or writes, and returns the table
    /// factor that is the statement's target (UPDATE, DELETE, MERGE), which is written, not read.
    fn describe<'a>(&mut self, statement: &'a Statement) -> (StatementKind, Option<&'a ObjectName>) {
        use StatementKind as K;
        let kind = match statement {
            Statement::Query(_) => K::Select,
            Statement::Insert(insert) => {
                if let TableObject::TableName(name) = &insert.table {
                    self.table(name, Access::Write);
                }
                K::Insert
            }
            Statement::CreateTable(create) => {
                self.table(&create.name, Access::Write);
                match &create.like {
                    Some(CreateTableLikeKind::Parenthesized(like) | CreateTableLikeKind::Plain(like)) => {
                        self.table(&like.name, Access::Read)
                    }
                    None => {}
                }
                if let Some(clone) = &create.clone {
                    self.table(clone, Access::Read);
                }
                if create.query.is_some() { K::CreateTableAs } else { K::Ddl }
            }
            Statement::Update(update) => {
                let target = table_name(&update.table.relation);
                self.write_target(target);
                return (K::Update, target);
            }
            Statement::Delete(delete) => {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
                let target = from.first().and_then(|t| table_name(&t.relation));
                self.write_target(target);
                return (K::Delete, target);
            }
            Statement::Merge(merge) => {
                let target = table_name(&merge.table);
                self.write_target(target);
                return (K::Merge, target);
            }
            Statement::CreateView(view) => {
                self.table(&view.name, Access::Write);
                K::Ddl
            }
            Statement::AlterTable(alter) => {
                self.table(&alter.name, Access::Write);
                for operation in &alter.operations {
                    if let AlterTableOperation::RenameTable {
                        table_name: RenameTableNameKind::To(name) | RenameTableNameKind::As(name),
                    } = operation
                    {
                        self.table(name, Access::Write);
                    }
                }
                K::Ddl
            }
            Statement::AlterView(alter) => {
                self.table(&alter.name, Access::Write);
                K::Ddl
            }
            Statement::AlterSchema(alter) => {
                self.schema(&alter.name);
                K::Ddl
            }
            Statement::CreateSchema { schema_name, .. } => {
                if let SchemaName::Simple(name) | SchemaName::NamedAuthorization(name, _) = schema_name {
                    self.schema(name);
                }
                K::Ddl
            }
            Statement::Drop { object_type, names, .. } => {
                for name in names {
                    match object_type {
                        ObjectType::Table | ObjectType::View | ObjectType::MaterializedView => {
                            self.table(name, Access::Write)
                        }
                        ObjectType::Schema | ObjectType::Database => self.schema(name),
                        _ => {}
                    }
                }
                K::Ddl
            }
            Statement::Truncate(truncate) => {
                for target in &truncate.table_names {
                    self.table(&target.name, Access::Write);
                }
                K::Ddl
            }
            Statement::Comment { object_type, object_name, .. } => {
                match (object_type, parts(object_name)) {
                    (
                        CommentObject::Table | CommentObject::View | CommentObject::MaterializedView,
                        Some(p),
                    ) => self.object(&p, Some(Access::Write)),
                    (CommentObject::Column, Some(p)) if p.len() > 1 => {
                        self.object(&p[..p.len() - 1], Some(Access::Write))
                    }
                    (CommentObject::Schema, Some(p)) => self.schema_parts(&p),
                    _ => {}
                }
                K::Ddl
            }
            Statement::Grant(grant) => {
                self.grant_objects(grant.objects.as_ref());
                K::Ddl
            }
            Statement::Revoke(revoke) => {
                self.grant_objects(revoke.objects.as_ref());
                K::Ddl
            }
            Statement::CreateIndex(_)
            | Statement::CreateRole(_)
            | Statement::CreateFunction(_)
            | Statement::DropFunction(_)
            | Statement::CreateDatabase { .. }
            | Statement::CreateSequence { .. }
            | Statement::CreateType { .. }
            | Statement::AlterRole { .. }
            | Statement::RenameTable(_) => K::Ddl,
            Statement::RefreshMaterializedView(refresh) => {
                self.table(&refresh.name, Access::Write);
                K::Other
            }
            Statement::Analyze(analyze) => {
                if let Some(name) = &analyze.table_name {
                    self.table(name, Access::Read);
                }
                K::Other
            }
            Statement::ExplainTable { table_name, .. } => {
                self.table(table_name, Access::Read);
                K::ShowDescribe
            }
            Statement::ShowCreate { obj_type, obj_name } => {
                if matches!(obj_type, ShowCreateObject::Table | ShowCreateObject::View) {
                    self.table(obj_name, Access::Read);
                }
                K::ShowDescribe
            }
            Statement::ShowColumns { show_options, .. } => {
                if let Some(name) = shown_in(show_options) {
                    self.table(name, Access::Read);
                }
                K::ShowDescribe
            }
            Statement::ShowTables { show_options, .. } | Statement::ShowViews { show_options, .. } => {
                match shown_in(show_options) {
                    Some(name) => self.schema(name),
                    None => {
                        let scope = self.scope;
                        self.catalog_schema(scope.catalog.as_deref(), scope.schema.as_deref());
                    }
                }
                K::ShowDescribe
            }
            Statement::ShowSchemas { show_options, .. } => {
                match shown_in(show_options) {
                    Some(name) => {
                        if let Some([catalog]) = parts(name).as_deref() {
                            self.catalog(catalog);
                        }
                    }
                    None => {
                        if let Some(catalog) = self.scope.catalog.as_deref() {
                            self.catalog(catalog);
                        }
                    }
                }
                K::ShowDescribe
            }
            Statement::ShowVariable { variable } => {
                // sqlparser reads `SHOW STATS FOR t` and `SHOW GRANTS ON [TABLE] t` as one variable.
                let words: Vec<String> = variable.iter().map(ident).collect();
                let is = |i: usize, word: &str| words.get(i).is_some_and(|w| w == word);
                let name = if is(0, "stats") && is(1, "for") {
                    2
                } else if is(0, "grants") && is(1, "on") {
                    2 + usize::from(is(2, "table"))
                } else {
                    words.len()
                };
                if name < words.len() {
                    self.object(&words[name..], Some(Access::Read));
                }
                K::ShowDescribe
            }
            Statement::ShowFunctions { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowCollation { .. }
            | Statement::ShowObjects(_)
            | Statement::ShowCharset(_)
            | Statement::ShowProcessList { .. } => K::ShowDescribe,
            Statement::Set(Set::SingleAssignment {
                scope: Some(ContextModifier::Session), variable, ..
            }) => {
                if let Some([catalog, _]) = parts(variable).as_deref() {
                    self.catalog(catalog);
                }
                K::SetSession
            }
            Statement::Set(_) | Statement::Reset(_) => K::Other,
            Statement::Use(target) => {
                match target {
                    Use::Object(name) | Use::Schema(name) | Use::Database(name) => self.schema(name),
                    Use::Catalog(name) => {
                        if let Some([catalog]) = parts(name).as_deref() {
                            self.catalog(catalog);
                        }
                    }
                    _ => {}
                }
                K::Use
            }
            Statement::Call(function) => {
                if let Some(name) = parts(&function.name) {
                    self.object(&name, None);
                    if name.last().is_some_and(|n| n == "kill_query") {
                        self.kill_query_ids(&function.args);
                    }
                }
                K::Call
            }
            Statement::Execute { .. } => K::Execute,
            Statement::Prepare { .. } => K::Prepare,
            Statement::Deallocate { .. } => K::Deallocate,
            Statement::StartTransaction { .. } => {
                self.starts_transaction = true;
                K::TransactionControl
            }
            Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => K::TransactionControl,
            _ => K::Other,
        };
        (kind, None)
    }

    fn write_target(&mut self, target: Option<&ObjectName>) {
        if let Some(name) = target {
            self.table(name, Access::Write);
        }
    }

    fn grant_objects(&mut self, objects: Option<&GrantObjects>) {
        match objects {
            Some(GrantObjects::Tables(names) | GrantObjects::Views(names)) => {
                for name in names {
                    self.table(name, Access::Write);
                }
            }
            Some(GrantObjects::Schemas(names)) => {
                for name in names {
                    self.schema(name);
                }
            }
            _ => {}
        }
    }

    /// `kill_query(query_id => '...')` or `kill_query('...')`.
    fn kill_query_ids(&mut self, args: &FunctionArguments) {
        let FunctionArguments::List(list) = args else { return };
        let literal = |arg: &FunctionArgExpr| match arg {
            FunctionArgExpr::Expr(Expr::Value(v)) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        };
        let id = list.args.iter().find_map(|arg| match arg {
            FunctionArg::Named { name, arg, .. } if ident(name) == "query_id" => literal(arg),
            _ => None,
        });
        let id = id.or_else(|| match list.args.first() {
            Some(FunctionArg::Unnamed(arg)) => literal(arg),
            _ => None,
        });
        if let Some(id) = id.filter(|id| QueryId::parse(id).is_ok()) {
            self.query_ids.insert(id);
        }
    }

    /// Records the tables `statement` reads: every table factor that is not a CTE, a table
    /// function, or (once) the statement's own `target`; and the catalogs of table functions.
    fn sources(&mut self, statement: &Statement, target: Option<&ObjectName>) {
        let mut sources = Sources::default();
        let _ = statement.visit(&mut sources);
        let mut skip_target = target.and_then(parts);
        for name in &sources.tables {
            if skip_target.as_ref() == Some(name) {
                skip_target = None;
                continue;
            }
            if let [single] = name.as_slice()
                && sources.ctes.contains(single)
            {
                continue;
            }
            self.object(name, Some(Access::Read));
        }
        for name in &sources.functions {
            self.object(name, None);
        }
    }
}

fn table_name(factor: &TableFactor) -> Option<&ObjectName> {
    match factor {
        TableFactor::Table { name, args: None, .. } => Some(name),
        _ => None,
    }
}

fn shown_in(options: &ShowStatementOptions) -> Option<&ObjectName> {
    options.show_in.as_ref().and_then(|i| i.parent_name.as_ref())
}

/// Table factors, qualified table functions and CTE names, in visiting order.
#[derive(Default)]
struct Sources {
    tables: Vec<Vec<String>>,
    functions: Vec<Vec<String>>,
    ctes: BTreeSet<String>,
}

impl Visitor for Sources {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            self.ctes.extend(with.cte_tables.iter().map(|cte| ident(&cte.alias.name)));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let Some(name) = table_name(factor).and_then(parts) {
            self.tables.push(name);
        } else if let TableFactor::TableFunction { expr: Expr::Function(function), .. } = factor
            && let Some(name) = parts(&function.name)
            && name.len() > 1
        {
            // A connector's table function (`TABLE(pg.system.query(...))`): not a table, but its
            // catalog counts. A 1-part name is a built-in, in no catalog of the session.
            self.functions.push(name);
        }
        ControlFlow::Continue(())
    }
}

// ---------------------------------------------------------------------------------------------------
// The cheap scan: bounds the parser's work, and reads what the parser cannot.

/// Whether `sql` is worth parsing: no control characters, no unterminated quote or comment, no
/// unopened parenthesis, nesting (of brackets and of `EXPLAIN`s) and operator count within bounds.
fn prescan(sql: &str) -> bool {
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
fn is_operator_word(word: &str) -> bool {
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
const STATEMENT_WORDS: [&str; 32] = [
    "SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "ALTER", "DROP",
    "TRUNCATE", "COMMENT", "GRANT", "REVOKE", "DENY", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "SET", "RESET",
    "USE", "CALL", "EXECUTE", "PREPARE", "DEALLOCATE", "START", "COMMIT", "ROLLBACK", "ANALYZE", "REFRESH",
];

/// The first word of a statement, upper-cased, when a Trino statement can start with it (after
/// parentheses, only a query can).
fn first_keyword(c: &mut Cursor<'_>) -> Option<&'static str> {
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
fn fallback_kind(first: &str, c: &mut Cursor<'_>, facts: &mut Facts<'_>) -> StatementKind {
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
struct Cursor<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Option<Lex<'a>>>,
}

impl<'a> Cursor<'a> {
    fn new(sql: &'a str) -> Cursor<'a> {
        Cursor { lexer: Lexer::new(sql), peeked: None }
    }

    fn peek(&mut self) -> Option<Lex<'a>> {
        *self.peeked.get_or_insert_with(|| self.lexer.next())
    }

    fn bump(&mut self) -> Option<Lex<'a>> {
        self.peeked.take().unwrap_or_else(|| self.lexer.next())
    }

    fn eat(&mut self, keyword: &str) -> bool {
        let hit = matches!(self.peek(), Some(Lex::Word(w)) if w.eq_ignore_ascii_case(keyword));
        if hit {
            self.bump();
        }
        hit
    }

    fn eat_punct(&mut self, punct: u8) -> bool {
        let hit = self.peek() == Some(Lex::Punct(punct));
        if hit {
            self.bump();
        }
        hit
    }

    fn if_exists(&mut self) {
        if self.eat("IF") {
            self.eat("NOT");
            self.eat("EXISTS");
        }
    }

    /// A name of 1 to 3 parts, normalized.
    fn name(&mut self) -> Option<Vec<String>> {
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

    fn table(&mut self, facts: &mut Facts<'_>, access: Access) {
        if let Some(name) = self.name() {
            facts.object(&name, Some(access));
        }
    }

    /// After `CREATE`, `ALTER` or `DROP` (not followed by `TABLE`): a view or a schema.
    fn ddl_object(&mut self, facts: &mut Facts<'_>) {
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
    fn any_top_level(&mut self, keyword: &str) -> bool {
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
enum Lex<'a> {
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
struct Lexer<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Lexer<'a> {
        Lexer { text, at: 0 }
    }

    /// The index of the quote closing one opened before `from` (a doubled quote is an escape).
    fn closing(&self, from: usize, quote: u8) -> Option<usize> {
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

    fn bad(&mut self) -> Option<Lex<'a>> {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use StatementKind as K;

    /// Expected names, as written in a table row.
    type Names = &'static [&'static str];

    const HIVE_WEB: Defaults<'static> = Defaults { catalog: Some("hive"), schema: Some("web") };
    const LIMITS: Limits = Limits { max_bytes: 256 * 1024 };

    /// The statements of [`trino_statements`] that sqlparser cannot read: the leading keywords give
    /// their kind (and the target of the simple forms).
    const PARSER_GAPS: &[&str] = &[
        "CREATE TABLE t (LIKE s INCLUDING PROPERTIES)",
        "ALTER TABLE iceberg.s.t EXECUTE optimize(file_size_threshold => '128MB')",
        "ALTER TABLE t EXECUTE expire_snapshots(retention_threshold => '7d')",
        "ALTER TABLE hive.s.t SET PROPERTIES format = 'ORC'",
        "SHOW CREATE SCHEMA hive.web",
        "DESCRIBE INPUT my_select",
        "DESCRIBE OUTPUT my_select",
        "RESET SESSION query_max_run_time",
        "RESET SESSION iceberg.compression_codec",
        "PREPARE my_select FROM SELECT * FROM tpch.tiny.nation WHERE regionkey = ?",
        "ANALYZE hive.web.page_views WITH (partitions = ARRAY[ARRAY['2024-01-01']])",
        "VALUES 1, 2, 3",
        "TABLE hive.web.page_views",
        "SELECT JSON_QUERY(j, 'lax $.a' WITH ARRAY WRAPPER) FROM t",
        "CREATE OR REPLACE VIEW v SECURITY INVOKER AS SELECT * FROM tpch.tiny.nation",
        "WITH FUNCTION hello(s varchar) RETURNS varchar RETURN concat('Hello ', s) SELECT hello(name) FROM t",
    ];

    fn facts(sql: &str) -> StatementFacts {
        analyze(sql, &HIVE_WEB, &LIMITS)
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Kind, tables and catalogs of real-world Trino statements, with catalog `hive` and schema `web`
    /// as the session's defaults.
    #[test]
    fn trino_statements() {
        #[rustfmt::skip]
        let cases: &[(&str, StatementKind, Names, Names)] = &[
            // Queries, names, CTEs, joins.
            ("SELECT * FROM hive.web.page_views WHERE dt = DATE '2024-01-01'", K::Select, &["hive.web.page_views"], &["hive"]),
            ("select count(*) from orders", K::Select, &["hive.web.orders"], &["hive"]),
            ("select * from Hive.Web.Orders", K::Select, &["hive.web.orders"], &["hive"]),
            ("SELECT 1", K::Select, &[], &[]),
            ("SELECT 1;", K::Select, &[], &[]),
            ("SELECT o.orderkey, c.name FROM tpch.sf1.orders o JOIN tpch.sf1.customer c ON o.custkey = c.custkey", K::Select, &["tpch.sf1.customer", "tpch.sf1.orders"], &["tpch"]),
            ("SELECT * FROM sf1.lineitem LEFT JOIN nation USING (nationkey)", K::Select, &["hive.sf1.lineitem", "hive.web.nation"], &["hive"]),
            ("SELECT * FROM hive.web.a, iceberg.web.b WHERE a.id = b.id", K::Select, &["hive.web.a", "iceberg.web.b"], &["hive", "iceberg"]),
            ("SELECT * FROM t1 JOIN t2 ON t1.id = t2.id FULL OUTER JOIN t1 USING (id)", K::Select, &["hive.web.t1", "hive.web.t2"], &["hive"]),
            ("WITH recent AS (SELECT * FROM iceberg.sales.orders WHERE ts > now() - INTERVAL '1' DAY) SELECT count(*) FROM recent", K::Select, &["iceberg.sales.orders"], &["iceberg"]),
            ("WITH a AS (SELECT 1 x), b AS (SELECT x FROM a) SELECT * FROM b JOIN hive.s.t ON b.x = t.id", K::Select, &["hive.s.t"], &["hive"]),
            ("WITH orders AS (SELECT 1 id) SELECT * FROM orders JOIN tpch.tiny.orders o ON o.orderkey = orders.id", K::Select, &["tpch.tiny.orders"], &["tpch"]),
            ("SELECT * FROM t WHERE x IN (SELECT id FROM hive.s.u) AND EXISTS (SELECT 1 FROM hive.s.v WHERE v.id = t.id)", K::Select, &["hive.s.u", "hive.s.v", "hive.web.t"], &["hive"]),
            ("SELECT * FROM t1 LEFT JOIN LATERAL (SELECT * FROM t2 WHERE t2.id = t1.id) x ON true", K::Select, &["hive.web.t1", "hive.web.t2"], &["hive"]),
            ("SELECT * FROM t1 UNION ALL SELECT * FROM t2 EXCEPT SELECT * FROM t3", K::Select, &["hive.web.t1", "hive.web.t2", "hive.web.t3"], &["hive"]),
            ("(SELECT a FROM t1) UNION (SELECT a FROM t2)", K::Select, &["hive.web.t1", "hive.web.t2"], &["hive"]),
            ("SELECT * FROM system.runtime.queries WHERE state = 'RUNNING'", K::Select, &["system.runtime.queries"], &["system"]),
            // UNNEST, lambdas, table functions, Trino expressions.
            ("SELECT s.name, x.n FROM students s CROSS JOIN UNNEST(s.scores) AS x(n)", K::Select, &["hive.web.students"], &["hive"]),
            ("SELECT * FROM UNNEST(ARRAY[1,2,3]) WITH ORDINALITY AS t(v, i)", K::Select, &[], &[]),
            ("SELECT transform(ARRAY[1, 2, 3], x -> x + 1)", K::Select, &[], &[]),
            ("SELECT reduce(ARRAY[5, 20, 50], 0, (s, x) -> s + x, s -> s)", K::Select, &[], &[]),
            ("SELECT filter(items, i -> i.price > 10), zip_with(a, b, (x, y) -> x * y) FROM iceberg.shop.carts", K::Select, &["iceberg.shop.carts"], &["iceberg"]),
            ("SELECT * FROM TABLE(system.query(query => 'SELECT 1'))", K::Select, &[], &["hive"]),
            ("SELECT * FROM TABLE(pg.system.query(query => 'SELECT * FROM x'))", K::Select, &[], &["pg"]),
            ("SELECT * FROM TABLE(sequence(start => 1, stop => 10))", K::Select, &[], &[]),
            ("SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS t(id, name)", K::Select, &[], &[]),
            ("SELECT CAST(ROW(1, 2.0) AS ROW(x BIGINT, y DOUBLE)), MAP(ARRAY['a'], ARRAY[1]), ARRAY[1, 2] || ARRAY[3]", K::Select, &[], &[]),
            ("SELECT m['key'], a[1], try(CAST(x AS double)), x IS DISTINCT FROM y FROM t", K::Select, &["hive.web.t"], &["hive"]),
            ("SELECT approx_percentile(x, 0.5) FILTER (WHERE x > 0) FROM t", K::Select, &["hive.web.t"], &["hive"]),
            ("SELECT a, b, sum(c) FROM t GROUP BY GROUPING SETS ((a, b), (a), ())", K::Select, &["hive.web.t"], &["hive"]),
            ("SELECT listagg(x, ',') WITHIN GROUP (ORDER BY x) FROM t", K::Select, &["hive.web.t"], &["hive"]),
            ("SELECT * FROM t ORDER BY x OFFSET 10 ROWS FETCH FIRST 10 ROWS ONLY", K::Select, &["hive.web.t"], &["hive"]),
            ("SELECT * FROM t TABLESAMPLE BERNOULLI (10)", K::Select, &["hive.web.t"], &["hive"]),
            ("SELECT json_extract_scalar(payload, '$.user.id') FROM kafka.default.raw", K::Select, &["kafka.default.raw"], &["kafka"]),
            ("SELECT format_datetime(ts AT TIME ZONE 'UTC', 'yyyy-MM-dd'), U&'\\2603', X'65683F' FROM t", K::Select, &["hive.web.t"], &["hive"]),
            ("SELECT count(*) OVER (PARTITION BY a ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM t", K::Select, &["hive.web.t"], &["hive"]),
            ("SELECT rank() OVER w FROM t WINDOW w AS (PARTITION BY a ORDER BY b)", K::Select, &["hive.web.t"], &["hive"]),
            ("SELECT * FROM t MATCH_RECOGNIZE (ORDER BY ts MEASURES A.x AS x PATTERN (A B+) DEFINE B AS B.x > A.x)", K::Select, &["hive.web.t"], &["hive"]),
            // Time travel.
            ("SELECT * FROM iceberg.s.t FOR VERSION AS OF 8954597067493422955", K::Select, &["iceberg.s.t"], &["iceberg"]),
            ("SELECT * FROM iceberg.s.t FOR TIMESTAMP AS OF TIMESTAMP '2022-03-23 09:59:29.803 Europe/Vienna'", K::Select, &["iceberg.s.t"], &["iceberg"]),
            ("SELECT * FROM t FOR VERSION AS OF 'audit-branch' a JOIN u FOR TIMESTAMP AS OF current_timestamp - INTERVAL '1' DAY b ON a.id = b.id", K::Select, &["hive.web.t", "hive.web.u"], &["hive"]),
            // Writes.
            ("INSERT INTO hive.web.events SELECT * FROM kafka.default.raw_events", K::Insert, &["hive.web.events", "kafka.default.raw_events"], &["hive", "kafka"]),
            ("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')", K::Insert, &["hive.web.t"], &["hive"]),
            ("CREATE TABLE hive.tmp.t1 AS SELECT * FROM hive.web.page_views", K::CreateTableAs, &["hive.tmp.t1", "hive.web.page_views"], &["hive"]),
            ("CREATE TABLE IF NOT EXISTS t2 WITH (format = 'ORC', partitioned_by = ARRAY['ds']) AS SELECT a, ds FROM t1", K::CreateTableAs, &["hive.web.t1", "hive.web.t2"], &["hive"]),
            ("CREATE OR REPLACE TABLE iceberg.s.t AS SELECT 1 AS x", K::CreateTableAs, &["iceberg.s.t"], &["iceberg"]),
            ("CREATE TABLE t AS SELECT * FROM u WITH NO DATA", K::CreateTableAs, &["hive.web.t", "hive.web.u"], &["hive"]),
            ("MERGE INTO iceberg.s.target t USING iceberg.s.source s ON t.id = s.id WHEN MATCHED AND s.op = 'D' THEN DELETE WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)", K::Merge, &["iceberg.s.source", "iceberg.s.target"], &["iceberg"]),
            ("UPDATE iceberg.s.t SET v = v + 1 WHERE id = 3", K::Update, &["iceberg.s.t"], &["iceberg"]),
            ("DELETE FROM hive.web.page_views WHERE dt < DATE '2020-01-01'", K::Delete, &["hive.web.page_views"], &["hive"]),
            ("DELETE FROM t WHERE id IN (SELECT id FROM iceberg.s.tombstones)", K::Delete, &["hive.web.t", "iceberg.s.tombstones"], &["hive", "iceberg"]),
            // DDL.
            ("CREATE TABLE orders_copy (orderkey bigint, comment varchar) WITH (format = 'PARQUET')", K::Ddl, &["hive.web.orders_copy"], &["hive"]),
            ("CREATE TABLE t (LIKE s INCLUDING PROPERTIES)", K::Ddl, &["hive.web.t"], &["hive"]),
            ("ALTER TABLE iceberg.s.t EXECUTE optimize(file_size_threshold => '128MB')", K::Ddl, &["iceberg.s.t"], &["iceberg"]),
            ("ALTER TABLE t EXECUTE expire_snapshots(retention_threshold => '7d')", K::Ddl, &["hive.web.t"], &["hive"]),
            ("ALTER TABLE IF EXISTS hive.web.page_views ADD COLUMN referrer varchar", K::Ddl, &["hive.web.page_views"], &["hive"]),
            ("ALTER TABLE t RENAME TO t_old", K::Ddl, &["hive.web.t", "hive.web.t_old"], &["hive"]),
            ("ALTER TABLE hive.s.t SET PROPERTIES format = 'ORC'", K::Ddl, &["hive.s.t"], &["hive"]),
            ("ALTER SCHEMA iceberg.s RENAME TO s2", K::Ddl, &[], &["iceberg"]),
            ("COMMENT ON TABLE hive.web.page_views IS 'views'", K::Ddl, &["hive.web.page_views"], &["hive"]),
            ("COMMENT ON COLUMN orders.comment IS 'free text'", K::Ddl, &["hive.web.orders"], &["hive"]),
            ("DROP TABLE IF EXISTS hive.tmp.t1", K::Ddl, &["hive.tmp.t1"], &["hive"]),
            ("DROP VIEW IF EXISTS iceberg.s.v", K::Ddl, &["iceberg.s.v"], &["iceberg"]),
            ("DROP SCHEMA iceberg.tmp CASCADE", K::Ddl, &[], &["iceberg"]),
            ("CREATE SCHEMA IF NOT EXISTS iceberg.tmp WITH (location = 's3://bucket/tmp/')", K::Ddl, &[], &["iceberg"]),
            ("CREATE VIEW hive.web.v AS SELECT * FROM hive.web.page_views", K::Ddl, &["hive.web.page_views", "hive.web.v"], &["hive"]),
            ("CREATE MATERIALIZED VIEW iceberg.s.mv AS SELECT count(*) c FROM iceberg.s.t", K::Ddl, &["iceberg.s.mv", "iceberg.s.t"], &["iceberg"]),
            ("TRUNCATE TABLE hive.tmp.t1", K::Ddl, &["hive.tmp.t1"], &["hive"]),
            ("GRANT SELECT ON hive.web.page_views TO USER alice", K::Ddl, &["hive.web.page_views"], &["hive"]),
            ("REVOKE INSERT ON TABLE orders FROM ROLE writers", K::Ddl, &["hive.web.orders"], &["hive"]),
            // SHOW, DESCRIBE, EXPLAIN.
            ("SHOW CATALOGS", K::ShowDescribe, &[], &[]),
            ("SHOW SCHEMAS FROM tpch", K::ShowDescribe, &[], &["tpch"]),
            ("SHOW SCHEMAS", K::ShowDescribe, &[], &["hive"]),
            ("SHOW TABLES FROM iceberg.web LIKE 'page%'", K::ShowDescribe, &[], &["iceberg"]),
            ("SHOW TABLES", K::ShowDescribe, &[], &["hive"]),
            ("SHOW CREATE TABLE hive.web.page_views", K::ShowDescribe, &["hive.web.page_views"], &["hive"]),
            ("SHOW CREATE VIEW iceberg.s.v", K::ShowDescribe, &["iceberg.s.v"], &["iceberg"]),
            ("SHOW CREATE SCHEMA hive.web", K::ShowDescribe, &[], &[]),
            ("SHOW COLUMNS FROM tpch.tiny.nation", K::ShowDescribe, &["tpch.tiny.nation"], &["tpch"]),
            ("SHOW STATS FOR orders", K::ShowDescribe, &["hive.web.orders"], &["hive"]),
            ("SHOW STATS FOR (SELECT * FROM orders WHERE a > 1)", K::ShowDescribe, &[], &[]),
            ("SHOW GRANTS ON TABLE iceberg.s.t", K::ShowDescribe, &["iceberg.s.t"], &["iceberg"]),
            ("SHOW FUNCTIONS LIKE 'array%'", K::ShowDescribe, &[], &[]),
            ("SHOW SESSION", K::ShowDescribe, &[], &[]),
            ("DESCRIBE tpch.tiny.nation", K::ShowDescribe, &["tpch.tiny.nation"], &["tpch"]),
            ("DESCRIBE orders", K::ShowDescribe, &["hive.web.orders"], &["hive"]),
            ("DESCRIBE INPUT my_select", K::ShowDescribe, &[], &[]),
            ("DESCRIBE OUTPUT my_select", K::ShowDescribe, &[], &[]),
            ("EXPLAIN SELECT * FROM tpch.tiny.nation", K::Explain, &["tpch.tiny.nation"], &["tpch"]),
            ("EXPLAIN (TYPE DISTRIBUTED, FORMAT JSON) SELECT * FROM tpch.tiny.nation", K::Explain, &["tpch.tiny.nation"], &["tpch"]),
            ("EXPLAIN ANALYZE SELECT count(*) FROM tpch.tiny.lineitem", K::ExplainAnalyze, &["tpch.tiny.lineitem"], &["tpch"]),
            ("EXPLAIN ANALYZE VERBOSE SELECT count(*) FROM lineitem", K::ExplainAnalyze, &["hive.web.lineitem"], &["hive"]),
            ("EXPLAIN ANALYZE SELECT * FROM iceberg.s.t FOR VERSION AS OF 1", K::ExplainAnalyze, &["iceberg.s.t"], &["iceberg"]),
            // Session, USE, CALL, prepared statements, transactions.
            ("USE tpch.tiny", K::Use, &[], &["tpch"]),
            ("USE web2", K::Use, &[], &["hive"]),
            ("SET SESSION query_max_run_time = '10m'", K::SetSession, &[], &[]),
            ("SET SESSION hive.insert_existing_partitions_behavior = 'OVERWRITE'", K::SetSession, &[], &["hive"]),
            ("RESET SESSION query_max_run_time", K::ResetSession, &[], &[]),
            ("RESET SESSION iceberg.compression_codec", K::ResetSession, &[], &["iceberg"]),
            ("SET SESSION AUTHORIZATION 'alice'", K::Other, &[], &[]),
            ("SET ROLE admin", K::Other, &[], &[]),
            ("SET TIME ZONE 'America/New_York'", K::Other, &[], &[]),
            ("CALL system.runtime.kill_query(query_id => '20240101_120000_00001_abcde', message => 'too slow')", K::Call, &[], &["system"]),
            ("CALL iceberg.system.rollback_to_snapshot('s', 't', 8954597067493422955)", K::Call, &[], &["iceberg"]),
            ("CALL system.sync_partition_metadata('web', 'page_views', 'FULL')", K::Call, &[], &["hive"]),
            ("PREPARE my_select FROM SELECT * FROM tpch.tiny.nation WHERE regionkey = ?", K::Prepare, &[], &[]),
            ("EXECUTE my_select USING 1, 'a'", K::Execute, &[], &[]),
            ("EXECUTE my_select", K::Execute, &[], &[]),
            ("EXECUTE IMMEDIATE 'SELECT * FROM tpch.tiny.nation WHERE regionkey = ?' USING 2", K::Select, &["tpch.tiny.nation"], &["tpch"]),
            ("EXECUTE IMMEDIATE 'EXECUTE IMMEDIATE ''SELECT * FROM t'''", K::Execute, &[], &[]),
            ("DEALLOCATE PREPARE my_select", K::Deallocate, &[], &[]),
            ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", K::TransactionControl, &[], &[]),
            ("COMMIT", K::TransactionControl, &[], &[]),
            ("ROLLBACK WORK", K::TransactionControl, &[], &[]),
            ("ANALYZE hive.web.page_views WITH (partitions = ARRAY[ARRAY['2024-01-01']])", K::Other, &["hive.web.page_views"], &["hive"]),
            ("REFRESH MATERIALIZED VIEW iceberg.s.mv", K::Other, &["iceberg.s.mv"], &["iceberg"]),
            // Comments, quoting, bare VALUES and TABLE.
            ("-- leading comment\nSELECT * FROM orders", K::Select, &["hive.web.orders"], &["hive"]),
            ("/* block */ INSERT INTO t SELECT 1", K::Insert, &["hive.web.t"], &["hive"]),
            ("/* a */ -- b\n  /* c\n d */ DELETE FROM t -- trailing", K::Delete, &["hive.web.t"], &["hive"]),
            ("/* SELECT */ -- SELECT\nDROP TABLE t", K::Ddl, &["hive.web.t"], &["hive"]),
            ("SELECT 'it''s -- no comment', \"/* no comment */\" FROM t", K::Select, &["hive.web.t"], &["hive"]),
            ("SELECT * FROM \"hive\".\"Web\".\"Page Views\"", K::Select, &["hive.Web.Page Views"], &["hive"]),
            ("SELECT * FROM \"HIVE\".WEB.Orders", K::Select, &["HIVE.web.orders"], &["HIVE"]),
            ("SELECT \"count\"(*) FROM \"orders\" AS \"o\"", K::Select, &["hive.web.orders"], &["hive"]),
            ("SELECT * FROM \"we\"\"ird\".\"x\"", K::Select, &["hive.we\"ird.x"], &["hive"]),
            ("VALUES 1, 2, 3", K::Select, &[], &[]),
            ("VALUES (1, 'a'), (2, 'b')", K::Select, &[], &[]),
            ("TABLE hive.web.page_views", K::Select, &["hive.web.page_views"], &["hive"]),
            ("  \n\tselect\n*\nfrom\norders\n", K::Select, &["hive.web.orders"], &["hive"]),
            // Known gaps: sqlparser cannot read these, the leading keywords still give the kind.
            // The view's source and the function's table are lost.
            ("SELECT JSON_QUERY(j, 'lax $.a' WITH ARRAY WRAPPER) FROM t", K::Select, &[], &[]),
            ("CREATE OR REPLACE VIEW v SECURITY INVOKER AS SELECT * FROM tpch.tiny.nation", K::Ddl, &["hive.web.v"], &["hive"]),
            ("WITH FUNCTION hello(s varchar) RETURNS varchar RETURN concat('Hello ', s) SELECT hello(name) FROM t", K::Select, &[], &[]),
            // A table passed to a table function is not seen.
            ("SELECT * FROM TABLE(exclude_columns(input => TABLE(orders), columns => DESCRIPTOR(comment)))", K::Select, &[], &[]),
        ];
        for (sql, kind, tables, catalogs) in cases {
            let parsed = parse(sql, &Scope::new(&HIVE_WEB), &LIMITS, false).is_some();
            assert_eq!(parsed, !PARSER_GAPS.contains(sql), "parsed: {sql}");
            let f = facts(sql);
            assert_eq!(
                (f.kind, &f.tables, &f.catalogs),
                (*kind, &strings(tables), &strings(catalogs)),
                "{sql}"
            );
            let all: BTreeSet<&String> = f.tables_read.iter().chain(&f.tables_written).collect();
            assert_eq!(all.into_iter().cloned().collect::<Vec<_>>(), f.tables, "read ∪ written: {sql}");
        }
        assert!(cases.len() >= 60);
    }

    /// Which tables are read and which are written, and the schemas named.
    #[test]
    fn reads_writes_and_schemas() {
        #[rustfmt::skip]
        let cases: &[(&str, Names, Names, Names)] = &[
            ("INSERT INTO hive.web.events SELECT * FROM kafka.default.raw", &["kafka.default.raw"], &["hive.web.events"], &["hive.web", "kafka.default"]),
            ("INSERT INTO t SELECT * FROM t", &["hive.web.t"], &["hive.web.t"], &["hive.web"]),
            ("CREATE TABLE s.a AS SELECT * FROM b", &["hive.web.b"], &["hive.s.a"], &["hive.s", "hive.web"]),
            ("UPDATE t SET v = 1", &[], &["hive.web.t"], &["hive.web"]),
            ("UPDATE t SET v = (SELECT max(v) FROM t)", &["hive.web.t"], &["hive.web.t"], &["hive.web"]),
            ("UPDATE t SET v = 1 WHERE id IN (SELECT id FROM u)", &["hive.web.u"], &["hive.web.t"], &["hive.web"]),
            ("DELETE FROM t WHERE id IN (SELECT id FROM u)", &["hive.web.u"], &["hive.web.t"], &["hive.web"]),
            ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", &["hive.web.u"], &["hive.web.t"], &["hive.web"]),
            ("EXPLAIN INSERT INTO t SELECT * FROM s", &["hive.web.s"], &[], &["hive.web"]),
            ("EXPLAIN ANALYZE INSERT INTO t SELECT * FROM s", &["hive.web.s"], &["hive.web.t"], &["hive.web"]),
            ("ALTER TABLE t EXECUTE optimize", &[], &["hive.web.t"], &["hive.web"]),
            ("CREATE VIEW v AS SELECT * FROM t", &["hive.web.t"], &["hive.web.v"], &["hive.web"]),
            ("SHOW CREATE TABLE t", &["hive.web.t"], &[], &["hive.web"]),
            ("SHOW TABLES FROM iceberg.s", &[], &[], &["iceberg.s"]),
            ("SHOW TABLES FROM s", &[], &[], &["hive.s"]),
            ("SHOW TABLES", &[], &[], &["hive.web"]),
            ("USE tpch.tiny", &[], &[], &["tpch.tiny"]),
            ("USE tiny", &[], &[], &["hive.tiny"]),
            ("CREATE SCHEMA s", &[], &[], &["hive.s"]),
            ("DROP SCHEMA IF EXISTS iceberg.s", &[], &[], &["iceberg.s"]),
            ("CALL system.runtime.kill_query('x')", &[], &[], &["system.runtime"]),
            ("SELECT * FROM TABLE(pg.system.query(query => 'SELECT 1'))", &[], &[], &["pg.system"]),
        ];
        for (sql, read, written, schemas) in cases {
            let f = facts(sql);
            assert_eq!(
                (&f.tables_read, &f.tables_written, &f.schemas),
                (&strings(read), &strings(written), &strings(schemas)),
                "{sql}"
            );
        }
    }

    /// Names complete only as far as the defaults reach; what is known still counts.
    #[test]
    fn defaults() {
        let d = |catalog, schema| Defaults { catalog, schema };
        #[rustfmt::skip]
        let cases: &[(Defaults<'_>, &str, Names, Names, Names)] = &[
            (d(None, None), "SELECT * FROM t", &[], &[], &[]),
            (d(None, None), "SELECT * FROM s.t", &[], &[], &[]),
            (d(None, None), "SELECT * FROM c.s.t", &["c.s.t"], &["c.s"], &["c"]),
            (d(None, Some("web")), "SELECT * FROM t", &[], &[], &[]),
            (d(Some("hive"), None), "SELECT * FROM t", &[], &[], &["hive"]),
            (d(Some("hive"), None), "SELECT * FROM s.t JOIN u ON true", &["hive.s.t"], &["hive.s"], &["hive"]),
            (d(Some("Hive"), Some("WEB")), "SELECT * FROM t", &["hive.web.t"], &["hive.web"], &["hive"]),
            (d(Some(""), Some("")), "SELECT * FROM t", &[], &[], &[]),
            (d(None, None), "SHOW TABLES", &[], &[], &[]),
            (d(None, None), "USE web", &[], &[], &[]),
            (d(None, None), "SELECT * FROM a.b.c.d", &[], &[], &[]),
        ];
        for (defaults, sql, tables, schemas, catalogs) in cases {
            let f = analyze(sql, defaults, &LIMITS);
            assert_eq!(
                (&f.tables, &f.schemas, &f.catalogs),
                (&strings(tables), &strings(schemas), &strings(catalogs)),
                "{defaults:?} {sql}"
            );
        }
    }

    #[test]
    fn query_ids_and_transactions() {
        const ID: &str = "20240101_120000_00001_abcde";
        #[rustfmt::skip]
        let cases: &[(&str, Names, bool)] = &[
            ("CALL system.runtime.kill_query(query_id => '20240101_120000_00001_abcde', message => 'slow')", &[ID], false),
            ("CALL system.runtime.kill_query(message => 'slow', query_id => '20240101_120000_00001_abcde')", &[ID], false),
            ("CALL system.runtime.kill_query('20240101_120000_00001_abcde')", &[ID], false),
            ("call SYSTEM.RUNTIME.KILL_QUERY('20240101_120000_00001_abcde', 'slow')", &[ID], false),
            ("CALL system.runtime.kill_query(query_id => 'NOT AN ID')", &[], false),
            ("CALL system.runtime.kill_query(query_id => 42)", &[], false),
            ("CALL iceberg.system.expire_snapshots('20240101_120000_00001_abcde')", &[], false),
            ("SELECT '20240101_120000_00001_abcde'", &[], false),
            ("START TRANSACTION", &[], true),
            ("START TRANSACTION READ WRITE", &[], true),
            ("COMMIT", &[], false),
            ("EXPLAIN ANALYZE CALL system.runtime.kill_query('20240101_120000_00001_abcde')", &[ID], false),
        ];
        for (sql, ids, starts) in cases {
            let f = facts(sql);
            assert_eq!((&f.query_ids, f.starts_transaction), (&strings(ids), *starts), "{sql}");
        }
    }

    #[test]
    fn prepared_statements() {
        let header = "my_select=SELECT+*+FROM+tpch.tiny.nation+WHERE+regionkey+%3D+%3F,\
                      ins=INSERT+INTO+t+VALUES+(1%2C+%27a+b%27),My+Stmt=DELETE+FROM+iceberg.s.t";
        let run = |name| analyze_execute(header, name, &HIVE_WEB, &LIMITS).map(|f| (f.kind, f.tables));
        assert_eq!(run("my_select"), Some((K::Select, strings(&["tpch.tiny.nation"]))));
        assert_eq!(run("ins"), Some((K::Insert, strings(&["hive.web.t"]))));
        assert_eq!(run("My Stmt"), Some((K::Delete, strings(&["iceberg.s.t"]))));
        assert_eq!(run("MY_SELECT"), Some((K::Select, strings(&["tpch.tiny.nation"]))));
        assert_eq!(run("missing"), None);
        assert_eq!(analyze_execute("", "x", &HIVE_WEB, &LIMITS), None);
        assert_eq!(analyze_execute("x=%FF%FE", "x", &HIVE_WEB, &LIMITS), None);
        assert_eq!(analyze_execute("x", "x", &HIVE_WEB, &LIMITS), None);
        assert_eq!(analyze_execute("x=%zz", "x", &HIVE_WEB, &LIMITS).map(|f| f.kind), Some(K::Unknown));
        // An exact match wins over a match ignoring case.
        let header = "A=SELECT+1,a=DELETE+FROM+t";
        assert_eq!(analyze_execute(header, "a", &HIVE_WEB, &LIMITS).map(|f| f.kind), Some(K::Delete));

        #[rustfmt::skip]
        let names: &[(&str, Option<&str>)] = &[
            ("EXECUTE my_select USING 1", Some("my_select")),
            ("-- c\nexecute My_Select", Some("My_Select")),
            ("EXECUTE \"my \"\"odd\"\" name\"", Some("my \"odd\" name")),
            ("EXECUTE IMMEDIATE 'SELECT 1'", None),
            ("EXECUTE", None),
            ("EXECUTE\"\"", None), // found by fuzzing: an empty quoted name was a name
            ("SELECT 1", None),
            ("", None),
        ];
        for (sql, expected) in names {
            assert_eq!(execute_name(sql).as_deref(), *expected, "{sql}");
        }
    }

    #[test]
    fn kind_names() {
        #[rustfmt::skip]
        let kinds = [
            (K::Select, "select"), (K::Insert, "insert"), (K::CreateTableAs, "create_table_as"),
            (K::Update, "update"), (K::Delete, "delete"), (K::Merge, "merge"), (K::Ddl, "ddl"),
            (K::ShowDescribe, "show_describe"), (K::Explain, "explain"), (K::ExplainAnalyze, "explain_analyze"),
            (K::SetSession, "set_session"), (K::ResetSession, "reset_session"), (K::Use, "use"),
            (K::Call, "call"), (K::Execute, "execute"), (K::Prepare, "prepare"), (K::Deallocate, "deallocate"),
            (K::TransactionControl, "transaction_control"), (K::Other, "other"), (K::Unknown, "unknown"),
        ];
        for (kind, name) in kinds {
            assert_eq!(kind.as_str(), name);
        }
    }

    /// Input that is not SQL: no panic, and the kind and target only where leading keywords give them.
    #[test]
    fn bad_input() {
        #[rustfmt::skip]
        let cases: &[(&str, StatementKind, Names)] = &[
            ("", K::Unknown, &[]),
            ("   \n\t ", K::Unknown, &[]),
            (";", K::Unknown, &[]),
            (";;;", K::Unknown, &[]),
            ("-- only a comment", K::Unknown, &[]),
            ("/* only a comment */", K::Unknown, &[]),
            ("/* unterminated SELECT 1", K::Unknown, &[]),
            ("'", K::Unknown, &[]),
            ("\"", K::Unknown, &[]),
            ("SELECT 'unterminated FROM t", K::Select, &[]),
            ("SELECT \"unterminated FROM t", K::Select, &[]),
            ("SELECT * FROM t WHERE a = 'x", K::Select, &[]),
            ("INSERT INTO t VALUES ('a", K::Insert, &["hive.web.t"]),
            ("UPDATE t SET a = 'x", K::Update, &["hive.web.t"]),
            ("SELECT 1; DROP TABLE t", K::Unknown, &[]),
            ("\0", K::Unknown, &[]),
            ("\0SELECT 1", K::Unknown, &[]),
            ("SELECT \0 FROM t", K::Select, &[]),
            ("\u{7f}\u{1}\u{2}", K::Unknown, &[]),
            ("\u{feff}SELECT 1", K::Unknown, &[]),
            ("SELEC * FROM t", K::Unknown, &[]),
            ("hello world", K::Unknown, &[]),
            ("BEGIN; SELECT 1; END", K::Unknown, &[]),
            ("))))", K::Unknown, &[]),
            ("SELECT 1)", K::Select, &[]),
            ("((((DROP TABLE t", K::Unknown, &[]),
            ("((((SELECT 1", K::Select, &[]),
            ("START", K::Unknown, &[]),
            ("SELECT FROM WHERE", K::Select, &[]),
            ("DROP TABLE a.b.c.d", K::Ddl, &[]),
            ("ÄÖÜ ß", K::Unknown, &[]),
            ("SELECT * FROM t WHERE x = 'ÄÖÜ' AND y = \"ü\"", K::Select, &["hive.web.t"]),
            ("🦀", K::Unknown, &[]),
        ];
        for (sql, kind, tables) in cases {
            let f = facts(sql);
            assert_eq!((f.kind, &f.tables), (*kind, &strings(tables)), "{sql:?}");
        }
        // Pseudo-random bytes, as a client might send by mistake.
        let mut x: u32 = 0x9e37_79b9;
        let bytes: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(facts(&text).kind, K::Unknown);
    }

    /// Every prefix of real statements (cut anywhere) is analyzed without a panic.
    #[test]
    fn truncated_statements() {
        let statements = [
            "WITH a AS (SELECT * FROM \"x\"\"y\".t /* c */) SELECT transform(v, x -> x + 1) FROM a -- end",
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET v = 'ä' WHEN NOT MATCHED THEN INSERT VALUES (1)",
            "SELECT * FROM iceberg.s.t FOR TIMESTAMP AS OF TIMESTAMP '2022-03-23 09:59:29.803 Europe/Vienna'",
            "CALL system.runtime.kill_query(query_id => '20240101_120000_00001_abcde', message => 'x')",
            "EXECUTE IMMEDIATE 'SELECT * FROM t WHERE a = ''b''' USING 1",
        ];
        for sql in statements {
            for (end, _) in sql.char_indices() {
                let _ = facts(&sql[..end]);
                let limits = Limits { max_bytes: end };
                let _ = analyze(sql, &HIVE_WEB, &limits);
            }
        }
    }

    fn timed(sql: &str, limits: &Limits) -> (StatementFacts, Duration) {
        let start = Instant::now();
        let facts = analyze(sql, &HIVE_WEB, limits);
        (facts, start.elapsed())
    }

    /// Pathological input is refused before the parser spends time or stack on it. The bound is a
    /// plain upper bound for a debug build, not a benchmark.
    #[test]
    fn pathological_input_is_cheap() {
        let unlimited = Limits { max_bytes: usize::MAX };
        let mb = 1 << 20;
        #[rustfmt::skip]
        let cases: Vec<(&str, String, StatementKind)> = vec![
            ("1 MB of (", "(".repeat(mb), K::Unknown),
            ("1 MB of )", ")".repeat(mb), K::Unknown),
            ("SELECT and 1 MB of (", format!("SELECT {}", "(".repeat(mb)), K::Select),
            ("1 MB of NUL", "\0".repeat(mb), K::Unknown),
            ("1 MB unterminated string", format!("SELECT '{}", "a".repeat(mb)), K::Select),
            ("1 MB unterminated comment", format!("/* {}", "a".repeat(mb)), K::Unknown),
            // Parses fine, but the syntax tree of a 150,000-link chain overflows the stack when dropped.
            ("1 MB OR chain", format!("SELECT * FROM t WHERE {}1 = 1", "1 = 1 OR ".repeat(mb / 9)), K::Select),
            ("1 MB UNION chain", "SELECT 1 UNION ".repeat(mb / 15) + "SELECT 1", K::Select),
            ("1 MB of ARRAY[", format!("SELECT {}", "ARRAY[".repeat(mb / 6)), K::Select),
            ("1 MB subscript chain", format!("SELECT a{}", "[1]".repeat(mb / 3)), K::Select),
            ("1 MB XOR chain", format!("SELECT {}1", "1 XOR ".repeat(mb / 6)), K::Select),
            ("1 MB of EXPLAIN", format!("{}SELECT 1", "EXPLAIN ".repeat(mb / 8)), K::Explain),
            ("1 MB of IF", format!("{}SELECT 1", "IF 1 THEN ".repeat(mb / 10)), K::Unknown),
        ];
        for (label, sql, kind) in &cases {
            let (facts, took) = timed(sql, &unlimited);
            assert_eq!(facts.kind, *kind, "{label}");
            assert!(facts.tables.is_empty(), "{label}");
            assert!(took < Duration::from_millis(100), "{label}: {took:?}");
        }
    }

    #[test]
    fn over_max_bytes_only_the_prefix_is_scanned() {
        let limits = Limits { max_bytes: 64 * 1024 };
        let in_list = (0..200_000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        #[rustfmt::skip]
        let cases: Vec<(String, StatementKind, Names)> = vec![
            (format!("SELECT * FROM t WHERE id IN ({in_list})"), K::Select, &[]),
            (format!("INSERT INTO iceberg.s.t VALUES ({in_list})"), K::Insert, &["iceberg.s.t"]),
            (format!("-- comment\nDELETE FROM t WHERE id IN ({in_list})"), K::Delete, &["hive.web.t"]),
            (format!("CREATE TABLE t AS SELECT * FROM u WHERE id IN ({in_list})"), K::CreateTableAs, &["hive.web.t"]),
            (format!("CREATE TABLE t (c varchar) COMMENT '{}'", "x".repeat(100_000)), K::Ddl, &["hive.web.t"]),
            (format!("/* {} */ SELECT 1", "x".repeat(100_000)), K::Unknown, &[]),
            (format!("SELECT '{}'", "é".repeat(100_000)), K::Select, &[]),
        ];
        for (sql, kind, tables) in &cases {
            assert!(sql.len() > limits.max_bytes);
            let (facts, took) = timed(sql, &limits);
            assert_eq!((facts.kind, &facts.tables), (*kind, &strings(tables)), "{}", &sql[..40]);
            assert!(took < Duration::from_millis(100), "{}: {took:?}", &sql[..40]);
        }
        // The same statement within the limit is parsed.
        let sql = "SELECT * FROM t WHERE id IN (1, 2, 3)";
        assert_eq!(
            analyze(sql, &HIVE_WEB, &Limits { max_bytes: sql.len() }).tables,
            strings(&["hive.web.t"])
        );
        assert!(analyze(sql, &HIVE_WEB, &Limits { max_bytes: sql.len() - 1 }).tables.is_empty());
    }

    /// Deep but sane nesting is parsed; deeper nesting falls back to the leading keywords.
    #[test]
    fn nesting() {
        let nested =
            |depth: usize| format!("SELECT * FROM {}t{}", "(SELECT * FROM ".repeat(depth), ")".repeat(depth));
        for depth in 0..=MAX_NESTING + 1 {
            let f = facts(&nested(depth));
            let parsed = !f.tables.is_empty();
            assert_eq!((f.kind, parsed), (K::Select, depth <= SUBQUERY_DEPTH), "depth {depth}");
        }
        let parens = |depth: usize| format!("SELECT {}1{} FROM t", "(".repeat(depth), ")".repeat(depth));
        assert_eq!(facts(&parens(20)).tables, strings(&["hive.web.t"]));
        assert!(facts(&parens(MAX_NESTING + 1)).tables.is_empty());
    }

    /// The deepest subquery nesting sqlparser reads within its recursion limit.
    const SUBQUERY_DEPTH: usize = 23;

    /// Chains just within [`MAX_OPERATORS`] are parsed, and their syntax trees dropped, on a test
    /// thread's 2 MiB stack.
    #[test]
    fn long_chains() {
        let n = MAX_OPERATORS - 10;
        #[rustfmt::skip]
        let cases = [
            format!("SELECT * FROM t WHERE {}1", "1 OR ".repeat(n)),
            format!("SELECT a{} FROM t", "[1]".repeat(n)),
            format!("SELECT {}x FROM t", "'a' || ".repeat(n / 2)),
            format!("SELECT 1 FROM t {}", "UNION SELECT 1 FROM t ".repeat(n)),
            format!("SELECT * FROM t WHERE a IN ({})", vec!["1"; 5 * n].join(", ")),
        ];
        for sql in &cases {
            assert_eq!(facts(sql).tables, strings(&["hive.web.t"]), "{}", &sql[..40]);
        }
    }

    /// Parse times, for the record: `cargo test --lib statement::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        let short = "SELECT * FROM hive.web.page_views WHERE dt = DATE '2024-01-01'";
        let long = "\
            -- daily engagement report\n\
            WITH daily AS (\
                SELECT date_trunc('day', v.ts) AS day, v.user_id, count(*) AS views, approx_distinct(v.url) AS urls, \
                       max_by(v.url, v.ts) AS last_url, sum(CASE WHEN v.referrer LIKE '%google%' THEN 1 ELSE 0 END) AS search \
                FROM hive.web.page_views v \
                JOIN hive.web.users u ON v.user_id = u.id \
                WHERE v.ts >= current_timestamp - INTERVAL '30' DAY AND u.country IN ('AT', 'DE', 'CH', 'FR', 'IT') \
                  AND v.url NOT LIKE '%/health%' AND u.created_at < DATE '2024-01-01' \
                GROUP BY 1, 2\
            ), sessions AS (\
                SELECT s.user_id, s.session_id, min(s.ts) AS started, max(s.ts) AS ended, \
                       date_diff('second', min(s.ts), max(s.ts)) AS seconds, cardinality(array_agg(DISTINCT s.device)) AS devices \
                FROM iceberg.events.sessions FOR TIMESTAMP AS OF TIMESTAMP '2024-06-01 00:00:00 UTC' s \
                CROSS JOIN UNNEST(s.tags) AS t(tag) \
                WHERE t.tag <> 'bot' GROUP BY s.user_id, s.session_id\
            ), scored AS (\
                SELECT d.*, coalesce(se.seconds, 0) AS seconds, se.devices, \
                       rank() OVER (PARTITION BY d.day ORDER BY d.views DESC, d.urls DESC) AS rnk, \
                       avg(d.views) OVER (PARTITION BY d.user_id ORDER BY d.day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS avg7, \
                       transform(filter(array_agg(se.session_id) OVER (PARTITION BY d.user_id), x -> x IS NOT NULL), x -> upper(x)) AS ids \
                FROM daily d LEFT JOIN sessions se ON se.user_id = d.user_id AND date_trunc('day', se.started) = d.day\
            )\
            SELECT sc.day, sc.user_id, a.account_name, a.tier, sc.views, sc.urls, sc.search, sc.seconds, sc.rnk, \
                   round(sc.avg7, 2) AS avg7, \
                   CASE WHEN sc.views > 100 THEN 'heavy' WHEN sc.views > 10 THEN 'medium' ELSE 'light' END AS class, \
                   json_extract_scalar(a.attributes, '$.owner.email') AS owner, \
                   format_datetime(sc.day AT TIME ZONE 'Europe/Vienna', 'yyyy-MM-dd') AS local_day \
            FROM scored sc \
            LEFT JOIN iceberg.crm.accounts a ON a.user_id = sc.user_id \
            WHERE sc.rnk <= 100 AND (a.tier IS NULL OR a.tier IN ('gold', 'platinum')) \
              AND NOT EXISTS (SELECT 1 FROM hive.web.blocklist b WHERE b.user_id = sc.user_id) \
            ORDER BY sc.day DESC, sc.rnk \
            LIMIT 1000";
        let tables = [
            "hive.web.blocklist",
            "hive.web.page_views",
            "hive.web.users",
            "iceberg.crm.accounts",
            "iceberg.events.sessions",
        ];
        assert_eq!(facts(long).tables, strings(&tables));
        let mut in_list = String::from("SELECT * FROM hive.web.page_views WHERE user_id IN (0");
        for i in 1.. {
            if in_list.len() > 256 * 1024 - 20 {
                break;
            }
            in_list.push_str(&format!(", {}", 1_000_000 + i));
        }
        in_list.push(')');
        assert_eq!(facts(&in_list).tables, strings(&["hive.web.page_views"]));
        for (label, sql) in [("short", short), ("2 KB", long), ("256 KiB IN list", &in_list)] {
            let runs = if sql.len() > 10_000 { 20 } else { 500 };
            let start = Instant::now();
            for _ in 0..runs {
                std::hint::black_box(facts(std::hint::black_box(sql)));
            }
            let analyzed = start.elapsed() / runs;
            let start = Instant::now();
            for _ in 0..runs {
                let mut tokens = Tokenizer::new(&TrinoDialect, std::hint::black_box(sql))
                    .tokenize_with_location()
                    .unwrap();
                respell_time_travel(&mut tokens);
                let parsed = Parser::new(&TrinoDialect).with_tokens_with_locations(tokens).parse_statements();
                assert!(parsed.is_ok());
            }
            let parsed = start.elapsed() / runs;
            let start = Instant::now();
            for _ in 0..runs {
                std::hint::black_box(prescan(std::hint::black_box(sql)));
            }
            let scanned = start.elapsed() / runs;
            println!(
                "{label}: {} bytes, {analyzed:?} per statement ({parsed:?} sqlparser alone, {scanned:?} prescan)",
                sql.len()
            );
        }
    }

    #[test]
    fn quick_placement_agrees_with_analysis() {
        let limits = Limits::default();
        let cases = [
            "SELECT 1",
            "  start   transaction",
            "START TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "/* c */ START TRANSACTION",
            "START",
            "COMMIT",
            "SELECT * FROM hive.web.t WHERE x = 'start transaction'",
            "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_abcde', message => 'x')",
            "call SYSTEM.RUNTIME.\"KILL_QUERY\"('20260101_120000_00001_abcde')",
            "EXECUTE stmt USING 1",
            "INSERT INTO t SELECT * FROM s",
            "((SELECT 1))",
            "",
            "SELEC * FRM ((",
        ];
        for sql in cases {
            let full = analyze(sql, &Defaults::default(), &limits);
            match quick_placement(sql, &limits) {
                Some(starts) => {
                    assert_eq!(starts, full.starts_transaction, "{sql}");
                    assert!(full.query_ids.is_empty(), "{sql}");
                }
                None => assert!(
                    sql.to_ascii_lowercase().contains("kill_query") || sql.starts_with("EXECUTE"),
                    "{sql}"
                ),
            }
        }
    }
}
