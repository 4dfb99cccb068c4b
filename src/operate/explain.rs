//! What the rules would do with a request, offline: the facts they see, each rule tried, the rule that
//! matched, and the group and cluster a new query would get. Serves `trino-router explain` (a dry run
//! before a rules change ships) and the rule test cases that `trino-router check` runs.

use std::fmt::Write;
use std::sync::Arc;

use crate::domain::client_request::ClientRequest;
use crate::domain::config::{Config, RuleTest};
use crate::domain::decision::native::{self, NotNative};
use crate::domain::decision::new_statement::{
    GroupReason, NewStatement, NewStatementDecision, Outcome, Placed, decide,
};
use crate::domain::decision::{ClusterView, Lookups};
use crate::domain::query_id::QueryId;
use crate::domain::rules::{LazyStatement, RuleResult};
use crate::domain::statement::Limits;

/// What `explain` assumes of the live state: every cluster healthy and idle, nothing learned.
struct Idle;

impl Lookups for Idle {
    fn owner_of(&self, _: &QueryId) -> Option<Arc<str>> {
        None
    }

    fn transaction_owner(&self, _: &str) -> Option<Arc<str>> {
        None
    }

    fn view(&self, _: usize) -> ClusterView {
        ClusterView { accepts_new: true, down: false, load: 0.0, doubtful: false }
    }

    fn turn(&self) -> usize {
        0
    }
}

/// The new-statement decision for `request` and `sql`, as the ext_proc stream makes it, with every rule
/// traced, over [`Idle`] clusters.
fn decide_offline(config: &Config, request: &ClientRequest, sql: &str) -> NewStatementDecision {
    let statement = NewStatement { request, sql: Some(sql), may_look_up: false, trace_rules: true };
    decide(config, &statement, &Idle)
}

/// The report `trino-router explain` prints.
pub fn explain(config: &Config, request: &ClientRequest, sql: &str) -> String {
    let mut out = String::new();
    write_request(&mut out, request);
    write_statement(&mut out, config, request, sql);
    let decision = decide_offline(config, request, sql);
    let _ = writeln!(out, "rules ({}):", config.rules.rules().len());
    for (index, rule) in config.rules.rules().iter().enumerate() {
        let result = match decision.rules.trace.iter().find(|(i, _)| *i == index).map(|(_, r)| r) {
            Some(RuleResult::Matched) => "MATCHED".to_owned(),
            Some(RuleResult::NotMatched) => "no match".to_owned(),
            Some(RuleResult::Error(e)) => format!("error (counts as no match): {e}"),
            None => "not tried (an earlier rule matched)".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {}. {} -> group {}: {result}",
            index + 1,
            rule.name,
            config.groups[rule.group].name
        );
    }
    let why = match decision.why {
        GroupReason::Rule(rule) => format!("rule {}", config.rules.rules()[rule].name),
        GroupReason::RoutingGroupHeader => "X-Trino-Routing-Group".to_owned(),
        GroupReason::DefaultGroup if decision.refused_routing_group.is_some() => {
            "default_group (the X-Trino-Routing-Group it names does not admit this user or source)".to_owned()
        }
        GroupReason::DefaultGroup => "default_group".to_owned(),
    };
    let cluster = match &decision.outcome {
        Outcome::Route { cluster, placed: Placed::InGroup(_) } => config.clusters[*cluster].name.to_string(),
        Outcome::Route { cluster, placed: Placed::Pinned(pin) } => {
            format!("{} (pinned: {pin:?})", config.clusters[*cluster].name)
        }
        Outcome::Refuse(refusal) => format!("none ({refusal:?})"),
        Outcome::LookUp(id) => format!("none (query {id} is unknown)"),
    };
    let _ = writeln!(
        out,
        "decision: {why} -> group {} -> cluster {cluster} (if every cluster were healthy and idle)",
        config.groups[decision.group].name
    );
    out
}

fn write_request(out: &mut String, request: &ClientRequest) {
    let list = |items: &[String]| format!("[{}]", items.join(", "));
    let _ = writeln!(out, "request:");
    let _ = writeln!(out, "  method: {}  path: {}", request.method, request.path);
    let _ = writeln!(out, "  user: {:?}  source: {:?}", request.user, request.source);
    let _ = writeln!(
        out,
        "  client_tags: {}  client_info: {:?}",
        list(&request.client_tags),
        request.client_info
    );
    let _ = writeln!(
        out,
        "  routing_group: {:?}  catalog: {:?}  schema: {:?}",
        request.routing_group, request.catalog, request.schema
    );
    let session: Vec<String> = request.session.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(out, "  session: {}", list(&session));
}

fn write_statement(out: &mut String, config: &Config, request: &ClientRequest, sql: &str) {
    let list = |items: &[String]| format!("[{}]", items.join(", "));
    let limits = Limits { max_bytes: config.max_sql_bytes };
    let mut statement = LazyStatement::new(sql, request, limits);
    let facts = statement.facts();
    let _ = writeln!(out, "statement ({} bytes):", sql.len());
    let _ = writeln!(out, "  kind: {}", facts.kind.as_str());
    let _ = writeln!(out, "  catalogs: {}", list(&facts.catalogs));
    let _ = writeln!(out, "  schemas: {}", list(&facts.schemas));
    let _ = writeln!(out, "  tables: {}", list(&facts.tables));
    let _ = writeln!(
        out,
        "  tables_read: {}  tables_written: {}",
        list(&facts.tables_read),
        list(&facts.tables_written)
    );
}

