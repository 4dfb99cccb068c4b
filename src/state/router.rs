//! The router's live state and the door to it: where does this request go
//! ([`Router::decide_new_statement`], [`Router::decide_follow_up`]: the pure decisions of
//! [`crate::domain::decision`] over this state), what the router learned ([`Router::learn`], the one
//! door through which anything is written to the affinity tables), and what changed (health, operator,
//! config).
//!
//! The config and the per-cluster run-time state are published together as one immutable
//! [`Snapshot`], swapped atomically on reload; a stream reads one snapshot for each decision. Run-time
//! state is kept per cluster *name* across reloads ([`ClusterRuntime`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::domain::config::Config;
use crate::domain::decision::follow_up::{self, Decision, FollowUp};
use crate::domain::decision::native::{self, NativeRoute, NotNative};
use crate::domain::decision::new_statement::{self, NewStatement, NewStatementDecision, Outcome, Placed};
use crate::domain::decision::{ClusterView, Lookups};
use crate::domain::health::Health;
use crate::domain::query_id::QueryId;
use crate::domain::target::Target;
use crate::state::affinity::{Affinity, Placement, Published};
use crate::state::cluster_state::{ClusterRuntime, Operator};
use crate::state::operator_store::OperatorStore;

/// The config and the run-time state of its clusters (same order as `config.clusters`).
pub struct Snapshot {
    pub config: Arc<Config>,
    pub clusters: Vec<Arc<ClusterRuntime>>,
}

impl Snapshot {
    /// The index of the cluster whose routing-header value (Envoy cluster name) is `value`.
    pub fn cluster_by_header_value(&self, value: &str) -> Option<usize> {
        self.config.cluster_by_envoy_cluster(value)
    }

    /// The index of the cluster named `name`.
    pub fn cluster_by_name(&self, name: &str) -> Option<usize> {
        self.config.cluster_index(name)
    }

    fn view(&self, cluster: usize) -> ClusterView {
        let runtime = &self.clusters[cluster];
        let health = runtime.health();
        ClusterView {
            accepts_new: runtime.accepts_new_queries(),
            down: health.is_down(),
            load: runtime.load() as f64 / self.config.clusters[cluster].weight,
            doubtful: health == Health::Unhealthy && runtime.operator() == Operator::Active,
        }
    }
}

/// Whether a decision is the one that counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// It may be replaced by a later one (a new statement routed on its headers while its SQL is on the
    /// way): nothing is recorded, no turn is taken.
    Tentative,
    /// It counts: a new query is recorded as dispatched, a turn among equals is taken.
    Final,
}

/// Something the router learned: what [`Router::learn`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// `Config::clusters[cluster]` owns `query` (from its first answer, or a lookup).
    QueryOwner { query: QueryId, cluster: usize },
    /// `query` starts a transaction: its answers are watched for the transaction's id.
    TransactionStarting(QueryId),
    /// `Config::clusters[cluster]` started transaction `id`.
    TransactionStarted { id: String, cluster: usize },
    /// Transaction `id` ended.
    TransactionEnded(String),
}

/// Why a coordinator is asked whether it knows a query ([`Check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckReason {
    /// A learned owner claims a coordinator id another cluster owns: shared only if confirmed.
    Claim,
    /// A client asked about a query the router neither placed nor verified: it counts as in flight only
    /// once its coordinator confirms it.
    InFlight,
}

/// A question for `cluster`'s coordinator: does it know `query` (`GET /v1/query/{id}`)?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub query: QueryId,
    pub cluster: Arc<str>,
    pub reason: CheckReason,
}

/// Checks waiting for the checker at most; more are dropped (and counted).
pub const MAX_PENDING_CHECKS: usize = 256;

