//! Table tests of the native plan: which configs let Envoy place new statements, the routes in order,
//! and the weights from the clusters' state.

use super::*;
use crate::domain::decision::Lookups;
use crate::domain::decision::testing::Fixed;

/// adhoc: trino-a (weight 1), trino-b (weight 2), falls back to etl; etl: trino-etl; vault (restricted):
/// trino-vault.
const BASE: &str = "
listen: 127.0.0.1:1
default_group: adhoc
new_query_routing: envoy
groups:
  - {name: adhoc, fallback: [etl]}
  - {name: vault, allow: {users: [alice]}}
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-b, url: 'http://127.0.0.1:2', group: adhoc, weight: 2}
  - {name: trino-etl, url: 'http://127.0.0.1:3', group: etl}
  - {name: trino-vault, url: 'http://127.0.0.1:4', group: vault}
";

fn config(extra: &str) -> Config {
    crate::domain::config::testing::config(&format!("{BASE}{extra}"))
}

fn not_native(extra: &str) -> Option<NotNative> {
    native_allowed(&config(extra)).err()
}

#[test]
fn which_configs_envoy_can_place() {
    let rule = |r: &str| format!("rules:\n  - {{name: r, group: etl, {r}}}\n");
    #[rustfmt::skip]
    let cases: &[(&str, Option<NotNative>)] = &[
        ("", None),
        ("placement_from_sql: false\n", None),
        ("placement_from_sql: true\n", Some(NotNative::PlacementFromSql)),
        ("query_log: {query_ids: true}\n", Some(NotNative::QueryLog)),
        ("url_prefix: /_trino\n", Some(NotNative::UrlPrefix)),
        (&rule("match: {headers.x-team: etl}"), None),
        (&rule("match: {source: [airflow, dbt], client_info: ''}"), None),
        (&rule("match: {headers.x-team: etl}, set_headers: {x-trino-client-tags: etl}"), None),
        (&rule("match: {statement.kind: insert}"), Some(NotNative::Rule("r".into()))),
        (&rule("match: {user: alice}"), Some(NotNative::Rule("r".into()))),
        (&rule("match: {source: {regex: '^airflow'}}"), Some(NotNative::Rule("r".into()))),
        (&rule("match: {catalog: hive}"), Some(NotNative::Rule("r".into()))),
        (&rule("match: {client_tags: etl}"), Some(NotNative::Rule("r".into()))),
        (&rule("when: 'request.source == \"x\"'"), Some(NotNative::Rule("r".into()))),
    ];
    for (extra, expected) in cases {
        assert_eq!(not_native(extra), *expected, "{extra}");
    }
    let router = crate::domain::config::testing::config(&BASE.replace("new_query_routing: envoy", ""));
    assert_eq!(native_allowed(&router), Err(NotNative::RouterDecides), "router is the default");
    assert!(router.placement_from_sql, "placement_from_sql stays on by default under router");
    assert!(!config("").placement_from_sql, "off by default under envoy");
}

/// The routes for `views` (see `testing::Fixed`) and ids known for the clusters in `known`, one line
/// each: `name headers → target`.
fn routes(extra: &str, views: &'static str, known: &[usize]) -> Vec<String> {
    let lookups = Fixed::new(views, 0);
    let config = config(extra);
    let routes = plan(&config, &|c| lookups.view(c), &|c| known.contains(&c)).unwrap();
    routes
        .iter()
        .map(|r| {
            let headers: Vec<String> = r.headers.iter().map(|(h, t)| format!("{h}={t:?}")).collect();
            let target = match &r.target {
                Target::Router => "router".to_owned(),
                Target::Weighted(w) => format!(
                    "{} {:?}{}",
                    config.groups[w.group].name,
                    w.clusters
                        .iter()
                        .map(|&(c, weight)| (&*config.clusters[c].name, weight))
                        .collect::<Vec<_>>(),
                    if w.learn { " learn" } else { "" }
                ),
            };
            format!("{} [{}] {:?} → {target}", r.name, headers.join(" "), r.set_headers)
        })
        .collect()
}

