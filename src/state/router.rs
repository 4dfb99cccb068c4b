//! The router's live state and its questions: where does this request go ([`Router::decide`]), which
//! cluster owns this new query ([`Router::learn`]), and what changed (health, operator, config).
//!
//! The config and the per-cluster run-time state are published together as one immutable
//! [`Snapshot`], swapped atomically on reload; a stream reads one snapshot for each decision. Run-time
//! state is kept per cluster *name* across reloads ([`ClusterRuntime`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::coordinators::query_lookup::Discovery;
use crate::domain::client_request::RequestInfo;
use crate::domain::config::Config;
use crate::domain::decision::{
    Basis, ClusterView, Decision, PrefixedPath, RequestFacts, decide, decide_prefixed,
};
use crate::domain::health::Health;
use crate::domain::query_id::QueryId;
use crate::domain::rules::LazyStatement;
use crate::domain::statement::Limits;
use crate::domain::target::{Target, classify};
use crate::state::affinity::Affinity;
use crate::state::cluster_state::{ClusterRuntime, Operator};

/// The config and the run-time state of its clusters (same order as `config.clusters`).
pub struct Snapshot {
    pub config: Arc<Config>,
    pub clusters: Vec<Arc<ClusterRuntime>>,
}

impl Snapshot {
    /// The index of the cluster whose routing-header value (Envoy cluster name) is `value`.
    pub fn cluster_by_header_value(&self, value: &str) -> Option<usize> {
        self.config.clusters.iter().position(|c| &*c.envoy_cluster == value)
    }

    /// The index of the cluster named `name`.
    pub fn cluster_by_name(&self, name: &str) -> Option<usize> {
        self.config.clusters.iter().position(|c| &*c.name == name)
    }

    fn view(&self, cluster: usize) -> ClusterView {
        let runtime = &self.clusters[cluster];
        ClusterView {
            accepts_new: runtime.accepts_new_queries(),
            down: runtime.health().is_down(),
            load: runtime.load() as f64 / self.config.clusters[cluster].weight,
        }
    }
}

/// Shared by every ext_proc stream, the poller, the admin service and the reloader.
pub struct Router {
    current: ArcSwap<Snapshot>,
    /// Every cluster's run-time state by name, including clusters a reload removed (they may return).
    runtimes: Mutex<HashMap<Arc<str>, Arc<ClusterRuntime>>>,
    affinity: Affinity,
    discovery: Discovery,
    /// Something Envoy's learned routes depend on changed (see `route_discovery`).
    routes_changed: Notify,
    /// Breaks ties between equally loaded clusters (round-robin among equals).
    turn: AtomicUsize,
}

impl Router {
    pub fn new(config: Config) -> Router {
        let affinity = Affinity::new(&config.affinity);
        let runtimes = Mutex::new(HashMap::new());
        let snapshot = Self::snapshot_for(&runtimes, config, None);
        Router {
            current: ArcSwap::from_pointee(snapshot),
            runtimes,
            affinity,
            discovery: Discovery::default(),
            routes_changed: Notify::new(),
            turn: AtomicUsize::new(0),
        }
    }

    /// Notified when something Envoy's learned routes depend on changed (a coordinator id learned, an
    /// operator's say, a health change, a reload); the publisher's tick is the backstop.
    pub fn routes_changed(&self) -> &Notify {
        &self.routes_changed
    }

