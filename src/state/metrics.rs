//! The router's Prometheus metrics: what it counts ([`METRICS`], one registry per process) and the HTTP
//! endpoint that serves them as Prometheus text (`GET /metrics` on `metrics_listen`; `GET /` there is the
//! status page, [`crate::operate::status_page`]).
//!
//! Counters are bumped where things happen (decisions in `ext_proc::stream`, lookups in `routing`,
//! reloads in `reload`); the per-cluster gauges are read from the live snapshot at each scrape. Names
//! follow Prometheus conventions: `trino_router_` prefix, `_total` counters, `_seconds` histograms.
//!
//! Every series carries `replica="NAME"` (this replica's name, [`set_replica`] before the first use), so
//! the series of N replicas stay apart wherever they are gathered; the `fleet_` series say what this
//! replica last heard from its peers.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::router::Router;

/// A new query's decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub group: String,
    pub cluster: String,
    /// The rule that chose the group; empty when none did.
    pub rule: String,
}

/// How a request naming a query was placed: `learned` (coordinator id or exact entry), `transaction`,
/// `named_query` (`kill_query`), `url` (URL-carried placement).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlacementLabels {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

/// What the router refused or doubted to protect itself (`trino_router_safeguards_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safeguard {
    /// An ext_proc stream without the `envoy_auth` token, refused.
    UnauthenticatedStream,
    /// A learned claim (a coordinator id on a second cluster) the claimed coordinator did not confirm.
    UnverifiedClaim,
    /// A discovery lookup not made: too many were under way.
    LookupShed,
    /// A new query placed on a cluster that looks unhealthy (every cluster did, none known down).
    DoubtfulPlacement,
    /// A client-keyed entry not recorded: its table was full.
    MapFull,
}

impl Safeguard {
    pub const ALL: [Safeguard; 5] = [
        Safeguard::UnauthenticatedStream,
        Safeguard::UnverifiedClaim,
        Safeguard::LookupShed,
        Safeguard::DoubtfulPlacement,
        Safeguard::MapFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Safeguard::UnauthenticatedStream => "unauthenticated_stream",
            Safeguard::UnverifiedClaim => "unverified_claim",
            Safeguard::LookupShed => "lookup_shed",
            Safeguard::DoubtfulPlacement => "doubtful_placement",
            Safeguard::MapFull => "map_full",
        }
    }
}

/// Everything the router counts.
pub struct Metrics {
    pub new_queries: Family<DecisionLabels, Counter>,
    pub placements: Family<PlacementLabels, Counter>,
    pub placement_misses: Counter,
    pub refusals: Family<OutcomeLabels, Counter>,
    pub discovery_lookups: Family<OutcomeLabels, Counter>,
    pub discovery_seconds: Histogram,
    pub streams: Family<RoleLabels, Counter>,
    pub stream_errors: Family<RoleLabels, Counter>,
    pub decision_seconds: Histogram,
    pub reloads: Family<OutcomeLabels, Counter>,
    /// What the router refused or doubted to protect itself ([`Safeguard`]).
    safeguards: Family<OutcomeLabels, Counter>,
    cluster_healthy: Family<ClusterLabels, Gauge>,
    cluster_misconfigured: Family<ClusterLabels, Gauge>,
    cluster_accepts_new: Family<ClusterLabels, Gauge>,
    cluster_load: Family<ClusterLabels, Gauge>,
    cluster_in_flight: Family<ClusterLabels, Gauge>,
    /// Exchanges of the operator's book with a peer address, by how they went (ok, absent, unreachable).
    fleet_exchanges: Family<StatusLabels, Counter>,
    /// Peer addresses by status, as of the last round.
    fleet_peers: Family<StatusLabels, Gauge>,
    registry: Registry,
}

/// This replica's name, the `replica` label of every series.
static REPLICA: OnceLock<String> = OnceLock::new();