#[test]
fn routes_in_the_order_the_decision_tries() {
    let extra = "rules:\n  - {name: team, group: etl, match: {headers.x-team: [etl, batch]}, \
                 set_headers: {x-trino-client-tags: etl}}\n";
    let got = routes(extra, "u0 u0 u0 u0", &[0, 1, 2, 3]);
    #[rustfmt::skip]
    let expected = [
        r#"native-transaction [x-trino-transaction-id=NamesTransaction] [] → router"#,
        r#"native-rule-0 [x-team=OneOf { values: ["etl", "batch"], missing_is_empty: false }] [("x-trino-client-tags", "etl")] → etl [("trino-etl", 100)]"#,
        r#"native-group-0 [x-trino-routing-group=OneOf { values: ["adhoc"], missing_is_empty: false }] [] → adhoc [("trino-a", 100), ("trino-b", 200)]"#,
        r#"native-group-2 [x-trino-routing-group=OneOf { values: ["etl"], missing_is_empty: false }] [] → etl [("trino-etl", 100)]"#,
        r#"native-other-group [x-trino-routing-group=Present] [] → router"#,
        r#"native-default [] [] → adhoc [("trino-a", 100), ("trino-b", 200)]"#,
    ];
    assert_eq!(got, expected, "vault (restricted) has no route of its own: the router checks who asks");
}

#[test]
fn weights_follow_state_load_and_fallbacks() {
    // views: trino-a trino-b trino-etl trino-vault; the default route's target, ids all known.
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        ("u0 u0 u0",   r#"adhoc [("trino-a", 100), ("trino-b", 200)]"#),
        ("n0 u0 u0",   r#"adhoc [("trino-b", 200)]"#),                     // draining / disabled / unhealthy
        ("d0 u0 u0",   r#"adhoc [("trino-b", 200)]"#),                     // down
        ("u4 u0 u0",   r#"adhoc [("trino-a", 20), ("trino-b", 200)]"#),    // 4 above the least: 1/5
        ("u0 u1 u0",   r#"adhoc [("trino-a", 100), ("trino-b", 100)]"#),   // load is per unit of weight
        ("u20 u3 u0",  r#"adhoc [("trino-b", 200)]"#),                     // 17 above the least: none
        ("u19 u0 u0",  r#"adhoc [("trino-b", 200)]"#),                     // 19 above the least: none
        ("u16 u0 u0",  r#"adhoc [("trino-b", 200)]"#),                     // exactly the gap: none
        ("u15 u0 u0",  r#"adhoc [("trino-a", 6), ("trino-b", 200)]"#),
        ("u900 u900 u0", r#"adhoc [("trino-a", 100), ("trino-b", 200)]"#), // equally loaded: configured weights
        ("n0 n0 u0",   r#"etl [("trino-etl", 100)]"#),                     // the fallback
        ("n0 d0 u5",   r#"etl [("trino-etl", 100)]"#),
        ("n0 n0 n0",   "router"),                                          // nowhere: the router's 503
    ];
    for (views, expected) in cases {
        let got = routes("", views, &[0, 1, 2, 3]);
        let default = got.last().unwrap();
        let target = default.split(" → ").nth(1).unwrap();
        assert_eq!(target, *expected, "{views}");
    }
}

#[test]
fn learn_only_while_a_coordinator_id_is_unknown() {
    #[rustfmt::skip]
    let cases: &[(&[usize], &str, bool)] = &[
        (&[0, 1, 2, 3], "u0 u0 u0", false),
        (&[1, 2, 3],    "u0 u0 u0", true),   // trino-a's id unknown
        (&[1, 2, 3],    "n0 u0 u0", false),  // ... but it takes no new queries
        (&[0, 2, 3],    "u0 u0 u0", true),
        (&[],           "n0 n0 u0", true),   // the fallback's
        (&[2],          "n0 n0 u0", false),
    ];
    for (known, views, learn) in cases {
        let lookups = Fixed::new(views, 0);
        let config = config("");
        let routes = plan(&config, &|c| lookups.view(c), &|c| known.contains(&c)).unwrap();
        let Target::Weighted(default) = &routes.last().unwrap().target else { panic!("{views}") };
        assert_eq!(default.learn, *learn, "{known:?} {views}");
    }
}