    /// The current config and cluster state.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn affinity(&self) -> &Affinity {
        &self.affinity
    }

    /// The routing rule (index into the config's rules) that picks the group of a new statement, if any;
    /// `sql` is read only when a rule needs statement facts.
    pub fn apply_rules(&self, snapshot: &Snapshot, request: &RequestInfo, sql: &str) -> Option<usize> {
        let limits = Limits { max_bytes: snapshot.config.max_sql_bytes };
        self.apply_rules_to(snapshot, request, &mut LazyStatement::new(sql, request, limits))
    }

    /// [`Router::apply_rules`] with a statement the caller may read facts from afterwards.
    pub fn apply_rules_to(
        &self,
        snapshot: &Snapshot,
        request: &RequestInfo,
        statement: &mut LazyStatement<'_>,
    ) -> Option<usize> {
        let rules = &snapshot.config.rules;
        if rules.is_empty() {
            return None;
        }
        rules.evaluate(request, statement, false).matched
    }

    /// Where a request whose path names its cluster goes (URL-carried placement); records activity.
    pub fn decide_prefixed(
        &self,
        snapshot: &Snapshot,
        prefixed: &PrefixedPath<'_>,
        facts: &RequestFacts<'_>,
    ) -> Decision {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let decision = decide_prefixed(
            &snapshot.config,
            prefixed,
            facts,
            |id| self.affinity.owner_of(id),
            |c| snapshot.view(c),
            turn,
        );
        if let (Decision::Route { cluster, .. }, Target::Query(id)) =
            (&decision, classify(facts.method, prefixed.rest))
        {
            snapshot.clusters[*cluster].heard_from(&id);
        }
        decision
    }

    /// Where this request would go, without recording it (a decision a later message may replace).
    pub fn decide_tentatively(&self, snapshot: &Snapshot, facts: &RequestFacts<'_>) -> Decision {
        let turn = self.turn.load(Ordering::Relaxed);
        decide(&snapshot.config, facts, |id| self.affinity.owner_of(id), |c| snapshot.view(c), turn)
    }

    /// Where this request goes, decided on `snapshot`; records dispatches and activity.
    pub fn decide(&self, snapshot: &Snapshot, facts: &RequestFacts<'_>) -> Decision {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let decision =
            decide(&snapshot.config, facts, |id| self.affinity.owner_of(id), |c| snapshot.view(c), turn);
        match &decision {
            Decision::Route { cluster, basis: Basis::NewQuery { .. } } => {
                snapshot.clusters[*cluster].dispatched()
            }
            Decision::Route { cluster, basis: Basis::QueryOwner(id) } => {
                snapshot.clusters[*cluster].heard_from(id)
            }
            _ => {}
        }
        decision
    }

    /// Records that `snapshot.config.clusters[cluster]` owns `query`.
    pub fn learn(&self, snapshot: &Snapshot, query: QueryId, cluster: usize) {
        let name = snapshot.config.clusters[cluster].name.clone();
        tracing::debug!(query_id = %query, cluster = %name, "learned query owner");
        snapshot.clusters[cluster].heard_from(&query);
        snapshot.clusters[cluster].learned_now();
        let before = self.affinity.coordinator_id_changes();
        self.affinity.learn(query, name);
        if self.affinity.coordinator_id_changes() != before {
            self.routes_changed.notify_one();
        }
    }

    /// Asks the clusters who owns `query` and learns the answer; returns whether an owner was found.
    pub async fn discover(&self, query: &QueryId) -> bool {
        let snapshot = self.snapshot();
        let by_suffix = query.coordinator_id().is_some_and(|s| !self.affinity.is_shared_suffix(s));
        let timeout = snapshot.config.affinity.discovery_timeout;
        let started = std::time::Instant::now();
        let found = self.discovery.locate(snapshot.clone(), query, by_suffix, timeout).await;
        crate::state::metrics::METRICS.looked_up(found.is_some(), started.elapsed());
        match found.and_then(|name| snapshot.cluster_by_name(&name)) {
            Some(cluster) => {
                tracing::info!(query_id = %query, cluster = %snapshot.config.clusters[cluster].name, "discovered query owner");
                self.learn(&snapshot, query.clone(), cluster);
                true
            }
            None => false,
        }
    }

    /// Envoy could not deliver a new query to this cluster: it takes no new queries until polls say so.
    pub fn delivery_failed(&self, snapshot: &Snapshot, cluster: usize, status: &str) {
        if let Some(health) = snapshot.clusters[cluster].delivery_failed() {
            self.routes_changed.notify_one();
            let name = &snapshot.config.clusters[cluster].name;
            tracing::warn!(cluster = %name, %health, status, "a new query could not be delivered");
        }
    }

    /// The coordinator itself answered a new query with 502/503/504: alive, but taking no new queries
    /// until polls say so. Its running queries are not touched.
    pub fn coordinator_refused(&self, snapshot: &Snapshot, cluster: usize, status: &str) {
        if let Some(health) = snapshot.clusters[cluster].refused_new_query() {
            let name = &snapshot.config.clusters[cluster].name;
            tracing::warn!(cluster = %name, %health, status, "the coordinator refused a new query");
        }
    }

    /// Sets the operator's say over a cluster, by name; `None` when no such cluster is configured.
    pub fn set_operator(&self, name: &str, operator: Operator) -> Option<Operator> {
        let snapshot = self.snapshot();
        let index = snapshot.cluster_by_name(name)?;
        let previous = snapshot.clusters[index].set_operator(operator);
        if previous != operator {
            tracing::info!(cluster = name, from = %previous, to = %operator, "operator changed cluster state");
            self.routes_changed.notify_one();
        }
        Some(previous)
    }

    /// Replaces the config, keeping every cluster's run-time state. A cluster whose `enabled` flag
    /// changed in the file takes the new flag; otherwise the operator's say stands.
    pub fn apply(&self, config: Config) {
        let previous = self.snapshot();
        let snapshot = Self::snapshot_for(&self.runtimes, config, Some(&previous.config));
        self.current.store(Arc::new(snapshot));
        self.routes_changed.notify_one();
    }

    fn snapshot_for(
        runtimes: &Mutex<HashMap<Arc<str>, Arc<ClusterRuntime>>>,
        config: Config,
        previous: Option<&Config>,
    ) -> Snapshot {
        let mut runtimes = runtimes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let clusters = config
            .clusters
            .iter()
            .map(|cluster| {
                let runtime = runtimes
                    .entry(cluster.name.clone())
                    .or_insert_with(|| Arc::new(ClusterRuntime::new(cluster.enabled)))
                    .clone();
                let was_enabled = previous.and_then(|p| p.cluster_named(&cluster.name)).map(|c| c.enabled);
                match (was_enabled, cluster.enabled) {
                    (Some(false), true) => {
                        runtime.set_operator(Operator::Active);
                    }
                    (Some(true), false) => {
                        runtime.set_operator(Operator::Disabled);
                    }
                    _ => {}
                }
                runtime
            })
            .collect();
        Snapshot { config: Arc::new(config), clusters }
    }
}

