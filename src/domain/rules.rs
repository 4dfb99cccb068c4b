//! Routing rules: an ordered list, compiled once when the config loads. The first rule whose condition
//! holds picks the new query's group (and may add request headers for the coordinator); no rule →
//! the routing-group header's group if it names one, else `default_group`.
//!
//! A condition is simple matchers (`match:` fact → value, list of values, or `{regex: ...}`; all must
//! hold) and/or a CEL expression (`when:`) over the variables `request` and `statement`. The SQL text is
//! analysed only when a rule that needs statement facts is reached, and only once per request. A CEL
//! expression that fails at run time (a missing field, a wrong type) counts as "no match"; the
//! evaluation names it, and the caller logs it once per rule ([`Rule::first_failure`]), not per request.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use regex::Regex;
use serde::Deserialize;

use crate::domain::client_request::ClientRequest;
use crate::domain::statement::{
    Defaults, Limits, StatementFacts, analyze, analyze_execute, execute_name, quick_placement,
};

/// A rule as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    #[serde(default)]
    pub when: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: BTreeMap<String, RawMatcher>,
    pub group: String,
    #[serde(default)]
    pub set_headers: BTreeMap<String, String>,
}

/// A simple matcher as written: a value, a list of values (any of), or a regular expression.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawMatcher {
    Equals(String),
    AnyOf(Vec<String>),
    Regex { regex: String },
}

/// The compiled rules.
pub struct RuleSet {
    rules: Vec<Rule>,
    env: Arc<cel::Env>,
    /// Whether any CEL condition can read `request.headers` (its text names `headers`). Converting every
    /// header for CEL is most of a CEL rule's cost, so it is done only then.
    cel_reads_headers: bool,
}

/// One compiled rule.
pub struct Rule {
    pub name: String,
    /// Index into `Config::groups`.
    pub group: usize,
    /// Headers added to the request when this rule picks the group.
    pub set_headers: Vec<(String, String)>,
    matchers: Vec<(Fact, Test)>,
    when: Option<(String, cel::Program)>,
    needs_statement: bool,
    error_logged: AtomicBool,
}

/// A fact a simple matcher can test.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fact {
    User,
    Source,
    ClientInfo,
    RoutingGroup,
    Catalog,
    Schema,
    Method,
    Path,
    ClientTags,
    Header(String),
    Session(String),
    StatementKind,
    StatementCatalogs,
    StatementSchemas,
    StatementTables,
}

impl Fact {
    fn parse(name: &str) -> Result<Fact, String> {
        Ok(match name {
            "user" => Fact::User,
            "source" => Fact::Source,
            "client_info" => Fact::ClientInfo,
            "routing_group" => Fact::RoutingGroup,
            "catalog" => Fact::Catalog,
            "schema" => Fact::Schema,
            "method" => Fact::Method,
            "path" => Fact::Path,
            "client_tags" => Fact::ClientTags,
            "statement.kind" => Fact::StatementKind,
            "statement.catalogs" => Fact::StatementCatalogs,
            "statement.schemas" => Fact::StatementSchemas,
            "statement.tables" => Fact::StatementTables,
            other => {
                if let Some(header) = other.strip_prefix("headers.") {
                    Fact::Header(header.to_ascii_lowercase())
                } else if let Some(property) = other.strip_prefix("session.") {
                    Fact::Session(property.to_owned())
                } else {
                    return Err(format!(
                        "unknown fact `{other}`; known: user, source, client_info, client_tags, routing_group, \
                         catalog, schema, method, path, headers.NAME, session.NAME, statement.kind, \
                         statement.catalogs, statement.schemas, statement.tables"
                    ));
                }
            }
        })
    }

    fn needs_statement(&self) -> bool {
        matches!(
            self,
            Fact::StatementKind | Fact::StatementCatalogs | Fact::StatementSchemas | Fact::StatementTables
        )
    }
}

#[derive(Debug)]
enum Test {
    Equals(String),
    AnyOf(Vec<String>),
    Regex(Regex),
}

