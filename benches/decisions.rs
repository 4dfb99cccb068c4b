//! How long the router takes to place one new statement, without Envoy: `ClientRequest::from_headers`, a
//! snapshot and `Router::decide_new_statement` (the rules, SQL analysis when a rule needs it, pins and
//! placement: what the ext_proc stream runs once the SQL arrived).
//!
//! `cargo bench --bench decisions` (release). No benchmark framework: each decision is timed on its own
//! with `std::time::Instant` (two clock reads, about 20-40 ns, are included in every figure), after a
//! warm-up; decisions/s is the count over the wall time of the whole timed loop, on one thread.
//!
//! Scenarios:
//! - (a) header-only rules: 10 `match:` rules on user/source/tags/headers/session and a CEL rule on
//!   request fields, which matches; the SQL is never analysed (no rule needs it).
//! - (b) 50 rules on statement facts (CEL and `match:`) and a 2 KB SELECT: the last rule matches, or
//!   (user `guest`) none does. The SQL is analysed once per decision.
//! - baseline: no rules (the routing-group header alone), for scale.
//! - the SQL's cost by statement size (8 B to 32 KB): the full analysis rules on statement facts need,
//!   and the first-keywords scan `placement_from_sql` does when no rule reads them.
//!
//! Targets: (a) p99 ≤ 20 µs, (b) p99 ≤ 1 ms.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use trino_router::domain::client_request::ClientRequest;
use trino_router::domain::config::{Config, Overrides};
use trino_router::domain::decision::new_statement::{NewStatement, NewStatementDecision, Outcome, Placed};
use trino_router::domain::statement::{Defaults, Limits, StatementKind, analyze, quick_placement};
use trino_router::state::router::{Router, Stage};

const CLUSTERS: &str = "
listen: 127.0.0.1:0
default_group: adhoc
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:18081', group: adhoc}
  - {name: trino-b, url: 'http://127.0.0.1:18082', group: adhoc}
  - {name: trino-etl, url: 'http://127.0.0.1:18083', group: etl}
  - {name: trino-hive, url: 'http://127.0.0.1:18084', group: hive}
  - {name: trino-bi, url: 'http://127.0.0.1:18085', group: interactive}
";

const HEADER_RULES: &str = r#"
rules:
  - {name: etl-users, match: {user: [etl-bot, airflow, dbt]}, group: etl}
  - {name: schedulers, match: {source: {regex: '^(airflow|dagster|prefect)'}}, group: etl}
  - {name: batch-tags, match: {client_tags: [nightly, backfill]}, group: etl}
  - {name: service-accounts, match: {user: {regex: '^svc-'}}, group: etl}
  - {name: bi-tools, match: {source: [superset, tableau, looker]}, group: interactive}
  - {name: bi-tags, match: {client_tags: [dashboard, bi]}, group: interactive}
  - {name: data-eng, match: {headers.x-team: data-eng}, group: etl}
  - {name: priority, match: {session.query_priority: "1"}, group: interactive}
  - {name: hive-team, match: {user: [alice, bob], catalog: hive}, group: hive}
  - {name: etl-header, match: {routing_group: etl, user: {regex: '^batch-'}}, group: etl}
  - name: notebooks
    when: '(request.source.startsWith("jupyter") && request.user.endsWith("@example.com")) || "notebook-heavy" in request.client_tags'
    group: interactive
    set_headers: {X-Trino-Resource-Estimate: EXECUTION_TIME=30m}
"#;

/// [`HEADER_RULES`] without its CEL rule.
fn match_rules_only() -> String {
    HEADER_RULES[..HEADER_RULES.find("  - name: notebooks").unwrap_or(HEADER_RULES.len())].to_owned()
}