/// Under `new_query_routing: envoy`, whether Envoy will place new statements itself, or why not (for
/// `check`); `None` under `router`.
pub fn native_placement(config: &Config) -> Option<String> {
    match native::native_allowed(config) {
        Ok(()) => Some(
            "new queries: placed by Envoy (routes served over RDS; --static-routes leaves them to the router)"
                .to_owned(),
        ),
        Err(NotNative::RouterDecides) => None,
        Err(why) => Some(format!("new queries: decided by the router, not Envoy: {}", why.reason())),
    }
}

/// Runs the config's rule test cases: each name with `Ok` or what went wrong.
pub fn run_rule_tests(config: &Config) -> Vec<(String, Result<(), String>)> {
    config.rule_tests.iter().map(|test| (test.name.clone(), run_rule_test(config, test))).collect()
}

fn run_rule_test(config: &Config, test: &RuleTest) -> Result<(), String> {
    let mut pairs: Vec<(&str, &str)> = vec![(":method", "POST"), (":path", "/v1/statement")];
    pairs.extend(test.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let request = ClientRequest::from_headers(pairs, &config.jwt_user_claim);
    let decision = decide_offline(config, &request, &test.sql);
    let got_rule = decision.rules.matched.map_or("none", |i| config.rules.rules()[i].name.as_str());
    let got_group = &config.groups[decision.group].name;
    if **got_group != *test.expect_group {
        return Err(format!("expected group {}, got {got_group} (rule {got_rule})", test.expect_group));
    }
    match &test.expect_rule {
        Some(expected) if expected != got_rule => {
            Err(format!("expected rule {expected}, got rule {got_rule}"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-etl, url: 'http://127.0.0.1:2', group: etl}
  - {name: trino-hive, url: 'http://127.0.0.1:3', group: hive}
rules:
  - name: etl-writes
    when: 'statement.kind in ["insert", "create_table_as", "merge"]'
    group: etl
  - name: hive-readers
    when: '"hive" in statement.catalogs && request.user != "guest"'
    group: hive
rule_tests:
  - {name: insert goes to etl, sql: 'INSERT INTO hive.web.t SELECT 1', expect_group: etl, expect_rule: etl-writes}
  - {name: hive reader, headers: {X-Trino-User: alice}, sql: 'SELECT * FROM hive.web.t', expect_group: hive}
  - {name: guest stays, headers: {X-Trino-User: guest}, sql: 'SELECT * FROM hive.web.t', expect_group: adhoc, expect_rule: none}
  - {name: header group, headers: {X-Trino-Routing-Group: etl}, sql: 'SELECT 1', expect_group: etl}
  - {name: wrong on purpose, sql: 'SELECT 1', expect_group: hive}
  - {name: wrong rule on purpose, sql: 'INSERT INTO a.b.c VALUES 1', expect_group: etl, expect_rule: hive-readers}
"#;

    fn config() -> Config {
        crate::domain::config::testing::config(CONFIG)
    }

    #[test]
    fn rule_tests_report_each_case() {
        let results = run_rule_tests(&config());
        let summary: Vec<(&str, bool)> = results.iter().map(|(n, r)| (n.as_str(), r.is_ok())).collect();
        assert_eq!(
            summary,
            [
                ("insert goes to etl", true),
                ("hive reader", true),
                ("guest stays", true),
                ("header group", true),
                ("wrong on purpose", false),
                ("wrong rule on purpose", false),
            ]
        );
        assert_eq!(results[4].1, Err("expected group hive, got adhoc (rule none)".to_owned()));
        assert_eq!(results[5].1, Err("expected rule hive-readers, got rule etl-writes".to_owned()));
    }

    #[test]
    fn explain_shows_facts_rules_and_decision() {
        let request = ClientRequest::from_headers(
            [
                (":method", "POST"),
                (":path", "/v1/statement"),
                ("X-Trino-User", "alice"),
                ("X-Trino-Catalog", "hive"),
                ("X-Trino-Schema", "web"),
            ],
            "sub",
        );
        let report = explain(&config(), &request, "SELECT * FROM page_views");
        for expected in [
            "user: \"alice\"",
            "kind: select",
            "catalogs: [hive]",
            "tables: [hive.web.page_views]",
            "1. etl-writes -> group etl: no match",
            "2. hive-readers -> group hive: MATCHED",
            "decision: rule hive-readers -> group hive -> cluster trino-hive",
        ] {
            assert!(report.contains(expected), "missing {expected:?} in\n{report}");
        }
        let report = explain(&config(), &request, "INSERT INTO x.y.z VALUES 1");
        assert!(report.contains("2. hive-readers -> group hive: not tried"), "{report}");
    }
}