impl Test {
    fn holds(&self, value: &str) -> bool {
        match self {
            Test::Equals(expected) => value == expected,
            Test::AnyOf(options) => options.iter().any(|o| o == value),
            Test::Regex(regex) => regex.is_match(value),
        }
    }
}

/// What one rule did for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleResult {
    Matched,
    NotMatched,
    /// The CEL expression failed; counted as no match.
    Error(String),
}

/// The outcome of the rules for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Index of the first rule that matched.
    pub matched: Option<usize>,
    /// Each rule tried, in order (only when asked for).
    pub trace: Vec<(usize, RuleResult)>,
    /// The rules whose CEL condition failed (counted as no match), with why.
    pub failures: Vec<(usize, String)>,
}

/// The statement facts of one request, analysed on first use.
pub struct LazyStatement<'a> {
    sql: &'a str,
    request: &'a ClientRequest,
    limits: Limits,
    facts: Option<StatementFacts>,
}

impl<'a> LazyStatement<'a> {
    pub fn new(sql: &'a str, request: &'a ClientRequest, limits: Limits) -> LazyStatement<'a> {
        LazyStatement { sql, request, limits, facts: None }
    }

    /// The facts, analysing the SQL the first time. `EXECUTE name` is analysed as the prepared statement
    /// it names, found in `X-Trino-Prepared-Statement`.
    pub fn facts(&mut self) -> &StatementFacts {
        let (sql, request, limits) = (self.sql, self.request, self.limits);
        self.facts.get_or_insert_with(|| {
            let defaults = Defaults {
                catalog: Some(request.catalog.as_str()).filter(|c| !c.is_empty()),
                schema: Some(request.schema.as_str()).filter(|s| !s.is_empty()),
            };
            let facts = analyze(sql, &defaults, &limits);
            match execute_name(sql) {
                Some(name) if !request.prepared_statements.is_empty() => {
                    analyze_execute(&request.prepared_statements, &name, &defaults, &limits).unwrap_or(facts)
                }
                _ => facts,
            }
        })
    }

    /// What placement needs: whether the statement starts a transaction, and the query ids it names.
    /// Without a full analysis when the first keywords tell ([`quick_placement`]).
    pub fn placement(&mut self) -> (bool, Vec<String>) {
        if !self.analysed()
            && let Some(starts_transaction) = quick_placement(self.sql, &self.limits)
        {
            return (starts_transaction, Vec::new());
        }
        let facts = self.facts();
        (facts.starts_transaction, facts.query_ids.clone())
    }

    /// Whether the SQL was analysed (for tests and traces).
    pub fn analysed(&self) -> bool {
        self.facts.is_some()
    }
}

/// A rule condition as Envoy can test it on the request headers: every listed header's value is one of
/// `values` (exactly); with `missing_is_empty`, an absent header counts as the empty value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    /// Lower-case header name.
    pub header: String,
    pub values: Vec<String>,
    pub missing_is_empty: bool,
}

impl Rule {
    /// The rule as header conditions Envoy can test, all of which must hold; `None` when it tests
    /// anything else (SQL, CEL, the user — who may come from `Authorization` —, a regex, trimmed or split
    /// values, pseudo-headers).
    pub fn as_header_conditions(&self) -> Option<Vec<HeaderCondition>> {
        if self.when.is_some() {
            return None;
        }
        let condition = |header: &str, test: &Test, missing_is_empty: bool| {
            let values = match test {
                Test::Equals(value) => vec![value.clone()],
                Test::AnyOf(values) => values.clone(),
                Test::Regex(_) => return None,
            };
            Some(HeaderCondition { header: header.to_owned(), values, missing_is_empty })
        };
        self.matchers
            .iter()
            .map(|(fact, test)| match fact {
                // `ClientRequest::header`: absent is no value at all (no test holds).
                Fact::Header(name) if !name.starts_with(':') => condition(name, test, false),
                // Untrimmed header values, empty when absent.
                Fact::Source => condition("x-trino-source", test, true),
                Fact::ClientInfo => condition("x-trino-client-info", test, true),
                _ => None,
            })
            .collect()
    }

