//! Finding a query on the coordinators: a query id the router cannot place is looked up on every cluster
//! at once (`GET /v1/query/{id}`), with a short timeout. Each answer is judged by
//! [`crate::domain::discovery`]: a 200 or 403 names the owner (the first wins), a 410 says "not here"
//! (Trino answers it for every id it does not hold), anything else says nothing. Only "every cluster
//! says not here" makes the query unknown; a cluster that did not say makes the answer unknown, which
//! the client is asked to retry. Definite answers — owner or nowhere — are cached briefly, and
//! concurrent misses for the same coordinator id (or, for ambiguous ids, the same query id) share one
//! lookup, so a burst of follow-ups after a router restart costs one probe per coordinator, not one per
//! request. At most [`MAX_CONCURRENT_LOOKUPS`] lookups run at once: a flood of made-up ids waits its
//! turn (within the discovery timeout) or is told to retry, and cannot multiply the router's calls to
//! the coordinators.
//!
//! [`QueryLookup::knows`] asks one coordinator about one query (the checks of `coordinators::checks`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache;
use tokio::task::JoinSet;

use crate::coordinators::http::{CoordinatorClients, describe};
use crate::domain::config::Credentials;
use crate::domain::config::tls::CoordinatorTls;
use crate::domain::discovery::{Answer, Tally, Verdict, judge};
use crate::domain::query_id::QueryId;
use crate::state::metrics::{METRICS, Safeguard};
use crate::state::router::{Learned, Router, Snapshot};

/// How long a definite answer (an owner, or nowhere) is reused.
pub const ANSWER_TTL: Duration = Duration::from_secs(2);

/// The user the router names itself as on coordinators when the request names none (Trino requires a
/// user on `/v1/query`).
pub const ROUTER_USER: &str = "trino-router";

/// Lookups running at once, at most.
pub const MAX_CONCURRENT_LOOKUPS: usize = 64;
/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// An owner, now learned.
    Owner,
    /// Every cluster said it does not hold the query.
    Nowhere,
    /// No owner, but a cluster did not say (timeout, 5xx, ...): ask again later.
    Unknown,
}

/// Looks up query owners on the clusters.
pub struct QueryLookup {
    answers: Cache<String, Verdict<Arc<str>>>,
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
    /// Asks the clusters who owns `query` (as `user`, the request's `X-Trino-User`, when it names one)
    /// and has the router learn the answer.
    pub async fn find_owner(&self, router: &Router, query: &QueryId, user: Option<&str>) -> Found {
        // A router that just started may not have polled yet: the coordinator ids its first round learns
        // from `/v1/info` place the query without a lookup.
        router.first_round(router.snapshot().config.affinity.discovery_timeout).await;
        if router.affinity().owner_of(query).is_some() {
            return Found::Owner;
        }
        let snapshot = router.snapshot();
        let by_suffix = query.coordinator_id().is_some_and(|s| !router.affinity().is_shared_suffix(s));
        let timeout = snapshot.config.affinity.discovery_timeout;
        let started = std::time::Instant::now();
        let verdict = self.locate(snapshot.clone(), query, by_suffix, timeout, user).await;
        let outcome = match &verdict {
            Verdict::Owner(_) => "found",
            Verdict::NowhereHeld => "not_found",
            Verdict::Unknown => "unknown",
        };
        METRICS.looked_up(outcome, started.elapsed());
        match verdict {
            Verdict::Owner(name) => match snapshot.cluster_by_name(&name) {
                Some(cluster) => {
                    tracing::info!(query_id = %query, cluster = %name, "discovered query owner");
                    router.learn(&snapshot, Learned::QueryOwner { query: query.clone(), cluster });
                    Found::Owner
                }
                // Removed by a reload meanwhile.
                None => Found::Unknown,
            },
            Verdict::NowhereHeld => Found::Nowhere,
            Verdict::Unknown => {
                tracing::info!(query_id = %query, "no cluster owns the query as far as the lookup could tell, but one did not answer");
                Found::Unknown
            }
        }
    }