/// 49 rules on statement facts that do not hold for [`sql`], then the issue's `hive-readers`.
fn statement_rules() -> String {
    let mut yaml = String::from("rules:\n");
    for i in 0..49 {
        let rule = match i % 5 {
            0 => format!("when: '\"cat{i}\" in statement.catalogs'"),
            1 => format!("match: {{statement.tables: [cat{i}.s.t, cat{i}.s.u]}}"),
            2 => format!("when: 'statement.kind == \"insert\" && \"cat{i}.s\" in statement.schemas'"),
            3 => format!("match: {{statement.kind: [delete, update, merge], user: user{i}}}"),
            _ => format!(
                "when: 'statement.tables_read.exists(t, t.startsWith(\"cat{i}.\")) || size(statement.tables_written) > 3'"
            ),
        };
        let group = ["etl", "interactive", "hive"][i % 3];
        let _ = writeln!(yaml, "  - {{name: rule-{i}, {rule}, group: {group}}}");
    }
    yaml.push_str("  - name: hive-readers\n");
    yaml.push_str("    when: '\"hive\" in statement.catalogs && request.user != \"guest\"'\n");
    yaml.push_str("    group: hive\n");
    yaml
}

/// A SELECT of about 2 KB over several catalogs (hive among them), as a BI tool writes it.
fn sql() -> String {
    let mut sql = String::from(
        "WITH recent AS (\n  SELECT o.order_id, o.customer_id, o.total, o.created_at\n  \
         FROM iceberg.sales.orders o\n  WHERE o.created_at >= date_add('day', -30, current_date)\n), \
         views AS (\n  SELECT v.customer_id, count(*) AS n, max(v.ts) AS last_seen\n  \
         FROM hive.web.page_views v\n  WHERE v.ds >= '2026-01-01' AND v.country IN ('DE', 'FR', 'NL', 'SE')\n  \
         GROUP BY v.customer_id\n)\nSELECT c.customer_id, c.name, c.segment, r.total, w.n, w.last_seen,\n  \
         CASE WHEN r.total > 1000 THEN 'gold' WHEN r.total > 100 THEN 'silver' ELSE 'bronze' END AS tier\n\
         FROM iceberg.crm.customers c\nJOIN recent r ON r.customer_id = c.customer_id\n\
         LEFT JOIN views w ON w.customer_id = c.customer_id\n\
         LEFT JOIN postgres.public.regions g ON g.region_id = c.region_id\nWHERE c.active = true\n",
    );
    let mut i = 0;
    while sql.len() < 2000 {
        let _ = writeln!(sql, "  AND (c.attr_{i} IS NULL OR c.attr_{i} <> 'value-{i}')");
        i += 1;
    }
    sql.push_str("ORDER BY r.total DESC\nLIMIT 100");
    sql
}

/// Statements of growing size, each named for its analysis and its placement scan: `SELECT 1`, a short
/// single-table query, the 2 KB bench query, and that query with 8 and 32 KB of predicates.
fn sized_statements(two_kb: &str) -> Vec<((&'static str, &'static str), String)> {
    let grown = |target: usize| {
        let mut text = two_kb.strip_suffix("ORDER BY r.total DESC\nLIMIT 100").unwrap_or(two_kb).to_owned();
        let mut i = 1000;
        while text.len() < target {
            let _ = writeln!(text, "  AND (c.attr_{i} IS NULL OR c.attr_{i} <> 'value-{i}')");
            i += 1;
        }
        text.push_str("ORDER BY r.total DESC\nLIMIT 100");
        text
    };
    vec![
        (("  analyze: SELECT 1 (8 B)", "  quick_placement: SELECT 1"), "SELECT 1".to_owned()),
        (
            ("  analyze: one-table query (~150 B)", "  quick_placement: one-table query"),
            "SELECT id, name, total FROM iceberg.sales.orders WHERE created_at > DATE '2026-01-01' \
             AND status = 'SHIPPED' ORDER BY total DESC LIMIT 10"
                .to_owned(),
        ),
        (("  analyze: the 2 KB query", "  quick_placement: the 2 KB query"), two_kb.to_owned()),
        (("  analyze: 8 KB", "  quick_placement: 8 KB"), grown(8 * 1024)),
        (("  analyze: 32 KB", "  quick_placement: 32 KB"), grown(32 * 1024)),
    ]
}