    /// True the first time this rule's failure is reported (a failing rule is logged once, not per
    /// request; a reload compiles the rules anew).
    pub fn first_failure(&self) -> bool {
        !self.error_logged.swap(true, Ordering::Relaxed)
    }
}

impl RuleSet {
    /// No rules: every new query goes by routing-group header or default group.
    pub fn empty() -> RuleSet {
        RuleSet { rules: Vec::new(), env: Arc::new(cel::Env::stdlib()), cel_reads_headers: false }
    }

    /// Compiles rules; `group_index` resolves group names. Errors are `(field, message)` with the field
    /// as `rules[i]....`: the first problem of every rule that has one.
    pub fn compile(
        raw: &[RawRule],
        group_index: impl Fn(&str) -> Option<usize>,
    ) -> Result<RuleSet, Vec<(String, String)>> {
        let env = Arc::new(cel::Env::stdlib());
        let mut rules = Vec::with_capacity(raw.len());
        let mut errors = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, rule) in raw.iter().enumerate() {
            let named = if rule.name.trim().is_empty() {
                Err((format!("rules[{i}].name"), "must not be empty".to_owned()))
            } else if !names.insert(rule.name.as_str()) {
                Err((format!("rules[{i}].name"), format!("another rule is named `{}` too", rule.name)))
            } else {
                Ok(())
            };
            match named.and_then(|()| compile_rule(i, rule, &env, &group_index)) {
                Ok(compiled) => rules.push(compiled),
                Err(error) => errors.push(error),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let cel_reads_headers =
            rules.iter().any(|r| r.when.as_ref().is_some_and(|(source, _)| source.contains("headers")));
        Ok(RuleSet { rules, env, cel_reads_headers })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule needs the statement's facts (so the SQL body is worth reading).
    pub fn needs_statement(&self) -> bool {
        self.rules.iter().any(|r| r.needs_statement)
    }

    /// Tries the rules in order; the first that holds wins. With `trace`, records each rule tried.
    pub fn evaluate(
        &self,
        request: &ClientRequest,
        statement: &mut LazyStatement<'_>,
        trace: bool,
    ) -> Evaluation {
        let mut evaluation = Evaluation::default();
        // One CEL context per request: the variables are converted once, not once per rule.
        let mut context = CelContext { context: None, has_statement: false };
        for (index, rule) in self.rules.iter().enumerate() {
            let result = self.try_rule(rule, request, statement, &mut context);
            if let RuleResult::Error(message) = &result {
                evaluation.failures.push((index, message.clone()));
            }
            let matched = result == RuleResult::Matched;
            if trace {
                evaluation.trace.push((index, result));
            }
            if matched {
                evaluation.matched = Some(index);
                break;
            }
        }
        evaluation
    }

    fn try_rule(
        &self,
        rule: &Rule,
        request: &ClientRequest,
        statement: &mut LazyStatement<'_>,
        cel_context: &mut CelContext,
    ) -> RuleResult {
        for (fact, test) in &rule.matchers {
            if !fact_holds(fact, test, request, statement) {
                return RuleResult::NotMatched;
            }
        }
        let Some((_, program)) = &rule.when else { return RuleResult::Matched };
        let context = cel_context.context.get_or_insert_with(|| {
            let mut context = cel::Context::with_env(self.env.clone());
            context.add_variable_from_value("request", request_to_cel(request, self.cel_reads_headers));
            context
        });
        if rule.needs_statement && !cel_context.has_statement {
            context.add_variable_from_value("statement", statement_to_cel(statement.facts()));
            cel_context.has_statement = true;
        }
        match program.execute(context) {
            Ok(cel::Value::Bool(true)) => RuleResult::Matched,
            Ok(cel::Value::Bool(false)) => RuleResult::NotMatched,
            Ok(other) => RuleResult::Error(format!("the condition gave {other:?}, not true or false")),
            Err(e) => RuleResult::Error(e.to_string()),
        }
    }
}

/// Compiles rule `raw[i]`: its first problem, if it has one.
fn compile_rule(
    i: usize,
    rule: &RawRule,
    env: &cel::Env,
    group_index: impl Fn(&str) -> Option<usize>,
) -> Result<Rule, (String, String)> {
    let at = |field: &str| format!("rules[{i}].{field}");
    let group = group_index(&rule.group)
        .ok_or_else(|| (at("group"), format!("no group is named `{}`", rule.group)))?;
    if rule.when.is_none() && rule.matches.is_empty() {
        return Err((at("when"), "a rule needs `when`, `match`, or both".to_owned()));
    }
    let mut matchers = Vec::with_capacity(rule.matches.len());
    for (fact, raw_test) in &rule.matches {
        let field = at(&format!("match.{fact}"));
        let parsed = Fact::parse(fact).map_err(|m| (field.clone(), m))?;
        let test = match raw_test {
            RawMatcher::Equals(v) => Test::Equals(v.clone()),
            RawMatcher::AnyOf(v) => Test::AnyOf(v.clone()),
            RawMatcher::Regex { regex } => Test::Regex(
                Regex::new(regex).map_err(|e| (field.clone(), format!("bad regular expression: {e}")))?,
            ),
        };
        matchers.push((parsed, test));
    }
    let when = match &rule.when {
        None => None,
        Some(source) => {
            let program = env.compile(source).map_err(|e| {
                (at("when"), format!("{}", e).replace("ERROR: <input>:", "CEL error at line:column "))
            })?;
            Some((source.clone(), program))
        }
    };
    let needs_statement = matchers.iter().any(|(f, _)| f.needs_statement())
        || when.as_ref().is_some_and(|(_, p)| p.references().has_variable("statement"));
    let mut set_headers = Vec::with_capacity(rule.set_headers.len());
    for (name, value) in &rule.set_headers {
        let lower = name.to_ascii_lowercase();
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if lower.is_empty() || !lower.bytes().all(token) || lower.starts_with("x-envoy-") || lower == "host" {
            return Err((at(&format!("set_headers.{name}")), "not a header a rule may set".to_owned()));
        }
        if value.bytes().any(|b| b.is_ascii_control()) {
            return Err((at(&format!("set_headers.{name}")), "control characters in the value".to_owned()));
        }
        set_headers.push((lower, value.clone()));
    }
    Ok(Rule {
        name: rule.name.clone(),
        group,
        set_headers,
        matchers,
        when,
        needs_statement,
        error_logged: AtomicBool::new(false),
    })
}

/// The CEL context of one request, built on first use.
struct CelContext {
    context: Option<cel::Context<'static, 'static>>,
    has_statement: bool,
}

fn fact_holds(fact: &Fact, test: &Test, request: &ClientRequest, statement: &mut LazyStatement<'_>) -> bool {
    let any = |values: &[String]| values.iter().any(|v| test.holds(v));
    match fact {
        Fact::User => test.holds(&request.user),
        Fact::Source => test.holds(&request.source),
        Fact::ClientInfo => test.holds(&request.client_info),
        Fact::RoutingGroup => test.holds(&request.routing_group),
        Fact::Catalog => test.holds(&request.catalog),
        Fact::Schema => test.holds(&request.schema),
        Fact::Method => test.holds(&request.method),
        Fact::Path => test.holds(&request.path),
        Fact::ClientTags => any(&request.client_tags),
        Fact::Header(name) => request.header(name).is_some_and(|v| test.holds(v)),
        Fact::Session(name) => request.session.iter().any(|(k, v)| k == name && test.holds(v)),
        Fact::StatementKind => test.holds(statement.facts().kind.as_str()),
        Fact::StatementCatalogs => any(&statement.facts().catalogs),
        Fact::StatementSchemas => any(&statement.facts().schemas),
        Fact::StatementTables => any(&statement.facts().tables),
    }
}

fn strings(values: &[String]) -> cel::Value {
    cel::Value::from(values.iter().map(|v| cel::Value::from(v.as_str())).collect::<Vec<_>>())
}

/// The CEL variable `request`; `headers` is an empty map unless `with_headers`.
fn request_to_cel(request: &ClientRequest, with_headers: bool) -> cel::Value {
    let mut headers: HashMap<String, cel::Value> = HashMap::new();
    for (name, value) in request.headers.iter().filter(|_| with_headers) {
        headers.entry(name.clone()).or_insert_with(|| cel::Value::from(value.as_str()));
    }
    let session: HashMap<String, cel::Value> =
        request.session.iter().map(|(k, v)| (k.clone(), cel::Value::from(v.as_str()))).collect();
    let map: HashMap<&str, cel::Value> = HashMap::from([
        ("user", request.user.as_str().into()),
        ("source", request.source.as_str().into()),
        ("client_tags", strings(&request.client_tags)),
        ("client_info", request.client_info.as_str().into()),
        ("routing_group", request.routing_group.as_str().into()),
        ("catalog", request.catalog.as_str().into()),
        ("schema", request.schema.as_str().into()),
        ("session", session.into()),
        ("headers", headers.into()),
        ("method", request.method.as_str().into()),
        ("path", request.path.as_str().into()),
    ]);
    map.into()
}

/// The CEL variable `statement`.
fn statement_to_cel(facts: &StatementFacts) -> cel::Value {
    let map: HashMap<&str, cel::Value> = HashMap::from([
        ("kind", facts.kind.as_str().into()),
        ("catalogs", strings(&facts.catalogs)),
        ("schemas", strings(&facts.schemas)),
        ("tables", strings(&facts.tables)),
        ("tables_read", strings(&facts.tables_read)),
        ("tables_written", strings(&facts.tables_written)),
    ]);
    map.into()
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.rules.iter().map(|r| &r.name)).finish()
    }
}

