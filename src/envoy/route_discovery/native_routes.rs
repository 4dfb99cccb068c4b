//! The native plan ([`crate::domain::decision::native`]) as Envoy routes: one route per plan entry,
//! placed before the router's own new-statement route, made from it (same path and method match,
//! timeout and retry policy), so that a statement no native route takes still asks the router.
//!
//! - a weighted target: `weighted_clusters` with the plan's weights, no decide filter (no ext_proc
//!   stream), the learn filter only while the plan says so — it then tells the router the cluster
//!   Envoy picked by the `xds.cluster_name` attribute (`envoy::bootstrap`'s learn filter asks for it);
//! - a router target: the router's new-statement route as it is, with the plan's header matches.

use serde_json::{Value, json};

use crate::domain::config::Config;
use crate::domain::decision::native::{HeaderTest, NativeRoute, Target};
use crate::envoy::protocol::{DECIDE_FILTER, LEARN_FILTER};

/// The router's route for `POST /v1/statement` in `envoy::bootstrap::route_config`.
pub const NEW_STATEMENT_ROUTE: &str = "new-statement";

/// Puts `plan`'s routes in front of the new-statement route of `route_config` (the JSON
/// `envoy::bootstrap::route_config` renders). Without that route, nothing changes.
pub fn add(route_config: &mut Value, config: &Config, plan: &[NativeRoute]) {
    let Some(routes) = route_config["virtual_hosts"][0]["routes"].as_array_mut() else { return };
    let Some(at) = routes.iter().position(|r| r["name"] == NEW_STATEMENT_ROUTE) else { return };
    let template = routes[at].clone();
    let native: Vec<Value> = plan.iter().map(|route| render(&template, config, route)).collect();
    routes.splice(at..at, native);
}