fn headers(user: &str, source: &str, tags: &str) -> Vec<(String, String)> {
    [
        (":method", "POST"),
        (":path", "/v1/statement"),
        (":authority", "trino.example.com:8080"),
        (":scheme", "http"),
        ("user-agent", "Trino Python Client/0.340.0"),
        ("accept", "*/*"),
        ("accept-encoding", "gzip, deflate"),
        ("content-type", "text/plain"),
        ("content-length", "2048"),
        ("x-trino-user", user),
        ("x-trino-source", source),
        ("x-trino-client-tags", tags),
        ("x-trino-catalog", "iceberg"),
        ("x-trino-schema", "sales"),
        ("x-trino-session", "query_max_run_time=1h,join_distribution_type=AUTOMATIC"),
        ("x-trino-time-zone", "Europe/Berlin"),
        ("x-trino-transaction-id", "NONE"),
        ("x-trino-client-capabilities", "PARAMETRIC_DATETIME,SESSION_AUTHORIZATION"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "5b0c1a8e-5a55-4c1e-9d1e-0b8f5e2f7a41"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .collect()
}

struct Scenario {
    name: &'static str,
    router: Router,
    headers: Vec<(String, String)>,
    sql: String,
    /// The rule that must match (by name), or `None`.
    rule: Option<&'static str>,
    /// The group the decision must place the query in.
    group: &'static str,
    iterations: usize,
    target: Option<Duration>,
}

impl Scenario {
    /// The whole per-new-statement path.
    fn decide(&self) -> NewStatementDecision {
        let pairs = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        let request = ClientRequest::from_headers(pairs, "sub");
        let snapshot = self.router.snapshot();
        let statement =
            NewStatement { request: &request, sql: Some(&self.sql), may_look_up: false, trace_rules: false };
        self.router.decide_new_statement(&snapshot, &statement, Stage::Final)
    }

    /// Fails loudly when the scenario does not take the path it claims to measure.
    fn check(&self) {
        let snapshot = self.router.snapshot();
        let decision = self.decide();
        let rule_name = decision.rules.matched.map(|i| snapshot.config.rules.rules()[i].name.as_str());
        assert_eq!(rule_name, self.rule, "{}: the rule that matched", self.name);
        let Outcome::Route { cluster, placed: Placed::InGroup(_) } = decision.outcome else {
            panic!("{}: not routed as a new query: {decision:?}", self.name)
        };
        let cluster = &snapshot.config.clusters[cluster];
        assert_eq!(&*cluster.group, self.group, "{}: placed on {}", self.name, cluster.name);
    }

    fn run(&self) -> Row {
        self.check();
        measure(self.name, self.iterations, self.target, || self.decide())
    }
}

/// Times `f` `iterations` times, each call on its own, after a warm-up of a tenth as many calls.
fn measure<T>(
    name: &'static str,
    iterations: usize,
    target: Option<Duration>,
    mut f: impl FnMut() -> T,
) -> Row {
    for _ in 0..iterations / 10 {
        black_box(f());
    }
    let mut nanos: Vec<u64> = Vec::with_capacity(iterations);
    let started = Instant::now();
    for _ in 0..iterations {
        let t = Instant::now();
        black_box(f());
        nanos.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let wall = started.elapsed();
    nanos.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * nanos.len() as f64).ceil() as usize).clamp(1, nanos.len());
        Duration::from_nanos(nanos[rank - 1])
    };
    Row {
        name,
        iterations,
        per_second: iterations as f64 / wall.as_secs_f64(),
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: Duration::from_nanos(*nanos.last().unwrap_or(&0)),
        target,
    }
}

struct Row {
    name: &'static str,
    iterations: usize,
    per_second: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    target: Option<Duration>,
}

fn micros(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}

