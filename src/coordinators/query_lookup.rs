//! Finding a query on the coordinators: a query id the router cannot place is looked up on every cluster at once
//! (`GET /v1/query/{id}`), with a short timeout. The first cluster that knows it (200, or 410 for a query
//! it ran and already forgot) owns it. Answers — found or not — are cached briefly, and concurrent misses
//! for the same coordinator id (or, for ambiguous ids, the same query id) share one lookup, so a burst
//! of follow-ups after a router restart costs one probe per coordinator, not one per request. At most
//! [`MAX_CONCURRENT_LOOKUPS`] lookups run at once: a flood of made-up ids waits its turn (within the
//! discovery timeout) or gets the 404, and cannot multiply the router's calls to the coordinators.
//!
//! [`QueryLookup::knows`] asks one coordinator about one query (the checks of `coordinators::checks`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache;
use tokio::task::JoinSet;

use crate::coordinators::http::{CoordinatorClients, describe};
use crate::domain::config::tls::CoordinatorTls;
use crate::domain::query_id::QueryId;
use crate::state::metrics::{METRICS, Safeguard};
use crate::state::router::{Learned, Router, Snapshot};

/// How long an answer (found or not) is reused.
pub const ANSWER_TTL: Duration = Duration::from_secs(2);

/// The user the router names itself as on coordinators (Trino requires a user on `/v1/query`).
pub const ROUTER_USER: &str = "trino-router";

/// Lookups running at once, at most.
pub const MAX_CONCURRENT_LOOKUPS: usize = 64;

/// Looks up query owners on the clusters.
pub struct QueryLookup {
    answers: Cache<String, Option<Arc<str>>>,
    clients: Mutex<CoordinatorClients>,
    running: tokio::sync::Semaphore,
}

impl Default for QueryLookup {
    fn default() -> Self {
        QueryLookup {
            answers: Cache::builder()
                .time_to_live(ANSWER_TTL)
                .max_capacity(crate::state::cluster_state::MAX_CLIENT_KEYED)
                .build(),
            clients: Mutex::new(CoordinatorClients::new(false)),
            running: tokio::sync::Semaphore::new(MAX_CONCURRENT_LOOKUPS),
        }
    }
}

impl QueryLookup {
    /// Asks the clusters who owns `query` and has the router learn the answer; returns whether an owner
    /// was found.
    pub async fn find_owner(&self, router: &Router, query: &QueryId) -> bool {
        let snapshot = router.snapshot();
        let by_suffix = query.coordinator_id().is_some_and(|s| !router.affinity().is_shared_suffix(s));
        let timeout = snapshot.config.affinity.discovery_timeout;
        let started = std::time::Instant::now();
        let found = self.locate(snapshot.clone(), query, by_suffix, timeout).await;
        METRICS.looked_up(found.is_some(), started.elapsed());
        match found.and_then(|name| snapshot.cluster_by_name(&name)) {
            Some(cluster) => {
                tracing::info!(query_id = %query, cluster = %snapshot.config.clusters[cluster].name, "discovered query owner");
                router.learn(&snapshot, Learned::QueryOwner { query: query.clone(), cluster });
                true
            }
            None => false,
        }
    }

    /// The name of the cluster that knows `query`, if any answers within `timeout`. `by_suffix`: the
    /// query's coordinator id is unambiguous, so one lookup serves every query of that coordinator.
    pub async fn locate(
        &self,
        snapshot: Arc<Snapshot>,
        query: &QueryId,
        by_suffix: bool,
        timeout: Duration,
    ) -> Option<Arc<str>> {
        let key = match query.coordinator_id() {
            Some(suffix) if by_suffix => format!("suffix:{suffix}"),
            _ => format!("id:{query}"),
        };
        let tls = &snapshot.config.coordinator_tls;
        let lookups: Vec<(Arc<str>, reqwest::Client, String)> = snapshot
            .config
            .clusters
            .iter()
            .filter_map(|c| match self.client_for(&c.url.to_string(), tls) {
                Ok(client) => Some((c.name.clone(), client, format!("{}/v1/query/{query}", c.url))),
                Err(e) => {
                    tracing::debug!(cluster = %c.name, "no discovery lookup: cannot make an HTTP client: {e}");
                    None
                }
            })
            .collect();
        let auth = snapshot.config.coordinator_auth.clone();
        if let Some(answer) = self.answers.get(&key).await {
            return answer;
        }
        let Ok(Ok(_permit)) = tokio::time::timeout(timeout, self.running.acquire()).await else {
            METRICS.safeguard(Safeguard::LookupShed);
            tracing::debug!(query_id = %query, "too many lookups under way: this one is not made");
            return None;
        };
        self.answers
            .get_with(key, async move {
                let mut probes = JoinSet::new();
                for (name, client, url) in lookups {
                    let auth = auth.clone();
                    probes.spawn(async move {
                        let mut request =
                            client.get(&url).timeout(timeout).header("X-Trino-User", ROUTER_USER);
                        if let Some(auth) = &auth {
                            request = request.basic_auth(&auth.user, auth.password.as_deref());
                        }
                        match request.send().await {
                            Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::GONE => {
                                Some(name)
                            }
                            Ok(_) => None,
                            Err(e) => {
                                tracing::debug!(cluster = %name, "discovery lookup failed: {}", describe(&e));
                                None
                            }
                        }
                    });
                }
                while let Some(joined) = probes.join_next().await {
                    if let Ok(Some(name)) = joined {
                        probes.abort_all();
                        return Some(name);
                    }
                }
                None
            })
            .await
    }

    /// Whether `snapshot.config.clusters[cluster]`'s coordinator holds `query` (`GET /v1/query/{id}`
    /// answered 200; Trino's `QueryResource` answers 410 for any id it does not hold, and 404 is not
    /// holding it either); `None` when it could not be asked or gave no clear answer within `timeout`.
    pub async fn knows(
        &self,
        snapshot: &Snapshot,
        cluster: usize,
        query: &QueryId,
        timeout: Duration,
    ) -> Option<bool> {
        let config = &snapshot.config;
        let url = &config.clusters[cluster].url;
        let client = self.client_for(&url.to_string(), &config.coordinator_tls).ok()?;
        let mut request = client
            .get(format!("{url}/v1/query/{query}"))
            .timeout(timeout)
            .header("X-Trino-User", ROUTER_USER);
        if let Some(auth) = &config.coordinator_auth {
            request = request.basic_auth(&auth.user, auth.password.as_deref());
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => Some(true),
            Ok(r) if matches!(r.status(), reqwest::StatusCode::GONE | reqwest::StatusCode::NOT_FOUND) => {
                Some(false)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(cluster = %config.clusters[cluster].name, "query check failed: {}", describe(&e));
                None
            }
        }
    }

    fn client_for(&self, base: &str, tls: &CoordinatorTls) -> Result<reqwest::Client, String> {
        self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).client(base, tls)
    }
}