/// Two rule sets are equal when they were compiled from the same rules.
impl PartialEq for RuleSet {
    fn eq(&self, other: &Self) -> bool {
        self.rules.len() == other.rules.len()
            && self.rules.iter().zip(&other.rules).all(|(a, b)| {
                a.name == b.name
                    && a.group == b.group
                    && a.set_headers == b.set_headers
                    && a.when.as_ref().map(|w| &w.0) == b.when.as_ref().map(|w| &w.0)
                    && format!("{:?}", a.matchers) == format!("{:?}", b.matchers)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: [&str; 4] = ["adhoc", "etl", "hive", "interactive"];

    /// Request headers, SQL, and the rule that must match.
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);

    fn group_index(name: &str) -> Option<usize> {
        GROUPS.iter().position(|g| *g == name)
    }

    /// The rules, or the first problem.
    fn compile(yaml: &str) -> Result<RuleSet, (String, String)> {
        let raw: Vec<RawRule> = serde_norway::from_str(yaml).unwrap();
        RuleSet::compile(&raw, group_index).map_err(|mut errors| errors.remove(0))
    }

    const ISSUE_RULES: &str = r#"
- name: etl-writes
  when: 'statement.kind in ["insert", "create_table_as", "merge"]'
  group: etl
- name: hive-readers
  when: '"hive" in statement.catalogs && request.user != "guest"'
  group: hive
- name: dashboards
  when: 'request.source.startsWith("superset") || "dashboard" in request.client_tags'
  group: interactive
"#;

    fn request(headers: &[(&str, &str)]) -> ClientRequest {
        let mut pairs = vec![(":method", "POST"), (":path", "/v1/statement")];
        pairs.extend_from_slice(headers);
        ClientRequest::from_headers(pairs, "sub")
    }

    /// The rule that matches (or "none"), and whether the SQL was analysed.
    fn outcome(rules: &RuleSet, headers: &[(&str, &str)], sql: &str) -> (String, bool) {
        let request = request(headers);
        let mut statement = LazyStatement::new(sql, &request, Limits { max_bytes: 1 << 20 });
        let evaluation = rules.evaluate(&request, &mut statement, false);
        let name = evaluation.matched.map_or("none".to_owned(), |i| rules.rules()[i].name.clone());
        (name, statement.analysed())
    }

    #[test]
    fn the_issue_rules_first_match_wins() {
        let rules = compile(ISSUE_RULES).unwrap();
        assert!(rules.needs_statement());
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (vec![], "INSERT INTO hive.web.t SELECT 1", "etl-writes"),
            (vec![], "CREATE TABLE hive.web.t AS SELECT 1", "etl-writes"),
            (vec![("X-Trino-User", "alice")], "SELECT * FROM hive.web.page_views", "hive-readers"),
            (vec![("X-Trino-User", "guest")], "SELECT * FROM hive.web.page_views", "none"),
            (vec![("X-Trino-User", "guest"), ("X-Trino-Source", "superset-prod")], "SELECT * FROM hive.web.t", "dashboards"),
            (vec![("X-Trino-Client-Tags", "x, dashboard")], "SELECT 1", "dashboards"),
            (vec![("X-Trino-Catalog", "hive"), ("X-Trino-Schema", "web"), ("X-Trino-User", "bob")], "SELECT * FROM t", "hive-readers"),
            (vec![("X-Trino-Source", "superset")], "INSERT INTO iceberg.a.b VALUES (1)", "etl-writes"),
            (vec![], "SELECT 1", "none"),
            (vec![], "this is not sql at all ((((", "none"),
        ];
        for (headers, sql, expected) in cases {
            assert_eq!(outcome(&rules, &headers, sql).0, expected, "{headers:?} {sql}");
        }
    }

    #[test]
    fn sql_is_analysed_only_when_a_rule_needs_it() {
        let rules = compile(
            r#"
- name: by-user
  match: {user: [alice, bob]}
  group: etl
- name: by-kind
  match: {statement.kind: insert}
  group: hive
"#,
        )
        .unwrap();
        assert_eq!(
            outcome(&rules, &[("X-Trino-User", "alice")], "INSERT INTO a.b.c VALUES 1"),
            ("by-user".into(), false)
        );
        assert_eq!(
            outcome(&rules, &[("X-Trino-User", "carol")], "INSERT INTO a.b.c VALUES 1"),
            ("by-kind".into(), true)
        );
        let header_only = compile("- {name: u, match: {user: x}, group: etl}").unwrap();
        assert!(!header_only.needs_statement());
    }

    #[test]
    fn simple_matchers() {
        let rules = compile(
            r#"
- name: regex-source
  match: {source: {regex: '^(airflow|dbt)'}}
  group: etl
- name: tag
  match: {client_tags: [finance, risk]}
  group: hive
- name: header
  match: {headers.x-team: data-eng}
  group: etl
- name: session
  match: {session.query_priority: "1"}
  group: interactive
- name: both
  match: {user: zed, catalog: hive}
  group: hive
- name: catalogs
  match: {statement.catalogs: [iceberg]}
  group: etl
"#,
        )
        .unwrap();
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (vec![("X-Trino-Source", "airflow-prod")], "SELECT 1", "regex-source"),
            (vec![("X-Trino-Source", "my-airflow")], "SELECT 1", "none"),
            (vec![("X-Trino-Client-Tags", "a,risk")], "SELECT 1", "tag"),
            (vec![("X-Team", "data-eng")], "SELECT 1", "header"),
            (vec![("X-Trino-Session", "query_priority=1")], "SELECT 1", "session"),
            (vec![("X-Trino-User", "zed")], "SELECT 1", "none"),
            (vec![("X-Trino-User", "zed"), ("X-Trino-Catalog", "hive")], "SELECT 1", "both"),
            (vec![], "SELECT * FROM iceberg.s.t JOIN hive.s.u ON true", "catalogs"),
        ];
        for (headers, sql, expected) in cases {
            assert_eq!(outcome(&rules, &headers, sql).0, expected, "{headers:?} {sql}");
        }
    }