/// A router over one cluster `a` (group `adhoc`) on an unused loopback port, for tests.
#[cfg(test)]
pub(crate) fn one_cluster_router() -> Router {
    let text = "listen: 127.0.0.1:1\ndefault_group: adhoc\nclusters:\n  - {name: a, url: 'http://127.0.0.1:1', group: adhoc}\n";
    Router::new(
        Config::from_yaml(std::path::Path::new("t"), text, &crate::domain::config::Overrides::default())
            .unwrap(),
    )
}

/// Logs a cluster's health change: one line per change.
pub fn log_health_change(cluster: &str, health: Health, why: &str) {
    match health {
        Health::Healthy => tracing::info!(cluster, %health, why, "cluster state changed"),
        _ => tracing::warn!(cluster, %health, why, "cluster state changed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::Overrides;
    use crate::domain::decision::Basis;
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
        let facts = RequestFacts {
            method: "POST",
            path: "/v1/statement",
            routing_group: group,
            rule_group: None,
            pinned: None,
        };
        match router.decide(&router.snapshot(), &facts) {
            Decision::Route { cluster, basis: Basis::NewQuery { .. } } => cluster,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_queries_spread_by_load() {
        let router = router();
        let picks: Vec<usize> = (0..6).map(|_| new_query(&router, None)).collect();
        let mut counts = [0; 3];
        picks.iter().for_each(|&c| counts[c] += 1);
        assert_eq!(counts, [2, 2, 2], "equal clusters share a burst: {picks:?}");
        assert_eq!(new_query(&router, Some("etl")), 3);
        router.snapshot().clusters[0].coordinator_reported(50);
        let picks: Vec<usize> = (0..4).map(|_| new_query(&router, None)).collect();
        assert!(!picks.contains(&0), "the loaded cluster is avoided: {picks:?}");
    }

    #[test]
    fn learned_owner_places_follow_ups() {
        let router = router();
        let snapshot = router.snapshot();
        let id = QueryId::parse("20260101_120000_00001_abcde").unwrap();
        let path = format!("/v1/statement/executing/{id}/y/1");
        let facts =
            RequestFacts { method: "GET", path: &path, routing_group: None, rule_group: None, pinned: None };
        assert!(matches!(router.decide(&snapshot, &facts), Decision::Refuse(_)));
        router.learn(&snapshot, id.clone(), 2);
        assert_eq!(
            router.decide(&snapshot, &facts),
            Decision::Route { cluster: 2, basis: Basis::QueryOwner(id) }
        );
        assert_eq!(snapshot.clusters[2].in_flight(), 1);
    }

    #[test]
    fn header_values_map_back_to_clusters() {
        let snapshot = router().snapshot();
        assert_eq!(snapshot.cluster_by_header_value("outbound|8080||e.svc"), Some(3));
        assert_eq!(snapshot.cluster_by_header_value("a"), Some(0));
        assert_eq!(snapshot.cluster_by_header_value("e"), None);
    }

    #[test]
    fn operator_and_passive_failures_steer_new_queries() {
        let router = router();
        assert_eq!(router.set_operator("a", Operator::Draining), Some(Operator::Active));
        assert_eq!(router.set_operator("nope", Operator::Draining), None);
        let snapshot = router.snapshot();
        router.delivery_failed(&snapshot, 1, "503");
        let picks: Vec<usize> = (0..5).map(|_| new_query(&router, None)).collect();
        assert_eq!(picks, [2; 5]);
    }

    #[test]
    fn reload_keeps_state_by_name() {
        let router = router();
        router.set_operator("b", Operator::Draining);
        router.snapshot().clusters[2].coordinator_reported(9);
        let text = "
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: c, url: 'http://127.0.0.1:3', group: adhoc}
  - {name: b, url: 'http://127.0.0.1:2', group: adhoc}
  - {name: e, url: 'http://127.0.0.1:4', group: adhoc, enabled: false}
";
        router.apply(Config::from_yaml(Path::new("t.yaml"), text, &Overrides::default()).unwrap());
        let snapshot = router.snapshot();
        assert_eq!(snapshot.clusters[0].coordinator_queries(), Some(9), "c kept its load");
        assert_eq!(snapshot.clusters[1].operator(), Operator::Draining, "b is still draining");
        assert_eq!(snapshot.clusters[2].operator(), Operator::Disabled, "e was disabled in the file");
        assert_eq!(new_query(&router, None), 0, "only c takes new queries");
    }
}