/// How long a query that was checked (or is being checked) is not checked again.
pub const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Shared by every ext_proc stream, the poller, the admin service and the reloader.
pub struct Router {
    current: ArcSwap<Snapshot>,
    /// Every cluster's run-time state by name, including clusters a reload removed (they may return).
    runtimes: Mutex<HashMap<Arc<str>, Arc<ClusterRuntime>>>,
    affinity: Affinity,
    /// Something Envoy's learned routes depend on changed (see `route_discovery`).
    routes_changed: Notify,
    /// Breaks ties between equally loaded clusters (round-robin among equals).
    turn: AtomicUsize,
    /// The operator's say over every cluster, as the replicas share it; the clusters' run-time state
    /// follows it.
    operators: OperatorStore,
    /// Questions for coordinators ([`Check`]), answered by `coordinators::checks`.
    checks: tokio::sync::mpsc::Sender<Check>,
    checks_inbox: Mutex<Option<tokio::sync::mpsc::Receiver<Check>>>,
    /// Notified when a cluster looks suspect (a failed delivery): the poller polls at once.
    suspect: Notify,
    /// Checks not queued: too many were waiting.
    checks_dropped: std::sync::atomic::AtomicU64,
    /// Queries checked or being checked recently (bounded): not asked again within [`CHECK_INTERVAL`].
    checked: moka::sync::Cache<(QueryId, CheckReason), ()>,
    /// Whether the poller finished its first round (coordinator ids published in `/v1/info` are known).
    polled: tokio::sync::watch::Sender<bool>,
}

/// The live state as a decision asks for it.
struct LiveLookups<'a> {
    router: &'a Router,
    snapshot: &'a Snapshot,
    stage: Stage,
}

impl Lookups for LiveLookups<'_> {
    fn owner_of(&self, query: &QueryId) -> Option<Arc<str>> {
        self.router.affinity.owner_of(query)
    }

    fn restarted_owner(&self, query: &QueryId) -> Option<Arc<str>> {
        self.router.affinity.restarted_owner(query)
    }

    fn transaction_owner(&self, id: &str) -> Option<Arc<str>> {
        self.router.affinity.transaction_owner(id)
    }

    fn view(&self, cluster: usize) -> ClusterView {
        self.snapshot.view(cluster)
    }

    fn turn(&self) -> usize {
        match self.stage {
            Stage::Final => self.router.turn.fetch_add(1, Ordering::Relaxed),
            Stage::Tentative => self.router.turn.load(Ordering::Relaxed),
        }
    }
}

/// What the router has learned, for reading: writes go through [`Router::learn`] only.
#[derive(Clone, Copy)]
pub struct AffinityView<'a>(&'a Affinity);

impl AffinityView<'_> {
    /// The cluster that owns `query`, if known.
    pub fn owner_of(&self, query: &QueryId) -> Option<Arc<str>> {
        self.0.owner_of(query)
    }

    /// Whether `query`'s answers are watched for the transaction it starts.
    pub fn is_watched(&self, query: &QueryId) -> bool {
        self.0.is_watched(query)
    }

    /// Whether a coordinator id is known to be ambiguous (so lookups must go by exact id).
    pub fn is_shared_suffix(&self, suffix: &str) -> bool {
        self.0.is_shared_suffix(suffix)
    }

    /// See [`Affinity::restarted_owner`].
    pub fn restarted_owner(&self, query: &QueryId) -> Option<Arc<str>> {
        self.0.restarted_owner(query)
    }

    /// Coordinator ids known.
    pub fn coordinator_ids(&self) -> usize {
        self.0.coordinator_ids()
    }

    /// Exact entries remembered.
    pub fn exact_entries(&self) -> u64 {
        self.0.exact_entries()
    }

    /// See [`Affinity::coordinator_id_changes`].
    pub fn coordinator_id_changes(&self) -> u64 {
        self.0.coordinator_id_changes()
    }

    /// See [`Affinity::recent_coordinator_ids`].
    pub fn recent_coordinator_ids(&self, cluster: &str, limit: usize) -> Vec<Box<str>> {
        self.0.recent_coordinator_ids(cluster, limit)
    }
}