/// Names the replica in every series; effective only before the metrics are first used (the server
/// calls it when it binds).
pub fn set_replica(name: &str) {
    let _ = REPLICA.set(name.to_owned());
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            new_queries: Family::default(),
            placements: Family::default(),
            placement_misses: Counter::default(),
            refusals: Family::default(),
            discovery_lookups: Family::default(),
            // 100 µs .. ~3 s
            discovery_seconds: Histogram::new(exponential_buckets(0.0001, 2.5, 12)),
            streams: Family::default(),
            stream_errors: Family::default(),
            // 5 µs .. ~0.3 s
            decision_seconds: Histogram::new(exponential_buckets(0.000005, 2.5, 13)),
            reloads: Family::default(),
            safeguards: Family::default(),
            cluster_healthy: Family::default(),
            cluster_misconfigured: Family::default(),
            cluster_accepts_new: Family::default(),
            cluster_load: Family::default(),
            cluster_in_flight: Family::default(),
            fleet_exchanges: Family::default(),
            fleet_peers: Family::default(),
            registry: Registry::with_prefix_and_labels(
                "trino_router",
                [("replica".into(), REPLICA.get_or_init(|| "trino-router".to_owned()).clone().into())]
                    .into_iter(),
            ),
        };
        m.registry.register(
            "new_queries",
            "New queries routed, by group, cluster and rule",
            m.new_queries.clone(),
        );
        m.registry.register(
            "placements",
            "Requests naming a query that the router placed, by method",
            m.placements.clone(),
        );
        m.registry.register(
            "placement_misses",
            "Requests naming a query no cluster knows (answered 404)",
            m.placement_misses.clone(),
        );
        m.registry.register("refusals", "Requests the router answered itself, by reason", m.refusals.clone());
        m.registry.register(
            "discovery_lookups",
            "Lookups of an unknown query id on every cluster, by outcome",
            m.discovery_lookups.clone(),
        );
        m.registry.register("discovery_duration_seconds", "Time a lookup took", m.discovery_seconds.clone());
        m.registry.register("ext_proc_streams", "ext_proc streams opened, by filter role", m.streams.clone());
        m.registry.register(
            "ext_proc_stream_errors",
            "ext_proc streams that ended with an error, by filter role",
            m.stream_errors.clone(),
        );
        m.registry.register(
            "decision_duration_seconds",
            "Router time per decision (one message), lookups excluded",
            m.decision_seconds.clone(),
        );
        m.registry.register("config_reloads", "Config reloads, by outcome (ok, failed)", m.reloads.clone());
        // Known label values start at 0, so that they are exported (and rate() works) before they happen.
        for outcome in ["ok", "failed"] {
            drop(m.reloads.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }));
        }
        for outcome in ["found", "not_found", "unknown"] {
            drop(m.discovery_lookups.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }));
        }
        for role in ["decide", "learn"] {
            drop(m.streams.get_or_create(&RoleLabels { role: role.to_owned() }));
            drop(m.stream_errors.get_or_create(&RoleLabels { role: role.to_owned() }));
        }
        for method in ["learned", "url"] {
            drop(m.placements.get_or_create(&PlacementLabels { method: method.to_owned() }));
        }
        m.registry.register(
            "safeguards",
            "What the router refused or doubted to protect itself, by what (unauthenticated_stream, \
             unverified_claim, lookup_shed, doubtful_placement, map_full)",
            m.safeguards.clone(),
        );
        for what in Safeguard::ALL {
            drop(m.safeguards.get_or_create(&OutcomeLabels { outcome: what.as_str().to_owned() }));
        }
        m.registry.register(
            "fleet_exchanges",
            "Exchanges of the operator's say with a peer address, by status (ok, absent, unreachable)",
            m.fleet_exchanges.clone(),
        );
        m.registry.register(
            "fleet_peers",
            "Peer addresses by status as of the last round",
            m.fleet_peers.clone(),
        );
        for status in ["ok", "absent", "unreachable"] {
            drop(m.fleet_exchanges.get_or_create(&StatusLabels { status: status.to_owned() }));
            drop(m.fleet_peers.get_or_create(&StatusLabels { status: status.to_owned() }));
        }
        m.registry.register("cluster_healthy", "1 when the cluster is healthy", m.cluster_healthy.clone());
        m.registry.register(
            "cluster_misconfigured",
            "1 when the cluster's coordinator is configured so that requests through Envoy fail \
             (e.g. it refuses X-Forwarded-* headers: set http-server.process-forwarded=true); it takes no new queries",
            m.cluster_misconfigured.clone(),
        );
        m.registry.register(
            "cluster_accepts_new_queries",
            "1 when the cluster takes new queries (healthy and active)",
            m.cluster_accepts_new.clone(),
        );
        m.registry.register("cluster_load", "The load that decides between clusters", m.cluster_load.clone());
        m.registry.register(
            "cluster_in_flight_queries",
            "Queries in flight as the router knows them",
            m.cluster_in_flight.clone(),
        );
        m
    }

    /// Counts a routed new query.
    pub fn new_query(&self, group: &str, cluster: &str, rule: Option<&str>, took: Duration) {
        let labels = DecisionLabels {
            group: group.to_owned(),
            cluster: cluster.to_owned(),
            rule: rule.unwrap_or("").to_owned(),
        };
        self.new_queries.get_or_create(&labels).inc();
        self.decision_seconds.observe(took.as_secs_f64());
    }

    /// Counts a placed request naming a query.
    pub fn placed(&self, method: &str, took: Duration) {
        self.placements.get_or_create(&PlacementLabels { method: method.to_owned() }).inc();
        self.decision_seconds.observe(took.as_secs_f64());
    }

    /// Counts a safeguard at work.
    pub fn safeguard(&self, what: Safeguard) {
        self.safeguards.get_or_create(&OutcomeLabels { outcome: what.as_str().to_owned() }).inc();
    }

    pub fn refused(&self, reason: &str) {
        self.refusals.get_or_create(&OutcomeLabels { outcome: reason.to_owned() }).inc();
    }

    /// Counts a discovery lookup by its outcome (found, not_found, unknown).
    pub fn looked_up(&self, outcome: &str, took: Duration) {
        self.discovery_lookups.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
        self.discovery_seconds.observe(took.as_secs_f64());
    }

    pub fn stream_opened(&self, role: &str) {
        self.streams.get_or_create(&RoleLabels { role: role.to_owned() }).inc();
    }

    pub fn stream_failed(&self, role: &str) {
        self.stream_errors.get_or_create(&RoleLabels { role: role.to_owned() }).inc();
    }

    pub fn reloaded(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }

    /// One exchange with a peer address went `status` (ok, absent, unreachable).
    pub fn fleet_exchange(&self, status: &str) {
        self.fleet_exchanges.get_or_create(&StatusLabels { status: status.to_owned() }).inc();
    }

    /// The peers as of the last round.
    pub fn fleet_peers(&self, ok: usize, absent: usize, unreachable: usize) {
        for (status, count) in [("ok", ok), ("absent", absent), ("unreachable", unreachable)] {
            self.fleet_peers.get_or_create(&StatusLabels { status: status.to_owned() }).set(count as i64);
        }
    }

    /// The Prometheus text for a scrape, the cluster gauges read from `router`'s snapshot now.
    pub fn render(&self, router: &Router) -> String {
        let snapshot = router.snapshot();
        // Checks the router dropped are counted there (it sits below the metrics); catch up here.
        let dropped =
            self.safeguards.get_or_create(&OutcomeLabels { outcome: Safeguard::MapFull.as_str().to_owned() });
        dropped.inc_by(router.checks_dropped().saturating_sub(dropped.get()));
        for gauges in [
            &self.cluster_healthy,
            &self.cluster_misconfigured,
            &self.cluster_accepts_new,
            &self.cluster_load,
            &self.cluster_in_flight,
        ] {
            gauges.clear();
        }
        for (cluster, runtime) in snapshot.config.clusters.iter().zip(&snapshot.clusters) {
            let labels = ClusterLabels { cluster: cluster.name.to_string() };
            let healthy = runtime.health() == crate::domain::health::Health::Healthy;
            self.cluster_healthy.get_or_create(&labels).set(i64::from(healthy));
            let misconfigured = runtime.health() == crate::domain::health::Health::Misconfigured;
            self.cluster_misconfigured.get_or_create(&labels).set(i64::from(misconfigured));
            self.cluster_accepts_new.get_or_create(&labels).set(i64::from(runtime.accepts_new_queries()));
            self.cluster_load.get_or_create(&labels).set(runtime.load() as i64);
            self.cluster_in_flight.get_or_create(&labels).set(runtime.in_flight() as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_and_cluster_gauges() {
        let router = crate::state::router::testing::one_cluster_router();
        METRICS.new_query("adhoc", "a", Some("r"), Duration::from_micros(50));
        METRICS.reloaded(false);
        let rendered = METRICS.render(&router);
        for line in [
            "# TYPE trino_router_new_queries counter",
            "trino_router_config_reloads_total{replica=\"trino-router\",outcome=\"failed\"}",
            "# TYPE trino_router_decision_duration_seconds histogram",
            "trino_router_cluster_accepts_new_queries{replica=\"trino-router\",cluster=\"a\"} 1",
            "trino_router_cluster_healthy{replica=\"trino-router\",cluster=\"a\"} 0",
            "trino_router_cluster_misconfigured{replica=\"trino-router\",cluster=\"a\"} 0",
            "trino_router_fleet_peers{replica=\"trino-router\",status=\"unreachable\"} 0",
        ] {
            assert!(rendered.contains(line), "{line} missing from:\n{rendered}");
        }
        assert!(rendered.contains("group=\"adhoc\",cluster=\"a\",rule=\"r\"} "), "{rendered}");
        let unlabelled: Vec<&str> = rendered
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains("replica=\"trino-router\""))
            .collect();
        assert!(unlabelled.is_empty(), "every series names the replica: {unlabelled:?}");
    }
}
