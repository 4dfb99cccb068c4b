//! The new-statement decision, one case a line.

use super::*;
use crate::domain::config::testing::{DECISIONS, config};
use crate::domain::decision::testing::Fixed;

const KILL_A: &str = "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_aaaaa')";
const KILL_ETL: &str =
    "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_eeeee', message => 'x')";
const KILL_VAULT: &str = "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_vvvvv')";
const KILL_GONE: &str = "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_ggggg')";
const KILL_UNKNOWN: &str = "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_zzzzz')";
const INSERT: &str = "INSERT INTO hive.web.t VALUES (1)";

/// A request from a compact spec: `user=`, `source=`, `group=` (routing group), `tx=` (transaction id)
/// set those headers; `resumed` means a lookup was done already (no second one).
fn request(spec: &str) -> (ClientRequest, bool) {
    let mut pairs = vec![(":method", "POST"), (":path", "/v1/statement")];
    let mut may_look_up = true;
    for word in spec.split_whitespace() {
        match word.split_once('=') {
            Some(("user", v)) => pairs.push(("x-trino-user", v)),
            Some(("source", v)) => pairs.push(("x-trino-source", v)),
            Some(("group", v)) => pairs.push(("x-trino-routing-group", v)),
            Some(("tx", v)) => pairs.push(("x-trino-transaction-id", v)),
            _ if word == "resumed" => may_look_up = false,
            _ => panic!("unknown spec word {word}"),
        }
    }
    (ClientRequest::from_headers(pairs, "sub"), may_look_up)
}

/// Decides with `views` (see [`Fixed`]) and turn 1 (the second of equally loaded clusters), and says
/// what happened: where it went (`in` the group placed, `fallback of` the group asked for, `pinned by`),
/// why the group was asked for, and what else the decision says.
fn outcome(spec: &str, sql: Option<&str>, views: &'static str) -> String {
    let config = config(DECISIONS);
    let (request, may_look_up) = request(spec);
    let statement = NewStatement { request: &request, sql, may_look_up, trace_rules: false };
    let d = decide(&config, &statement, &Fixed::new(views, 1));
    let group = |g: usize| config.groups[g].name.to_string();
    let mut out = match &d.outcome {
        Outcome::Route { cluster, placed: Placed::InGroup(g) } if *g == d.group => {
            format!("{} in {}", config.clusters[*cluster].name, group(*g))
        }
        Outcome::Route { cluster, placed: Placed::InGroup(g) } => {
            format!("{} in {} (fallback of {})", config.clusters[*cluster].name, group(*g), group(d.group))
        }
        Outcome::Route { cluster, placed: Placed::Pinned(pin) } => {
            format!("{} pinned by {pin:?}", config.clusters[*cluster].name)
        }
        Outcome::Refuse(refusal) => format!("refuse {}", refusal.reply().status),
        Outcome::LookUp(id) => format!("look up {}", &id.as_str()[22..]),
    };
    out += match d.why {
        GroupReason::Rule(rule) => format!("; rule {}", config.rules.rules()[rule].name),
        GroupReason::RoutingGroupHeader => "; header".to_owned(),
        GroupReason::DefaultGroup => "; default".to_owned(),
    }
    .as_str();
    if let Some(refused) = &d.refused_routing_group {
        out += &format!(" +refused {refused}");
    }
    if let Some(id) = &d.transaction_rewrite {
        out += &format!(" +tx={id}");
    }
    if d.starts_transaction {
        out += " +starts tx";
    }
    if d.doubtful {
        out += " +doubtful";
    }
    out
}