    #[test]
    fn cel_sees_headers_when_a_condition_names_them() {
        let rules =
            compile(r#"- {name: team, when: 'request.headers["x-team"] == "data"', group: etl}"#).unwrap();
        assert_eq!(outcome(&rules, &[("X-Team", "data")], "SELECT 1").0, "team");
        assert_eq!(outcome(&rules, &[("X-Team", "web")], "SELECT 1").0, "none");
        let rules = compile(r#"- {name: keys, when: '"x-team" in request.headers', group: etl}"#).unwrap();
        assert_eq!(outcome(&rules, &[("X-Team", "web")], "SELECT 1").0, "keys");
    }

    #[test]
    fn cel_runtime_errors_count_as_no_match() {
        let rules = compile(
            r#"
- name: missing-field
  when: 'request.nonexistent == "x"'
  group: etl
- name: not-boolean
  when: 'request.user'
  group: etl
- name: fallback
  when: 'true'
  group: hive
"#,
        )
        .unwrap();
        let request = request(&[("X-Trino-User", "a")]);
        let mut statement = LazyStatement::new("SELECT 1", &request, Limits { max_bytes: 1024 });
        let evaluation = rules.evaluate(&request, &mut statement, true);
        assert_eq!(evaluation.matched, Some(2));
        assert!(matches!(evaluation.trace[0].1, RuleResult::Error(_)), "{:?}", evaluation.trace);
        assert!(matches!(evaluation.trace[1].1, RuleResult::Error(_)), "{:?}", evaluation.trace);
        assert_eq!(evaluation.trace[2].1, RuleResult::Matched);
        assert!(!statement.analysed());
    }

    #[test]
    fn compile_errors_name_the_rule_and_position() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("- {name: a, when: 'request.user ==', group: etl}", "rules[0].when", "line:column 1:"),
            ("- {name: a, when: 'true', group: nope}", "rules[0].group", "no group is named `nope`"),
            ("- {name: a, group: etl}", "rules[0].when", "needs `when`, `match`, or both"),
            ("- {name: a, match: {colour: red}, group: etl}", "rules[0].match.colour", "unknown fact `colour`"),
            ("- {name: a, match: {user: {regex: '('}}, group: etl}", "rules[0].match.user", "bad regular expression"),
            ("- {name: a, when: 'true', group: etl}\n- {name: a, when: 'true', group: etl}", "rules[1].name", "another rule is named `a`"),
            ("- {name: '', when: 'true', group: etl}", "rules[0].name", "must not be empty"),
            ("- {name: a, when: 'true', group: etl, set_headers: {x-envoy-foo: 1}}", "rules[0].set_headers.x-envoy-foo", "not a header"),
        ];
        for (yaml, field, message) in cases {
            let Err((got_field, got_message)) = compile(yaml) else { panic!("{yaml} compiled") };
            assert_eq!(&got_field, field, "{yaml}");
            assert!(got_message.contains(message), "{yaml}: {got_message}");
        }
    }

    #[test]
    fn every_rule_s_problem_is_reported() {
        let yaml = "- {name: a, when: 'true', group: nope}\n- {name: ok, when: 'true', group: etl}\n- {name: a, when: 'true', group: etl}\n- {name: c, group: etl}";
        let raw: Vec<RawRule> = serde_norway::from_str(yaml).unwrap();
        let Err(errors) = RuleSet::compile(&raw, group_index) else { panic!("compiled") };
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["rules[0].group", "rules[2].name", "rules[3].when"]);
    }

    #[test]
    fn set_headers_are_kept_lower_case() {
        let rules = compile("- {name: a, when: 'true', group: etl, set_headers: {X-Trino-Client-Tags: etl}}")
            .unwrap();
        assert_eq!(rules.rules()[0].set_headers, [("x-trino-client-tags".to_owned(), "etl".to_owned())]);
    }
}