fn render(template: &Value, config: &Config, route: &NativeRoute) -> Value {
    let mut rendered = template.clone();
    rendered["name"] = json!(route.name);
    if let Some(headers) = rendered["match"]["headers"].as_array_mut() {
        headers.extend(route.headers.iter().flat_map(|(name, test)| header_matchers(name, test)));
    }
    if !route.set_headers.is_empty() {
        rendered["request_headers_to_add"] = route
            .set_headers
            .iter()
            .map(|(key, value)| {
                json!({ "header": { "key": key, "value": value }, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD" })
            })
            .collect();
    }
    let Target::Weighted(weighted) = &route.target else { return rendered };
    let clusters: Vec<Value> = weighted
        .clusters
        .iter()
        .map(|&(cluster, weight)| json!({ "name": &*config.clusters[cluster].envoy_cluster, "weight": weight }))
        .collect();
    if let Some(action) = rendered["route"].as_object_mut() {
        action.remove("cluster_header");
        action.insert("weighted_clusters".to_owned(), json!({ "clusters": clusters }));
    }
    let learn = template["typed_per_filter_config"][LEARN_FILTER].clone();
    match rendered["typed_per_filter_config"].as_object_mut() {
        Some(filters) if weighted.learn && !learn.is_null() => {
            filters.remove(DECIDE_FILTER);
        }
        _ => {
            // Neither filter: the route is Envoy's alone (the filters are not even created).
            rendered.as_object_mut().map(|r| r.remove("typed_per_filter_config"));
        }
    }
    rendered
}

/// Envoy header matchers for one test.
fn header_matchers(name: &str, test: &HeaderTest) -> Vec<Value> {
    match test {
        HeaderTest::Present => vec![json!({ "name": name, "present_match": true })],
        HeaderTest::OneOf { values, missing_is_empty } => {
            let string_match = match values.as_slice() {
                [one] => json!({ "exact": one }),
                many => {
                    let escaped: Vec<String> = many.iter().map(|v| regex::escape(v)).collect();
                    json!({ "safe_regex": { "regex": format!("(?:{})", escaped.join("|")) } })
                }
            };
            let mut matcher = json!({ "name": name, "string_match": string_match });
            if *missing_is_empty {
                matcher["treat_missing_header_as_empty"] = json!(true);
            }
            vec![matcher]
        }
        // Present, not blank (an absent header fails this one), and not `NONE`.
        HeaderTest::NamesTransaction => vec![
            json!({ "name": name, "string_match": { "safe_regex": { "regex": r".*\S.*" } } }),
            json!({
                "name": name,
                "string_match": { "safe_regex": { "regex": r"\s*(?i:none)\s*" } },
                "invert_match": true,
            }),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::query_id::QueryId;
    use crate::envoy::bootstrap::route_config;
    use crate::envoy::route_discovery::encode_route_config;
    use crate::state::cluster_state::Operator;
    use crate::state::router::Learned;
    use crate::state::router::testing::router_from;

    const NATIVE: &str = "
listen: 127.0.0.1:1
default_group: adhoc
new_query_routing: envoy
rules:
  - {name: team, group: etl, match: {headers.x-team: [etl, batch], source: ''}, set_headers: {x-tag: etl}}
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-b, url: 'http://127.0.0.1:2', group: adhoc, envoy_cluster: 'outbound|2||b'}
  - {name: trino-etl, url: 'http://127.0.0.1:3', group: etl}
";

    fn rendered(router: &crate::state::router::Router) -> Value {
        let snapshot = router.snapshot();
        let mut json = route_config(&snapshot.config, &[]);
        add(&mut json, &snapshot.config, &router.native_plan(&snapshot).unwrap());
        encode_route_config(&json).expect("Envoy's schema takes every native route");
        json
    }

    fn route<'a>(json: &'a Value, name: &str) -> &'a Value {
        json["virtual_hosts"][0]["routes"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap()
    }

    #[test]
    fn native_routes_come_first_as_weighted_clusters() {
        let router = router_from(NATIVE);
        let json = rendered(&router);
        let names: Vec<&str> = json["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            &names[..7],
            [
                "native-transaction",
                "native-rule-0",
                "native-group-0",
                "native-group-1",
                "native-other-group",
                "native-default",
                NEW_STATEMENT_ROUTE
            ]
        );
        let default = route(&json, "native-default");
        assert_eq!(
            default["route"]["weighted_clusters"]["clusters"],
            json!([{ "name": "trino-a", "weight": 100 }, { "name": "outbound|2||b", "weight": 100 }])
        );
        assert!(default["route"].get("cluster_header").is_none());
        assert_eq!(
            default["route"]["retry_policy"],
            route(&json, NEW_STATEMENT_ROUTE)["route"]["retry_policy"]
        );
        let filters = default["typed_per_filter_config"].as_object().unwrap();
        assert_eq!(filters.keys().collect::<Vec<_>>(), [LEARN_FILTER], "no decide; learn: no id known yet");
        let rule = route(&json, "native-rule-0");
        assert_eq!(
            rule["match"]["headers"],
            json!([
                { "name": ":method", "string_match": { "exact": "POST" } },
                { "name": "x-team", "string_match": { "safe_regex": { "regex": "(?:etl|batch)" } } },
                { "name": "x-trino-source", "string_match": { "exact": "" }, "treat_missing_header_as_empty": true },
            ])
        );
        assert_eq!(rule["request_headers_to_add"][0]["header"], json!({ "key": "x-tag", "value": "etl" }));
        let transaction = route(&json, "native-transaction");
        assert!(transaction["typed_per_filter_config"].get(DECIDE_FILTER).is_some(), "to the router");
        assert_eq!(transaction["route"]["cluster_header"], "x-trino-cluster");
    }

    #[test]
    fn weights_and_learning_follow_the_state() {
        let router = router_from(NATIVE);
        let snapshot = router.snapshot();
        for (cluster, id) in [(0, "aaaaa"), (1, "bbbbb")] {
            let query = QueryId::parse(&format!("20260101_120000_00001_{id}")).unwrap();
            router.learn(&snapshot, Learned::QueryOwner { query, cluster });
        }
        let json = rendered(&router);
        assert!(
            route(&json, "native-default").get("typed_per_filter_config").is_none(),
            "ids known: no filter"
        );
        assert!(route(&json, "native-rule-0").get("typed_per_filter_config").is_some(), "etl's id unknown");
        router.set_operator("trino-a", Operator::Draining, "test");
        let json = rendered(&router);
        assert_eq!(
            route(&json, "native-default")["route"]["weighted_clusters"]["clusters"],
            json!([{ "name": "outbound|2||b", "weight": 100 }])
        );
        router.set_operator("trino-b", Operator::Disabled, "test");
        let json = rendered(&router);
        let default = route(&json, "native-default");
        assert_eq!(default["route"]["cluster_header"], "x-trino-cluster", "nowhere to go: the router's 503");
        assert!(default["typed_per_filter_config"].get(DECIDE_FILTER).is_some());
    }
}