#[test]
fn new_statements() {
    // Clusters: 0 trino-a, 1 trino-b (adhoc, the default); 2 trino-etl, 3 trino-etl2 (etl → adhoc);
    // 4 trino-bi (BI → etl → adhoc); 5 trino-vault (vault: user vault_bot or sources ^airflow only).
    // Views: `u` up, `d` down, `n` up but no new queries, `h` judged unhealthy by the router; a digit is
    // the load; missing ones are `u0`.
    #[rustfmt::skip]
    let cases: &[(&str, Option<&str>, &'static str, &str)] = &[
        // The group: a rule's, else the routing-group header's when it exists, else the default.
        ("", None, "", "trino-b in adhoc; default"),
        ("", Some("SELECT 1"), "", "trino-b in adhoc; default"),
        ("group=etl", None, "", "trino-etl2 in etl; header"),
        ("group=BI", None, "", "trino-bi in BI; header"),
        ("group=bi", None, "", "trino-b in adhoc; default"),
        ("group=adhoc", None, "", "trino-b in adhoc; header"),
        ("group=nope", None, "", "trino-b in adhoc; default"),
        ("group=trino-etl", None, "", "trino-b in adhoc; default"),
        ("", Some(INSERT), "", "trino-etl2 in etl; rule writes"),
        ("", None, "", "trino-b in adhoc; default"),
        ("group=BI", Some(INSERT), "", "trino-etl2 in etl; rule writes"),
        ("source=superset-prod", None, "", "trino-bi in BI; rule dashboards"),
        ("source=superset-prod", Some(INSERT), "", "trino-etl2 in etl; rule writes"),
        ("source=my-superset", None, "", "trino-b in adhoc; default"),
        ("", Some("\u{0}\u{1}(((( not sql"), "", "trino-b in adhoc; default"),
        // Inside a group: the least loaded that takes new queries; then the fallbacks, in order.
        ("", None, "u1 u0", "trino-b in adhoc; default"),
        ("", None, "u0 u1", "trino-a in adhoc; default"),
        ("", None, "u5 u3", "trino-b in adhoc; default"),
        ("", None, "d0 u9", "trino-b in adhoc; default"),
        ("", None, "n0 u9", "trino-b in adhoc; default"),
        ("", None, "u0 n0", "trino-a in adhoc; default"),
        ("", None, "d0 d0", "refuse 503; default"),
        ("", None, "n0 n0", "refuse 503; default"),
        ("group=etl", None, "u0 u0 d0 u0", "trino-etl2 in etl; header"),
        ("group=etl", None, "u0 u0 d0 n0", "trino-b in adhoc (fallback of etl); header"),
        ("group=etl", None, "u0 d0 d0 d0", "trino-a in adhoc (fallback of etl); header"),
        ("group=etl", None, "d0 d0 d0 d0", "refuse 503; header"),
        ("source=superset", None, "u0 u0 u0 u0 d0", "trino-etl2 in etl (fallback of BI); rule dashboards"),
        ("source=superset", None, "u0 u0 d0 d0 d0", "trino-b in adhoc (fallback of BI); rule dashboards"),
        ("source=superset", None, "u0 u0 u4 u2 d0", "trino-etl2 in etl (fallback of BI); rule dashboards"),
        ("source=superset", None, "d0 d0 d0 d0 d0", "refuse 503; rule dashboards"),
        // Every cluster looks unhealthy, none is known down: placed anyway (doubtful), never on a
        // cluster known down or one that says it takes nothing.
        ("", None, "h0 h0", "trino-b in adhoc; default +doubtful"),
        ("", None, "h3 h1", "trino-b in adhoc; default +doubtful"),
        ("", None, "h0 d0", "trino-a in adhoc; default +doubtful"),
        ("", None, "h0 u5", "trino-b in adhoc; default"),
        ("", None, "n0 h0", "trino-b in adhoc; default +doubtful"),
        ("", None, "d0 n0", "refuse 503; default"),
        ("group=etl", None, "h0 h0 h0 n0", "trino-etl in etl; header +doubtful"),
        ("group=etl", None, "u0 h0 h0 h0", "trino-a in adhoc (fallback of etl); header"),
        // A restricted group: the header counts only for its users and sources; rules are not restricted.
        ("group=vault source=airflow-7", None, "", "trino-vault in vault; header"),
        ("group=vault user=mallory", None, "", "trino-b in adhoc; default +refused vault"),
        ("group=vault source=x-airflow", None, "", "trino-b in adhoc; default +refused vault"),
        ("group=vault", None, "", "trino-b in adhoc; default +refused vault"),
        ("user=vault_bot", None, "", "trino-vault in vault; rule vault-bot"),
        ("group=vault source=superset", None, "", "trino-bi in BI; rule dashboards +refused vault"),
        ("user=vault_bot", None, "u0 u0 u0 u0 u0 d0", "refuse 503; rule vault-bot"),
        // A statement of a transaction runs where the transaction lives, whatever the rules say.
        ("tx=tx-a", None, "", "trino-a pinned by Transaction; default"),
        ("tx=tx-a group=etl", Some("SELECT 1"), "", "trino-a pinned by Transaction; header"),
        ("tx=tx-a", Some(INSERT), "", "trino-a pinned by Transaction; rule writes"),
        ("tx=tx-a", None, "n0 u0", "trino-a pinned by Transaction; default"),
        ("tx=tx-etl", None, "", "trino-etl pinned by Transaction; default"),
        ("tx=trino-etl~tx-9", None, "", "trino-etl pinned by Transaction; default +tx=tx-9"),
        ("tx=outbound|6||vault~t1 user=vault_bot", None, "", "trino-vault pinned by Transaction; rule vault-bot +tx=t1"),
        ("tx=outbound|6||vault~t1 user=mallory", None, "", "refuse 403; default +tx=t1"),
        ("tx=tx-a", None, "d0", "refuse 502; default"),
        ("tx=tx-gone", None, "", "refuse 502; default"),
        ("tx=nope~tx-1", None, "", "trino-b in adhoc; default"),
        ("tx=NONE", None, "", "trino-b in adhoc; default"),
        // A statement naming a query (kill_query) runs where that query runs; an unknown one is looked up.
        ("", Some(KILL_A), "", "trino-a pinned by NamedQuery; default"),
        ("", Some(KILL_ETL), "", "trino-etl pinned by NamedQuery; default"),
        ("", Some(KILL_UNKNOWN), "", "look up zzzzz; default"),
        ("resumed", Some(KILL_UNKNOWN), "", "trino-b in adhoc; default"),
        ("", None, "", "trino-b in adhoc; default"),
        ("tx=tx-etl", Some(KILL_A), "", "trino-etl pinned by Transaction; default"),
        ("user=mallory", Some(KILL_VAULT), "", "refuse 403; default"),
        ("source=airflow", Some(KILL_VAULT), "", "trino-vault pinned by NamedQuery; default"),
        ("", Some(KILL_A), "d0", "refuse 502; default"),
        ("", Some(KILL_GONE), "", "refuse 502; default"),
        ("", Some("START TRANSACTION"), "", "trino-b in adhoc; default +starts tx"),
        ("", Some("start transaction read only"), "", "trino-b in adhoc; default +starts tx"),
    ];
    for (spec, sql, views, expected) in cases {
        assert_eq!(outcome(spec, *sql, views), *expected, "request {spec:?}, sql {sql:?}, views {views:?}");
    }
}

#[test]
fn headers_only_decisions_ignore_what_the_sql_names() {
    let config = config(DECISIONS);
    let (request, _) = request("");
    let statement = NewStatement { request: &request, sql: None, may_look_up: true, trace_rules: false };
    let d = decide(&config, &statement, &Fixed::new("", 0));
    assert!(matches!(d.outcome, Outcome::Route { placed: Placed::InGroup(3), .. }), "{d:?}");
    assert!(!d.starts_transaction);
}

#[test]
fn a_turn_is_taken_only_to_choose_between_equals() {
    let config = config(DECISIONS);
    let turns = |spec: &str, sql: Option<&str>| {
        let (request, may_look_up) = request(spec);
        let lookups = Fixed::new("", 0);
        decide(&config, &NewStatement { request: &request, sql, may_look_up, trace_rules: false }, &lookups);
        lookups.turns_taken.get()
    };
    assert_eq!(turns("", None), 1, "two equal clusters");
    assert_eq!(turns("group=BI", None), 1, "one cluster: still asked once");
    assert_eq!(turns("tx=tx-a", None), 0, "pinned");
    assert_eq!(turns("", Some(KILL_UNKNOWN)), 0, "looked up first");
    assert_eq!(turns("tx=outbound|6||vault~t1", None), 0, "refused");
}

#[test]
fn equals_take_turns() {
    let config = config(DECISIONS);
    let (request, _) = request("");
    let statement = NewStatement { request: &request, sql: None, may_look_up: false, trace_rules: false };
    let picks: Vec<Outcome> =
        (0..4).map(|turn| decide(&config, &statement, &Fixed::new("", turn)).outcome).collect();
    let clusters: Vec<usize> = picks
        .iter()
        .map(|o| match o {
            Outcome::Route { cluster, .. } => *cluster,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(clusters, [0, 1, 0, 1]);
}

/// Regression: views were read twice, and a load that rose between the readings left no cluster
/// "tied" for the lowest load — a division by zero that killed the router under concurrent load.
#[test]
fn loads_changing_during_a_decision() {
    struct Rising(std::cell::Cell<f64>);
    impl Lookups for Rising {
        fn owner_of(&self, _: &QueryId) -> Option<Arc<str>> {
            None
        }
        fn transaction_owner(&self, _: &str) -> Option<Arc<str>> {
            None
        }
        fn view(&self, _: usize) -> super::super::ClusterView {
            self.0.set(self.0.get() + 1.0);
            super::super::ClusterView { accepts_new: true, down: false, load: self.0.get(), doubtful: false }
        }
        fn turn(&self) -> usize {
            3
        }
    }
    let config = config(DECISIONS);
    let (request, _) = request("");
    let statement = NewStatement { request: &request, sql: None, may_look_up: false, trace_rules: false };
    for _ in 0..4 {
        let d = decide(&config, &statement, &Rising(std::cell::Cell::new(0.0)));
        assert!(matches!(d.outcome, Outcome::Route { .. }), "{d:?}");
    }
}

#[test]
fn no_capacity_says_when_to_retry() {
    let config = config(DECISIONS);
    let (request, _) = request("");
    let statement = NewStatement { request: &request, sql: None, may_look_up: false, trace_rules: false };
    let d = decide(&config, &statement, &Fixed::new("d0 d0", 0));
    assert_eq!(
        d.outcome,
        Outcome::Refuse(Refusal::NoCapacity { group: "adhoc".into(), retry_after_seconds: 1 })
    );
}

#[test]
fn failing_rules_and_traces_are_reported() {
    let config = config(DECISIONS);
    let (request, _) = request("user=alice");
    let traced =
        NewStatement { request: &request, sql: Some("SELECT 1"), may_look_up: false, trace_rules: true };
    let d = decide(&config, &traced, &Fixed::new("", 0));
    let broken = config.rules.rules().iter().position(|r| r.name == "broken").unwrap();
    assert_eq!(d.rules.failures.len(), 1, "{:?}", d.rules);
    assert_eq!(d.rules.failures[0].0, broken);
    assert_eq!(d.rules.trace.len(), 4, "every rule tried");
    let untraced = NewStatement { trace_rules: false, ..traced };
    assert!(decide(&config, &untraced, &Fixed::new("", 0)).rules.trace.is_empty());
}

#[test]
fn pins_into_restricted_groups() {
    let config = config(DECISIONS);
    #[rustfmt::skip]
    let cases = [
        ("trino-vault", "vault_bot", "cli", None),
        ("trino-vault", "alice", "airflow-7", None),
        ("trino-vault", "mallory", "cli", Some("vault")),
        ("trino-vault", "mallory", "x-airflow", Some("vault")),
        ("trino-vault", "", "", Some("vault")),
        ("trino-a", "mallory", "cli", None),
        ("trino-gone", "mallory", "cli", None),
    ];
    for (cluster, user, source, refused_by) in cases {
        let got = pin_refused_by(&config, cluster, user, source);
        assert_eq!(got.as_deref(), refused_by, "{cluster} {user} {source}");
    }
}

#[test]
fn restricted_groups_admit_only_their_users_and_sources() {
    let config = config(DECISIONS);
    #[rustfmt::skip]
    let rows: [(Option<&str>, &str, &str, Option<&str>); 8] = [
        (Some("vault"), "vault_bot", "", Some("vault")),
        (Some("vault"), "alice", "airflow-dag-1", Some("vault")),
        (Some("vault"), "alice", "trino-cli", None),
        (Some("vault"), "vault_bot2", "", None),
        (Some(" vault "), "mallory", "x-airflow", None),
        (Some("adhoc"), "mallory", "", Some("adhoc")),
        (Some("nope"), "mallory", "", Some("nope")),
        (None, "vault_bot", "airflow", None),
    ];
    for (asked, user, source, want) in rows {
        assert_eq!(permitted_routing_group(&config, asked, user, source), want, "{asked:?} {user} {source}");
    }
}

/// A default group whose clusters are two fallbacks away: every new query is placed at the chain's end
/// (it was refused when placement followed one fallback level only).
#[test]
fn new_queries_follow_the_whole_fallback_chain() {
    let config = config(crate::domain::config::testing::CHAIN);
    let place = |spec: &str, views: &'static str| {
        let (request, _) = request(spec);
        let statement = NewStatement { request: &request, sql: None, may_look_up: false, trace_rules: false };
        match decide(&config, &statement, &Fixed::new(views, 0)).outcome {
            Outcome::Route { cluster, placed: Placed::InGroup(g) } => {
                format!("{} in {}", config.clusters[cluster].name, config.groups[g].name)
            }
            Outcome::Refuse(refusal) => format!("refuse {}", refusal.reply().status),
            other => format!("{other:?}"),
        }
    };
    assert_eq!(place("", ""), "back-1 in back");
    assert_eq!(place("group=middle", "n0"), "back-2 in back");
    assert_eq!(place("", "n0 n0 u0"), "refuse 503", "side is not in front's chain");
    assert_eq!(place("group=side", ""), "side-1 in side");
}
