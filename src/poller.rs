//! The health and load poller: every `health.interval`, asks each coordinator `/v1/info` (is it
//! starting?), `/v1/info/state` (is it shutting down?) and, with `coordinator_auth` configured,
//! `/ui/api/stats` (running and queued queries), and feeds what it saw to the cluster's runtime state.
//!
//! All clusters are polled concurrently; each poll is bounded by `health.timeout`. The poller reads the
//! current snapshot every round, so reloads take effect at the next round.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinSet;

use crate::config::{Cluster, Credentials};
use crate::health::{Observation, Thresholds};
use crate::routing::{Router, Snapshot, log_health_change};

/// Polls every cluster of the current config, forever (or until the task is dropped).
pub struct Poller {
    router: Arc<Router>,
    /// One HTTP client per coordinator URL: each keeps its own web-UI session cookie.
    clients: HashMap<String, reqwest::Client>,
}

/// What one poll of one coordinator found.
#[derive(Debug)]
struct PollResult {
    health: Observation,
    /// Running + queued queries, when load statistics were read.
    queries: Option<u64>,
}

#[derive(Deserialize)]
struct ServerInfo {
    #[serde(default)]
    starting: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterStats {
    running_queries: u64,
    queued_queries: u64,
}

impl Poller {
    pub fn new(router: Arc<Router>) -> Poller {
        Poller { router, clients: HashMap::new() }
    }

    /// Polls every cluster once and applies the results.
    pub async fn round(&mut self) {
        let snapshot = self.router.snapshot();
        let timeout = snapshot.config.health.timeout;
        let auth = snapshot.config.coordinator_auth.clone();
        let mut polls = JoinSet::new();
        for (index, cluster) in snapshot.config.clusters.iter().enumerate() {
            let client = self.client_for(cluster);
            let base = cluster.url.to_string();
            let auth = auth.clone();
            polls.spawn(async move { (index, poll(&client, &base, timeout, auth.as_ref()).await) });
        }
        while let Some(joined) = polls.join_next().await {
            match joined {
                Ok((index, result)) => {
                    if apply(&snapshot, index, result) {
                        // Envoy's learned routes leave out clusters that are down.
                        self.router.routes_changed().notify_one();
                    }
                }
                Err(e) => tracing::error!("a poll task failed: {e}"),
            }
        }
    }

    /// Polls forever at the configured interval.
    pub async fn run(mut self) {
        loop {
            let interval = self.router.snapshot().config.health.interval;
            let started = tokio::time::Instant::now();
            self.round().await;
            tokio::time::sleep_until(started + interval).await;
        }
    }

    fn client_for(&mut self, cluster: &Cluster) -> reqwest::Client {
        self.clients
            .entry(cluster.url.to_string())
            .or_insert_with(|| {
                reqwest::Client::builder()
                    .cookie_store(true)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("trino-router/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .expect("an HTTP client without TLS always builds")
            })
            .clone()
    }
}

/// Feeds one poll result to its cluster; returns whether the cluster's health changed.
fn apply(snapshot: &Snapshot, index: usize, result: PollResult) -> bool {
    let settings = &snapshot.config.health;
    let thresholds =
        Thresholds { healthy: settings.healthy_threshold, unhealthy: settings.unhealthy_threshold };
    let runtime = &snapshot.clusters[index];
    let name = &snapshot.config.clusters[index].name;
    let changed = runtime.observe(&result.health, thresholds);
    if let Some(health) = changed {
        let why = match &result.health {
            Observation::Answered { starting, state } => format!("starting={starting} state={state}"),
            Observation::Refused => "connection refused".to_owned(),
            Observation::Failed(e) => e.clone(),
        };
        log_health_change(name, health, &why);
    }
    match result.queries {
        Some(queries) => runtime.coordinator_reported(queries),
        None => runtime.no_coordinator_report(),
    }
    if runtime.take_drain_completion() {
        tracing::info!(cluster = %name, "cluster drained: no query in flight, safe to stop");
    }
    changed.is_some()
}

async fn poll(
    client: &reqwest::Client,
    base: &str,
    timeout: Duration,
    auth: Option<&Credentials>,
) -> PollResult {
    let health = poll_health(client, base, timeout).await;
    let queries = match (&health, auth) {
        (Observation::Answered { .. }, Some(auth)) => match poll_stats(client, base, timeout, auth).await {
            Ok(queries) => Some(queries),
            Err(e) => {
                tracing::debug!(base, "cannot read load statistics: {e}");
                None
            }
        },
        _ => None,
    };
    PollResult { health, queries }
}

async fn poll_health(client: &reqwest::Client, base: &str, timeout: Duration) -> Observation {
    let info = match client.get(format!("{base}/v1/info")).timeout(timeout).send().await {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => return Observation::Failed(format!("/v1/info answered {}", response.status())),
        Err(e) if e.is_connect() => return Observation::Refused,
        Err(e) => return Observation::Failed(format!("/v1/info: {}", describe(&e))),
    };
    let starting = match info.bytes().await.map(|b| serde_json::from_slice::<ServerInfo>(&b)) {
        Ok(Ok(info)) => info.starting,
        Ok(Err(e)) => return Observation::Failed(format!("/v1/info is not Trino's: {e}")),
        Err(e) => return Observation::Failed(format!("/v1/info: {}", describe(&e))),
    };
    let state = match client.get(format!("{base}/v1/info/state")).timeout(timeout).send().await {
        // Versions without the state resource only know "active" and "shutting down" via /v1/info.
        Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => "ACTIVE".to_owned(),
        Ok(response) if response.status().is_success() => {
            match response.bytes().await.map(|b| serde_json::from_slice::<String>(&b)) {
                Ok(Ok(state)) => state,
                Ok(Err(e)) => return Observation::Failed(format!("/v1/info/state is not Trino's: {e}")),
                Err(e) => return Observation::Failed(format!("/v1/info/state: {}", describe(&e))),
            }
        }
        Ok(response) => return Observation::Failed(format!("/v1/info/state answered {}", response.status())),
        Err(e) if e.is_connect() => return Observation::Refused,
        Err(e) => return Observation::Failed(format!("/v1/info/state: {}", describe(&e))),
    };
    Observation::Answered { starting, state }
}

/// Reads `/ui/api/stats`, logging in to the web UI first when the session is missing or expired.
async fn poll_stats(
    client: &reqwest::Client,
    base: &str,
    timeout: Duration,
    auth: &Credentials,
) -> Result<u64, String> {
    for attempt in 0..2 {
        let response = client
            .get(format!("{base}/ui/api/stats"))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if status.is_success() {
            let body = response.bytes().await.map_err(|e| describe(&e))?;
            let stats: ClusterStats =
                serde_json::from_slice(&body).map_err(|e| format!("/ui/api/stats is not Trino's: {e}"))?;
            return Ok(stats.running_queries + stats.queued_queries);
        }
        let needs_login = status == reqwest::StatusCode::UNAUTHORIZED
            || status == reqwest::StatusCode::FORBIDDEN
            || status.is_redirection();
        if !needs_login || attempt > 0 {
            return Err(format!("/ui/api/stats answered {status}"));
        }
        let mut form = vec![("username", auth.user.as_str()), ("redirectPath", "")];
        if let Some(password) = &auth.password {
            form.push(("password", password.as_str()));
        }
        let login = client
            .post(format!("{base}/ui/login"))
            .form(&form)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if !(login.status().is_success() || login.status().is_redirection()) {
            return Err(format!("/ui/login answered {}", login.status()));
        }
    }
    Err("/ui/api/stats: login did not help".to_owned())
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() { "timed out".to_owned() } else { error.to_string() }
}