impl Router {
    pub fn new(config: Config) -> Router {
        let affinity = Affinity::new(&config.affinity);
        let operators = OperatorStore::new(config.fleet.replica.clone());
        let runtimes = Mutex::new(HashMap::new());
        let snapshot = Self::snapshot_for(&runtimes, config);
        let (checks, inbox) = tokio::sync::mpsc::channel(MAX_PENDING_CHECKS);
        Router {
            current: ArcSwap::from_pointee(snapshot),
            runtimes,
            affinity,
            routes_changed: Notify::new(),
            turn: AtomicUsize::new(0),
            operators,
            checks,
            checks_inbox: Mutex::new(Some(inbox)),
            suspect: Notify::new(),
            checks_dropped: std::sync::atomic::AtomicU64::new(0),
            checked: moka::sync::Cache::builder()
                .max_capacity(crate::state::cluster_state::MAX_CLIENT_KEYED)
                .time_to_live(CHECK_INTERVAL)
                .build(),
            polled: tokio::sync::watch::channel(false).0,
        }
    }

    /// Notified when a cluster looks suspect: poll now rather than at the next interval.
    pub fn suspect(&self) -> &Notify {
        &self.suspect
    }

    /// The questions for coordinators, for the one task that answers them (`None` once taken).
    pub fn take_checks(&self) -> Option<tokio::sync::mpsc::Receiver<Check>> {
        self.checks_inbox.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Asks (at most once per [`CHECK_INTERVAL`] per query, and never more than
    /// [`MAX_PENDING_CHECKS`] waiting) whether `cluster`'s coordinator knows `query`.
    fn check(&self, query: &QueryId, cluster: Arc<str>, reason: CheckReason) {
        let key = (query.clone(), reason);
        if self.checked.contains_key(&key) {
            return;
        }
        self.checked.insert(key, ());
        if self.checks.try_send(Check { query: query.clone(), cluster, reason }).is_err() {
            self.checks_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(query_id = %query, "too many checks waiting: this one is dropped");
        }
    }

    /// Checks dropped since the start because too many were waiting.
    pub fn checks_dropped(&self) -> u64 {
        self.checks_dropped.load(Ordering::Relaxed)
    }

    /// A coordinator's answer to a [`Check`]: `Some(true)` when it knows the query, `Some(false)` when
    /// it does not (the caller counts it), `None` when it gave no clear answer (nothing is confirmed).
    pub fn checked(&self, check: Check, known: Option<bool>) {
        let snapshot = self.snapshot();
        let Some(cluster) = snapshot.cluster_by_name(&check.cluster) else { return };
        match (check.reason, known) {
            (CheckReason::Claim, Some(true)) => {
                self.affinity.confirm_shared(check.query, check.cluster);
                self.routes_changed.notify_one();
            }
            (CheckReason::InFlight, Some(true)) => {
                snapshot.clusters[cluster].verified(&check.query);
                snapshot.clusters[cluster].heard_from(&check.query);
            }
            (reason, Some(false)) => {
                tracing::warn!(
                    query_id = %check.query,
                    cluster = %check.cluster,
                    ?reason,
                    "the coordinator does not know a query said to be its own: ignored"
                );
            }
            (reason, None) => {
                tracing::debug!(query_id = %check.query, cluster = %check.cluster, ?reason, "a check got no answer")
            }
        }
    }

    /// The poller finished a round: what coordinators publish in `/v1/info` is known.
    pub fn polled(&self) {
        self.polled.send_replace(true);
    }

    /// Waits (at most `limit`) for the poller's first round, so a request that comes before it — Envoy
    /// sends to a router that is not SERVING yet when no other is — is placed by the coordinator ids the
    /// round learns rather than by a lookup.
    pub async fn first_round(&self, limit: std::time::Duration) {
        let mut polled = self.polled.subscribe();
        let _ = tokio::time::timeout(limit, polled.wait_for(|done| *done)).await;
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

    /// What the router has learned about where queries and transactions live.
    pub fn affinity(&self) -> AffinityView<'_> {
        AffinityView(&self.affinity)
    }

    /// Where a new statement goes ([`new_statement::decide`] on `snapshot`). A final decision that
    /// places the statement in a group records the dispatch.
    pub fn decide_new_statement(
        &self,
        snapshot: &Snapshot,
        statement: &NewStatement<'_>,
        stage: Stage,
    ) -> NewStatementDecision {
        let lookups = LiveLookups { router: self, snapshot, stage };
        let decision = new_statement::decide(&snapshot.config, statement, &lookups);
        if let (Stage::Final, Outcome::Route { cluster, placed: Placed::InGroup(_) }) =
            (stage, &decision.outcome)
        {
            snapshot.clusters[*cluster].dispatched();
        }
        decision
    }

    /// Which new statements Envoy may place by itself under `snapshot`, and where ([`native::plan`]): the
    /// clusters' state as the router's own decisions see it (operator state as the replicas share it,
    /// health, load); a cluster's coordinator id counts as known once the coordinator-id table has one
    /// for it, however it got there (a first answer read, a lookup, the poller).
    pub fn native_plan(&self, snapshot: &Snapshot) -> Result<Vec<NativeRoute>, NotNative> {
        let view = |cluster| snapshot.view(cluster);
        let id_known = |cluster: usize| {
            let name = &snapshot.config.clusters[cluster].name;
            !self.affinity.recent_coordinator_ids(name, 1).is_empty()
        };
        native::plan(&snapshot.config, &view, &id_known)
    }

    /// Where any other request goes ([`follow_up::decide`] on `snapshot`); records that the clients of
    /// a query placed on a cluster are still there (queries in flight).
    pub fn decide_follow_up(&self, snapshot: &Snapshot, request: &FollowUp<'_>) -> Decision {
        let lookups = LiveLookups { router: self, snapshot, stage: Stage::Final };
        let decision = follow_up::decide(&snapshot.config, request, &lookups);
        if let (Decision::Route { cluster, .. }, Target::Query(id)) = (&decision, &request.target) {
            // On a cluster that is not active (a drain waits for its queries), only a query the router
            // placed or its coordinator confirmed counts as in flight: a client cannot hold a drain open by
            // polling made-up ids. (On an active one the count is only shown; checking every query there
            // would cost its coordinator a request per query when every follow-up reaches the router.)
            let runtime = &snapshot.clusters[*cluster];
            if runtime.operator() == Operator::Active || runtime.is_known(id) {
                runtime.heard_from(id);
            } else {
                self.check(id, snapshot.config.clusters[*cluster].name.clone(), CheckReason::InFlight);
            }
        }
        decision
    }

    /// Records what was learned: the one door to the affinity tables.
    pub fn learn(&self, snapshot: &Snapshot, learned: Learned) {
        match learned {
            Learned::QueryOwner { query, cluster } => {
                let name = snapshot.config.clusters[cluster].name.clone();
                tracing::debug!(query_id = %query, cluster = %name, "learned query owner");
                let before = self.affinity.coordinator_id_changes();
                if self.affinity.learn(query.clone(), name.clone()) == Placement::Disputed {
                    // Nothing counts until the claimed coordinator confirms it.
                    self.check(&query, name, CheckReason::Claim);
                    return;
                }
                snapshot.clusters[cluster].verified(&query);
                snapshot.clusters[cluster].heard_from(&query);
                snapshot.clusters[cluster].learned_now();
                if self.affinity.coordinator_id_changes() != before {
                    self.routes_changed.notify_one();
                }
            }
            Learned::TransactionStarting(query) => self.affinity.watch(query),
            Learned::TransactionStarted { id, cluster } => {
                self.affinity.learn_transaction(&id, snapshot.config.clusters[cluster].name.clone())
            }
            Learned::TransactionEnded(id) => self.affinity.forget_transaction(&id),
        }
    }

    /// `Config::clusters[cluster]`'s coordinator publishes `coordinator_id` (its `/v1/info`, Trino 477+):
    /// its queries are placed by it from now on, before any is seen, and the cluster's older ids are
    /// retired (a restart). Returns whether anything changed.
    pub fn coordinator_published(&self, snapshot: &Snapshot, cluster: usize, coordinator_id: &str) -> bool {
        let name = snapshot.config.clusters[cluster].name.clone();
        match self.affinity.publish(coordinator_id, name) {
            Published::Unchanged | Published::Full => false,
            Published::Learned { .. } | Published::Shared => {
                self.routes_changed.notify_one();
                true
            }
        }
    }

    /// Envoy could not deliver a new query to this cluster: the poller polls at once, and after a few
    /// such failures in a short while it takes no new queries until polls say so.
    pub fn delivery_failed(&self, snapshot: &Snapshot, cluster: usize, status: &str) {
        self.suspect.notify_one();
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

    /// Sets the operator's say over a cluster, by name, as a write of this replica that its peers will
    /// take (`reason`: why, for whoever looks); `None` when no such cluster is configured.
    pub fn set_operator(&self, name: &str, operator: Operator, reason: &str) -> Option<Operator> {
        let snapshot = self.snapshot();
        let index = snapshot.cluster_by_name(name)?;
        let previous = snapshot.clusters[index].operator();
        self.operators.write(name, operator, reason, snapshot.config.clusters[index].enabled);
        self.follow_operators(&snapshot);
        Some(previous)
    }

    /// The operator's book as this replica holds it.
    pub fn operators(&self) -> &OperatorStore {
        &self.operators
    }

    /// Takes a peer's (or the state file's) entries: what is newer than this replica's own changes the
    /// clusters' state. Returns the clusters whose entry changed.
    pub fn merge_operators(
        &self,
        entries: Vec<(String, crate::domain::operator_state::Entry)>,
    ) -> Vec<Arc<str>> {
        let changed = self.operators.merge(entries);
        if !changed.is_empty() {
            self.follow_operators(&self.snapshot());
        }
        changed
    }

    /// Once the book is complete (settled) and on every reload: a cluster whose `enabled:` in this
    /// replica's config differs from the one its entry was written under takes the file's say
    /// ([`crate::domain::operator_state::config_overrides`]); then every cluster follows the book.
    pub fn reconcile_with_config(&self) {
        let snapshot = self.snapshot();
        if self.operators.settled() {
            let book = self.operators.book();
            let flags = snapshot.config.clusters.iter().map(|c| (&*c.name, c.enabled));
            for (name, operator) in crate::domain::operator_state::config_overrides(&book, flags) {
                let enabled = operator == Operator::Active;
                let reason = format!("the config file says enabled: {enabled}");
                tracing::info!(cluster = name, to = %operator, "the config file changed `enabled:` since the operator's say: the file wins");
                self.operators.write(name, operator, &reason, enabled);
            }
        }
        self.follow_operators(&snapshot);
    }

    /// Every cluster's run-time state takes the book's say (the config's `enabled:` where the book has
    /// none); each change is logged once, with who made it and why.
    fn follow_operators(&self, snapshot: &Snapshot) {
        let mut moved = false;
        for (cluster, runtime) in snapshot.config.clusters.iter().zip(&snapshot.clusters) {
            let entry = self.operators.entry(&cluster.name);
            let operator = entry.as_ref().map_or(Operator::declared(cluster.enabled), |e| e.operator);
            if runtime.operator() == operator {
                continue;
            }
            let previous = runtime.set_operator(operator);
            moved = true;
            let (by, reason) =
                entry.as_ref().map_or(("config", ""), |e| (&*e.version.origin, e.reason.as_str()));
            tracing::info!(cluster = %cluster.name, from = %previous, to = %operator, by, reason, "operator changed cluster state");
        }
        if moved {
            self.routes_changed.notify_one();
        }
    }

    /// Replaces the config, keeping every cluster's run-time state. A cluster whose `enabled` flag
    /// changed in the file takes the new flag; otherwise the operator's say stands.
    pub fn apply(&self, config: Config) {
        let snapshot = Self::snapshot_for(&self.runtimes, config);
        self.current.store(Arc::new(snapshot));
        self.reconcile_with_config();
        self.routes_changed.notify_one();
    }

    fn snapshot_for(runtimes: &Mutex<HashMap<Arc<str>, Arc<ClusterRuntime>>>, config: Config) -> Snapshot {
        let mut runtimes = runtimes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let clusters = config
            .clusters
            .iter()
            .map(|cluster| {
                runtimes
                    .entry(cluster.name.clone())
                    .or_insert_with(|| Arc::new(ClusterRuntime::new(cluster.enabled)))
                    .clone()
            })
            .collect();
        Snapshot { config: Arc::new(config), clusters }
    }
}

/// Router fixtures for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::Router;
    use crate::domain::config::testing::{ONE_CLUSTER, config};

    /// A router over a config from YAML text.
    pub fn router_from(yaml: &str) -> Arc<Router> {
        Arc::new(Router::new(config(yaml)))
    }

    /// A router over one cluster `a` (group `adhoc`) on an unused loopback port.
    pub fn one_cluster_router() -> Arc<Router> {
        router_from(ONE_CLUSTER)
    }
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
    use super::testing::router_from;
    use super::*;
    use crate::domain::client_request::ClientRequest;
    use crate::domain::config::testing::config;
    use crate::domain::decision::follow_up::Basis;
    use crate::domain::target::classify;

    const CLUSTERS: &str = "
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: b, url: 'http://127.0.0.1:2', group: adhoc}
  - {name: c, url: 'http://127.0.0.1:3', group: adhoc}
  - {name: e, url: 'http://127.0.0.1:4', group: etl, envoy_cluster: 'outbound|8080||e.svc'}
";

    fn new_query(router: &Router, group: Option<&str>) -> usize {
        let mut pairs = vec![(":method", "POST"), (":path", "/v1/statement")];
        pairs.extend(group.map(|g| ("x-trino-routing-group", g)));
        let request = ClientRequest::from_headers(pairs, "sub");
        let statement = NewStatement { request: &request, sql: None, may_look_up: false, trace_rules: false };
        match router.decide_new_statement(&router.snapshot(), &statement, Stage::Final).outcome {
            Outcome::Route { cluster, placed: Placed::InGroup(_) } => cluster,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_queries_spread_by_load() {
        let router = router_from(CLUSTERS);
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
    fn tentative_decisions_record_nothing() {
        let router = router_from(CLUSTERS);
        let request = ClientRequest::from_headers([(":method", "POST"), (":path", "/v1/statement")], "sub");
        let statement = NewStatement { request: &request, sql: None, may_look_up: false, trace_rules: false };
        let snapshot = router.snapshot();
        for _ in 0..3 {
            let d = router.decide_new_statement(&snapshot, &statement, Stage::Tentative);
            assert!(matches!(d.outcome, Outcome::Route { cluster: 0, .. }), "no turn taken: {d:?}");
        }
        assert_eq!(snapshot.clusters.iter().map(|c| c.queries_routed()).sum::<u64>(), 0);
    }

    #[test]
    fn learned_owner_places_follow_ups() {
        let router = router_from(CLUSTERS);
        let snapshot = router.snapshot();
        let id = QueryId::parse("20260101_120000_00001_abcde").unwrap();
        let path = format!("/v1/statement/executing/{id}/y/1");
        let request =
            FollowUp { method: "GET", path: &path, target: classify("GET", &path), url_cluster: None };
        assert!(matches!(router.decide_follow_up(&snapshot, &request), Decision::Refuse(_)));
        router.learn(&snapshot, Learned::QueryOwner { query: id.clone(), cluster: 2 });
        assert_eq!(
            router.decide_follow_up(&snapshot, &request),
            Decision::Route { cluster: 2, basis: Basis::QueryOwner(id) }
        );
        assert_eq!(snapshot.clusters[2].in_flight(), 1);
    }

    /// A client polling made-up ids of a draining cluster's coordinator counts as nothing in flight until
    /// the coordinator confirms the query; a claimed coordinator id is shared only once confirmed.
    #[test]
    fn only_placed_or_confirmed_queries_count() {
        let router = router_from(CLUSTERS);
        let mut checks = router.take_checks().unwrap();
        router.set_operator("c", Operator::Draining, "");
        let snapshot = router.snapshot();
        let placed = QueryId::parse("20260101_120000_00001_abcde").unwrap();
        let made_up = QueryId::parse("20260101_120000_00777_abcde").unwrap();
        router.learn(&snapshot, Learned::QueryOwner { query: placed.clone(), cluster: 2 });
        let poll = |id: &QueryId| {
            let path = format!("/v1/statement/executing/{id}/y/1");
            let request =
                FollowUp { method: "GET", path: &path, target: classify("GET", &path), url_cluster: None };
            router.decide_follow_up(&snapshot, &request)
        };
        for _ in 0..3 {
            assert!(
                matches!(poll(&made_up), Decision::Route { cluster: 2, .. }),
                "placed by its coordinator id"
            );
        }
        assert_eq!(snapshot.clusters[2].in_flight(), 1, "only the placed query");
        let check = checks.try_recv().unwrap();
        assert_eq!((check.query.clone(), check.reason), (made_up.clone(), CheckReason::InFlight));
        assert!(checks.try_recv().is_err(), "asked once");
        router.checked(check.clone(), Some(false));
        assert_eq!(snapshot.clusters[2].in_flight(), 1, "the coordinator does not know it");
        router.checked(check, Some(true));
        assert_eq!(snapshot.clusters[2].in_flight(), 2, "confirmed");

        // A claim that the same coordinator id is another cluster's: nothing changes until confirmed.
        router.learn(&snapshot, Learned::QueryOwner { query: made_up.clone(), cluster: 0 });
        let claim = checks.try_recv().unwrap();
        assert_eq!((claim.cluster.as_ref(), claim.reason), ("a", CheckReason::Claim));
        router.checked(claim.clone(), Some(false));
        assert!(!router.affinity().is_shared_suffix("abcde"));
        assert_eq!(router.affinity().owner_of(&placed).as_deref(), Some("c"));
        router.checked(claim, Some(true));
        assert!(router.affinity().is_shared_suffix("abcde"));
    }

    #[test]
    fn transactions_are_learned_and_forgotten() {
        let router = router_from(CLUSTERS);
        let snapshot = router.snapshot();
        let query = QueryId::parse("20260101_120000_00001_abcde").unwrap();
        router.learn(&snapshot, Learned::TransactionStarting(query.clone()));
        assert!(router.affinity().is_watched(&query));
        router.learn(&snapshot, Learned::TransactionStarted { id: "tx-1".into(), cluster: 1 });
        assert_eq!(router.affinity.transaction_owner("tx-1").as_deref(), Some("b"));
        router.learn(&snapshot, Learned::TransactionEnded("tx-1".into()));
        assert_eq!(router.affinity.transaction_owner("tx-1"), None);
    }

    #[test]
    fn header_values_map_back_to_clusters() {
        let snapshot = router_from(CLUSTERS).snapshot();
        assert_eq!(snapshot.cluster_by_header_value("outbound|8080||e.svc"), Some(3));
        assert_eq!(snapshot.cluster_by_header_value("a"), Some(0));
        assert_eq!(snapshot.cluster_by_header_value("e"), None);
    }

    #[test]
    fn operator_and_passive_failures_steer_new_queries() {
        let router = router_from(CLUSTERS);
        assert_eq!(router.set_operator("a", Operator::Draining, ""), Some(Operator::Active));
        assert_eq!(router.set_operator("nope", Operator::Draining, ""), None);
        let snapshot = router.snapshot();
        router.delivery_failed(&snapshot, 1, "503");
        assert_eq!(snapshot.clusters[1].health(), Health::Unknown, "one failed delivery ejects nothing");
        router.delivery_failed(&snapshot, 1, "503");
        router.delivery_failed(&snapshot, 1, "503");
        let picks: Vec<usize> = (0..5).map(|_| new_query(&router, None)).collect();
        assert_eq!(picks, [2; 5]);
    }

    #[test]
    fn the_config_file_wins_over_an_older_say_and_not_over_a_newer_one() {
        let router = router_from(CLUSTERS);
        let operator = |router: &Router, i: usize| router.snapshot().clusters[i].operator();
        let a_disabled =
            CLUSTERS.replace("group: adhoc}\n  - {name: b", "group: adhoc, enabled: false}\n  - {name: b");
        router.set_operator("a", Operator::Draining, "upgrade");
        router.apply(config(CLUSTERS));
        assert_eq!(operator(&router, 0), Operator::Draining, "a reload of the same flags keeps the drain");
        router.apply(config(&a_disabled));
        assert_eq!(
            operator(&router, 0),
            Operator::Disabled,
            "the file disabled a after the drain: the file wins"
        );
        router.set_operator("a", Operator::Active, "back in service");
        router.apply(config(&a_disabled));
        assert_eq!(
            operator(&router, 0),
            Operator::Active,
            "an operator's say made under the file's flag stands"
        );

        // A replica that comes back with an old book (the drain) and the new file hears its peer first:
        // the enable made under the new flag wins, and the file overrides nothing.
        let stale = router_from(&a_disabled);
        stale.operators().unsettle();
        let old = crate::domain::operator_state::Entry {
            operator: Operator::Draining,
            reason: "upgrade".into(),
            version: crate::domain::operator_state::Version { wall_ms: 1, counter: 0, origin: "r9".into() },
            config_enabled: true,
        };
        stale.merge_operators(vec![("a".into(), old)]);
        stale.reconcile_with_config();
        assert_eq!(operator(&stale, 0), Operator::Draining, "unsettled: the file overrides nothing yet");
        let peer = router.operators().book();
        stale.merge_operators(peer.iter().map(|(c, e)| (c.to_string(), e.clone())).collect());
        stale.operators().set_settled();
        stale.reconcile_with_config();
        assert_eq!(operator(&stale, 0), Operator::Active);
        assert_eq!(stale.operators().book(), router.operators().book(), "the two agree");
    }

    #[test]
    fn reload_keeps_state_by_name() {
        let router = router_from(CLUSTERS);
        router.set_operator("b", Operator::Draining, "");
        router.snapshot().clusters[2].coordinator_reported(9);
        let text = "
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: c, url: 'http://127.0.0.1:3', group: adhoc}
  - {name: b, url: 'http://127.0.0.1:2', group: adhoc}
  - {name: e, url: 'http://127.0.0.1:4', group: adhoc, enabled: false}
";
        router.apply(config(text));
        let snapshot = router.snapshot();
        assert_eq!(snapshot.clusters[0].coordinator_queries(), Some(9), "c kept its load");
        assert_eq!(snapshot.clusters[1].operator(), Operator::Draining, "b is still draining");
        assert_eq!(snapshot.clusters[2].operator(), Operator::Disabled, "e was disabled in the file");
        assert_eq!(new_query(&router, None), 0, "only c takes new queries");
    }
}