    /// Who holds `query`, as the answers within `timeout` say. `by_suffix`: the query's coordinator id
    /// is unambiguous, so one lookup serves every query of that coordinator.
    pub async fn locate(
        &self,
        snapshot: Arc<Snapshot>,
        query: &QueryId,
        by_suffix: bool,
        timeout: Duration,
        user: Option<&str>,
    ) -> Verdict<Arc<str>> {
        let key = match query.coordinator_id() {
            Some(suffix) if by_suffix => format!("suffix:{suffix}"),
            _ => format!("id:{query}"),
        };
        if let Some(answer) = self.answers.get(&key).await {
            return answer;
        }
        let tls = &snapshot.config.coordinator_tls;
        let mut unasked = 0;
        let lookups: Vec<(Arc<str>, reqwest::Client, String)> = snapshot
            .config
            .clusters
            .iter()
            .filter_map(|c| match self.client_for(&c.url.to_string(), tls) {
                Ok(client) => Some((c.name.clone(), client, format!("{}/v1/query/{query}", c.url))),
                Err(e) => {
                    tracing::debug!(cluster = %c.name, "no discovery lookup: cannot make an HTTP client: {e}");
                    unasked += 1;
                    None
                }
            })
            .collect();
        let auth = snapshot.config.coordinator_auth.clone();
        let Ok(Ok(_permit)) = tokio::time::timeout(timeout, self.running.acquire()).await else {
            METRICS.safeguard(Safeguard::LookupShed);
            tracing::debug!(query_id = %query, "too many lookups under way: this one is not made");
            return Verdict::Unknown;
        };
        let user = user.filter(|u| !u.is_empty()).unwrap_or(ROUTER_USER).to_owned();
        let lookup = async move {
            let mut tally = Tally::default();
            for _ in 0..unasked {
                tally.add(Arc::<str>::from(""), Answer::Silent);
            }
            let mut probes = JoinSet::new();
            for (name, client, url) in lookups {
                let request = query_request(&client, &url, timeout, &user, auth.as_ref());
                probes.spawn(async move {
                    let answer = ask(request, &name).await;
                    (name, answer)
                });
            }
            while let Some(joined) = probes.join_next().await {
                let (name, answer) = joined.unwrap_or_else(|_| (Arc::from(""), Answer::Silent));
                if tally.add(name, answer).is_some() {
                    probes.abort_all();
                    break;
                }
            }
            match tally.verdict() {
                // Not worth remembering: the next request asks again.
                Verdict::Unknown => Err(()),
                definite => Ok(definite),
            }
        };
        self.answers.try_get_with(key, lookup).await.unwrap_or(Verdict::Unknown)
    }

    /// Whether `snapshot.config.clusters[cluster]`'s coordinator holds `query` (`GET /v1/query/{id}`,
    /// judged as discovery judges it: 200 or 403 holds, 410 or 404 does not); `None` when it could not be
    /// asked or gave no clear answer within `timeout`.
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
        let url = format!("{url}/v1/query/{query}");
        let request = query_request(&client, &url, timeout, ROUTER_USER, config.coordinator_auth.as_ref());
        match ask(request, &config.clusters[cluster].name).await {
            Answer::Holds => Some(true),
            Answer::NotHere => Some(false),
            Answer::Silent => None,
        }
    }

    fn client_for(&self, base: &str, tls: &CoordinatorTls) -> Result<reqwest::Client, String> {
        self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).client(base, tls)
    }
}

/// `GET /v1/query/{id}` (`url`) as `user`, with the coordinators' credentials when the config has them.
fn query_request(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    user: &str,
    auth: Option<&Credentials>,
) -> reqwest::RequestBuilder {
    let request = client.get(url).timeout(timeout).header("X-Trino-User", user);
    match auth {
        Some(auth) => request.basic_auth(&auth.user, auth.password.as_deref()),
        None => request,
    }
}

/// Sends a query request to `cluster`'s coordinator and judges its answer ([`judge`]).
async fn ask(request: reqwest::RequestBuilder, cluster: &str) -> Answer {
    let status = match request.send().await {
        Ok(answer) => Some(answer.status().as_u16()),
        Err(e) => {
            tracing::debug!(cluster, "query lookup failed: {}", describe(&e));
            None
        }
    };
    judge(status)
}
