//! The router's live state and its two questions: where does this request go ([`Router::decide`]), and
//! which cluster owns this new query ([`Router::learn`]).
//!
//! It joins the pure [`decision`](crate::decision) with what the router remembers: the config, the
//! learned query owners ([`Affinity`]) and the per-group round-robin counters that spread new queries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::affinity::Affinity;
use crate::config::{Cluster, Config, Group};
use crate::decision::{Decision, RequestFacts, decide};
use crate::query_id::QueryId;

/// Shared by every ext_proc stream.
pub struct Router {
    config: Arc<Config>,
    affinity: Affinity,
    /// Next member to take, per group index.
    round_robin: Vec<AtomicUsize>,
}

impl Router {
    pub fn new(config: Config) -> Router {
        let affinity = Affinity::new(&config.affinity);
        let round_robin = config.groups.iter().map(|_| AtomicUsize::new(0)).collect();
        Router { config: Arc::new(config), affinity, round_robin }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn affinity(&self) -> &Affinity {
        &self.affinity
    }

    /// Where this request goes.
    pub fn decide(&self, facts: &RequestFacts<'_>) -> Decision {
        decide(
            &self.config,
            facts,
            |id| self.affinity.owner_of(id),
            |group, members| self.spread(group, members),
        )
    }

    /// The cluster whose routing-header value (Envoy cluster name) is `value`.
    pub fn cluster_by_header_value(&self, value: &str) -> Option<&Cluster> {
        self.config.clusters.iter().find(|c| &*c.envoy_cluster == value)
    }

    /// Records that `cluster` (by name) owns `query`.
    pub fn learn(&self, query: QueryId, cluster: Arc<str>) {
        tracing::debug!(query_id = %query, %cluster, "learned query owner");
        self.affinity.learn(query, cluster);
    }

    /// Round-robin inside a group.
    fn spread(&self, group: usize, members: &Group) -> usize {
        let turn = self.round_robin[group].fetch_add(1, Ordering::Relaxed);
        members.members[turn % members.members.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use crate::decision::Basis;
    use std::path::Path;

    fn router() -> Router {
        let text = "
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: b, url: 'http://127.0.0.1:2', group: adhoc}
  - {name: c, url: 'http://127.0.0.1:3', group: adhoc}
  - {name: e, url: 'http://127.0.0.1:4', group: etl, envoy_cluster: 'outbound|8080||e.svc'}
";
        Router::new(Config::from_yaml(Path::new("t.yaml"), text, &Overrides::default()).unwrap())
    }

    fn new_query(router: &Router, group: Option<&str>) -> usize {
        let facts = RequestFacts { method: "POST", path: "/v1/statement", routing_group: group };
        match router.decide(&facts) {
            Decision::Route { cluster, basis: Basis::NewQuery { .. } } => cluster,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_queries_take_turns_per_group() {
        let router = router();
        let picks: Vec<usize> = (0..7).map(|_| new_query(&router, None)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(new_query(&router, Some("etl")), 3);
        assert_eq!(new_query(&router, None), 1);
    }

    #[test]
    fn learned_owner_places_follow_ups() {
        let router = router();
        let id = QueryId::parse("20260101_120000_00001_abcde").unwrap();
        let path = format!("/v1/statement/executing/{id}/y/1");
        let facts = RequestFacts { method: "GET", path: &path, routing_group: None };
        assert!(matches!(router.decide(&facts), Decision::Refuse(_)));
        router.learn(id.clone(), "c".into());
        assert_eq!(router.decide(&facts), Decision::Route { cluster: 2, basis: Basis::QueryOwner(id) });
    }

    #[test]
    fn header_values_map_back_to_clusters() {
        let router = router();
        assert_eq!(router.cluster_by_header_value("outbound|8080||e.svc").map(|c| &*c.name), Some("e"));
        assert_eq!(router.cluster_by_header_value("a").map(|c| &*c.name), Some("a"));
        assert!(router.cluster_by_header_value("e").is_none());
    }
}