fn router(rules: &str) -> Router {
    let text = format!("{CLUSTERS}{rules}");
    let config = Config::from_yaml(Path::new("bench.yaml"), &text, &Overrides::default())
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    Router::new(config)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: a quick pass then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let scale = |n: usize| if quick { n / 100 } else { n };
    let sql = sql();

    let facts = analyze(&sql, &Defaults::default(), &Limits::default());
    assert_eq!(facts.kind, StatementKind::Select, "the bench SQL must parse as a query: {facts:?}");
    assert!(facts.catalogs.contains(&"hive".to_owned()) && facts.tables.len() >= 4, "{facts:?}");

    let header_router = router(HEADER_RULES);
    assert!(!header_router.snapshot().config.rules.needs_statement(), "(a) must never read the SQL");
    let statement_rules = statement_rules();
    let scenarios = [
        Scenario {
            name: "baseline: no rules, routing-group header",
            router: router(""),
            headers: {
                let mut h = headers("carol@example.com", "jupyter-lab", "notebook");
                h.push(("x-trino-routing-group".to_owned(), "etl".to_owned()));
                h
            },
            sql: sql.clone(),
            rule: None,
            group: "etl",
            iterations: scale(200_000),
            target: None,
        },
        Scenario {
            name: "(a) 10 match rules + 1 CEL rule (matches), no SQL",
            router: header_router,
            headers: headers("carol@example.com", "jupyter-lab", "notebook"),
            sql: sql.clone(),
            rule: Some("notebooks"),
            group: "interactive",
            iterations: scale(200_000),
            target: Some(Duration::from_micros(20)),
        },
        Scenario {
            name: "(b) 50 statement rules, 2 KB SQL, last matches",
            router: router(&statement_rules),
            headers: headers("analyst", "tableau-server", "finance"),
            sql: sql.clone(),
            rule: Some("hive-readers"),
            group: "hive",
            iterations: scale(20_000),
            target: Some(Duration::from_millis(1)),
        },
        Scenario {
            name: "(b) 50 statement rules, 2 KB SQL, none matches",
            router: router(&statement_rules),
            headers: headers("guest", "tableau-server", "finance"),
            sql: sql.clone(),
            rule: None,
            group: "adhoc",
            iterations: scale(20_000),
            target: Some(Duration::from_millis(1)),
        },
    ];

    println!(
        "decisions: one thread, each decision timed alone (Instant before/after); SQL {} bytes{}",
        sql.len(),
        if quick { " — quick pass (run `cargo bench --bench decisions` for figures)" } else { "" }
    );
    println!(
        "{:<52} {:>8} {:>12} {:>9} {:>9} {:>9} {:>9}  target",
        "scenario", "n", "decisions/s", "p50 µs", "p90 µs", "p99 µs", "max µs"
    );
    let mut missed = 0;
    let mut print = |row: Row| {
        let verdict = match row.target {
            Some(_) if quick => "not judged (quick pass)".to_owned(),
            Some(target) if row.p99 <= target => format!("p99 ≤ {} µs: met", micros(target)),
            Some(target) => {
                missed += 1;
                format!("p99 ≤ {} µs: MISSED", micros(target))
            }
            None => "(context)".to_owned(),
        };
        println!(
            "{:<52} {:>8} {:>12.0} {:>9} {:>9} {:>9} {:>9}  {}",
            row.name,
            row.iterations,
            row.per_second,
            micros(row.p50),
            micros(row.p90),
            micros(row.p99),
            micros(row.max),
            verdict
        );
    };
    for scenario in &scenarios {
        print(scenario.run());
    }
    // Where the time goes: the same paths without the CEL rule, and the SQL analysis alone.
    let match_only = Scenario {
        name: "  (a) without its CEL rule: 10 match rules, none match",
        router: router(&match_rules_only()),
        headers: headers("carol@example.com", "jupyter-lab", "notebook"),
        sql: sql.clone(),
        rule: None,
        group: "adhoc",
        iterations: scale(200_000),
        target: None,
    };
    print(match_only.run());
    let defaults = Defaults { catalog: Some("iceberg"), schema: Some("sales") };
    print(measure("  (b) its SQL analysis alone (statement::analyze)", scale(20_000), None, || {
        analyze(&sql, &defaults, &Limits::default())
    }));
    // What a new statement's SQL costs by its size (issue 18): the full analysis rules need, and the
    // scan `placement_from_sql` does when no rule reads statement facts.
    println!("SQL cost by statement size (statement::analyze, statement::quick_placement):");
    for (name, text) in sized_statements(&sql) {
        let n = if text.len() > 8_000 { scale(2_000) } else { scale(20_000) };
        print(measure(name.0, n, None, || analyze(&text, &defaults, &Limits::default())));
        print(measure(name.1, scale(200_000), None, || quick_placement(&text, &Limits::default())));
    }
    if missed > 0 {
        println!("{missed} target(s) missed");
    }
}
