//! The health and load poller: every `health.interval`, asks each coordinator `/v1/info` (is it
//! starting?), `/v1/info/state` (is it shutting down?) and, with `coordinator_auth` configured,
//! `/ui/api/stats` (running and queued queries), and feeds what it saw to the cluster's runtime state.
//!
//! All clusters are polled concurrently; each poll is bounded by `health.timeout`. The poller reads the
//! current snapshot every round, so reloads take effect at the next round.
//!
//! Every `/v1/info` poll carries `X-Forwarded-Proto`, as Envoy adds it to every request: a coordinator
//! with Trino's default `http-server.process-forwarded` answers it 406, and is taken out of rotation
//! with a reason that names the setting ([`FORWARDED_REFUSED`]). Where `/v1/info` publishes the
//! coordinator's id (`coordinatorId`, Trino 477+), the router learns it here, before any query is seen;
//! a new id for a cluster retires its older ones (a restart).
//!
//! `https://` coordinators are verified against `coordinator_tls` (or the system roots); a handshake that
//! fails (an untrusted or expired certificate, a name that does not match, plaintext on the other end)
//! is a failed poll whose reason names the TLS problem, never a crash.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinSet;

use crate::coordinators::http::{CoordinatorClients, describe};
use crate::domain::config::Credentials;
use crate::domain::health::{FORWARDED_REFUSED, Observation, Thresholds};
use crate::domain::query_id::QueryId;
use crate::state::router::{Router, Snapshot, log_health_change};

/// The least time between two poll rounds when suspect clusters ask for one early.
pub const SUSPECT_ROUND_GAP: Duration = Duration::from_millis(100);

/// Polls every cluster of the current config, forever (or until the task is dropped).
pub struct Poller {
    router: Arc<Router>,
    /// One HTTP client per coordinator URL: each keeps its own web-UI session cookie.
    clients: CoordinatorClients,
}

/// What one poll of one coordinator found.
#[derive(Debug)]
struct PollResult {
    health: Observation,
    /// Running + queued queries, when load statistics were read.
    queries: Option<u64>,
    /// The coordinator id `/v1/info` published (Trino 477+).
    coordinator_id: Option<String>,
}

/// The fields of Trino's `ServerInfo` the router reads (rows N1, N2 of docs/trino-conformance.md).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerInfo {
    #[serde(default)]
    starting: bool,
    /// From Trino 477; empty on workers.
    #[serde(default)]
    coordinator_id: Option<String>,
}

/// The `X-Forwarded-Proto` Envoy adds to a request to `base`.
fn forwarded_proto(base: &str) -> &'static str {
    if base.starts_with("https:") { "https" } else { "http" }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterStats {
    running_queries: u64,
    queued_queries: u64,
}

impl Poller {
    pub fn new(router: Arc<Router>) -> Poller {
        Poller { router, clients: CoordinatorClients::new(true) }
    }

    /// Polls every cluster once and applies the results.
    pub async fn round(&mut self) {
        let snapshot = self.router.snapshot();
        let timeout = snapshot.config.health.timeout;
        let auth = snapshot.config.coordinator_auth.clone();
        let mut polls = JoinSet::new();
        for (index, cluster) in snapshot.config.clusters.iter().enumerate() {
            let base = cluster.url.to_string();
            let auth = auth.clone();
            match self.clients.client(&base, &snapshot.config.coordinator_tls) {
                Ok(client) => {
                    polls.spawn(async move { (index, poll(&client, &base, timeout, auth.as_ref()).await) });
                }
                Err(e) => {
                    let health = Observation::Failed(format!("cannot make an HTTP client for {base}: {e}"));
                    polls.spawn(async move {
                        (index, PollResult { health, queries: None, coordinator_id: None })
                    });
                }
            }
        }
        while let Some(joined) = polls.join_next().await {
            match joined {
                Ok((index, result)) => {
                    if apply(&self.router, &snapshot, index, result) {
                        // Envoy's learned routes leave out clusters that are down.
                        self.router.routes_changed().notify_one();
                    }
                }
                Err(e) => tracing::error!("a poll task failed: {e}"),
            }
        }
        self.router.polled();
    }

    /// Polls forever at the configured interval, and sooner when a cluster looks suspect.
    pub async fn run(mut self) {
        loop {
            let interval = self.router.snapshot().config.health.interval;
            let started = tokio::time::Instant::now();
            self.round().await;
            tokio::select! {
                () = tokio::time::sleep_until(started + interval) => {}
                // A suspect cluster (a failed delivery): poll again now, but not more often than this.
                () = self.router.suspect().notified() => {
                    tokio::time::sleep_until(started + SUSPECT_ROUND_GAP.min(interval)).await;
                }
            }
        }
    }
}

/// Feeds one poll result to its cluster; returns whether the cluster's health changed.
fn apply(router: &Router, snapshot: &Snapshot, index: usize, result: PollResult) -> bool {
    let settings = &snapshot.config.health;
    let thresholds =
        Thresholds { healthy: settings.healthy_threshold, unhealthy: settings.unhealthy_threshold };
    let runtime = &snapshot.clusters[index];
    let name = &snapshot.config.clusters[index].name;
    let changed = runtime.observe(&result.health, thresholds);
    if let Some(health) = changed {
        let why = match &result.health {
            Observation::Answered { starting, state } => format!("starting={starting} state={state}"),
            other => other.reason(),
        };
        log_health_change(name, health, &why);
    }
    match result.coordinator_id.as_deref() {
        Some(id) if QueryId::is_coordinator_id(id) => {
            router.coordinator_published(snapshot, index, id);
        }
        // Workers and older releases publish none (or an empty one).
        Some("") | None => {}
        Some(id) => {
            tracing::debug!(cluster = %name, coordinator_id = id, "/v1/info names no coordinator id of Trino's shape")
        }
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
    let (health, coordinator_id) = poll_health(client, base, timeout).await;
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
    PollResult { health, queries, coordinator_id }
}

/// Polls `/v1/info` (with what Envoy adds to every request) and `/v1/info/state`: the health they show,
/// and the coordinator id `/v1/info` published.
async fn poll_health(
    client: &reqwest::Client,
    base: &str,
    timeout: Duration,
) -> (Observation, Option<String>) {
    let info = client
        .get(format!("{base}/v1/info"))
        .header("X-Forwarded-Proto", forwarded_proto(base))
        .timeout(timeout)
        .send()
        .await;
    let info = match info {
        Ok(response) if response.status().is_success() => response,
        Ok(response) if response.status() == reqwest::StatusCode::NOT_ACCEPTABLE => {
            return (Observation::Misconfigured(FORWARDED_REFUSED.to_owned()), None);
        }
        Ok(response) => {
            return (Observation::Failed(format!("/v1/info answered {}", response.status())), None);
        }
        Err(e) if e.is_connect() && crate::coordinators::http::tls_failure(&e).is_none() => {
            return (Observation::Refused, None);
        }
        Err(e) => return (Observation::Failed(format!("/v1/info: {}", describe(&e))), None),
    };
    let info = match info.bytes().await.map(|b| serde_json::from_slice::<ServerInfo>(&b)) {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => return (Observation::Failed(format!("/v1/info is not Trino's: {e}")), None),
        Err(e) => return (Observation::Failed(format!("/v1/info: {}", describe(&e))), None),
    };
    let coordinator_id = info.coordinator_id;
    (poll_state(client, base, timeout, info.starting).await, coordinator_id)
}

/// Polls `/v1/info/state`, after `/v1/info` said `starting`.
async fn poll_state(client: &reqwest::Client, base: &str, timeout: Duration, starting: bool) -> Observation {
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
        Err(e) if e.is_connect() && crate::coordinators::http::tls_failure(&e).is_none() => {
            return Observation::Refused;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tls::testing::TestPki;

    use crate::domain::health::Health;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A coordinator stand-in serving `/v1/info` and `/v1/info/state` over HTTPS with a certificate for
    /// 127.0.0.1 signed by `pki`'s CA; one answer per connection.
    async fn https_coordinator(pki: &TestPki) -> std::net::SocketAddr {
        crate::domain::config::tls::install_crypto_provider();
        let issued = pki.issue("coordinator", &["127.0.0.1"]);
        let cert = crate::domain::config::tls::read_certificates(&issued.cert).unwrap();
        let key = crate::domain::config::tls::read_private_key(&issued.key).unwrap();
        use rustls_pki_types::pem::PemObject;
        let chain =
            rustls_pki_types::CertificateDer::pem_slice_iter(&cert.pem).collect::<Result<_, _>>().unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key.pem).unwrap();
        let config =
            rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let body = if request.starts_with(b"GET /v1/info/state ") {
                        "\"ACTIVE\""
                    } else {
                        "{\"starting\":false}"
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        addr
    }

    fn router_trusting(ca: &std::path::Path, coordinator: std::net::SocketAddr) -> Arc<Router> {
        let text = format!(
            "listen: 127.0.0.1:0\ndefault_group: a\n\
             clusters: [{{name: a, url: 'https://{coordinator}', group: a}}]\n\
             coordinator_tls: {{ca_file: '{}'}}\n",
            ca.display()
        );
        Arc::new(Router::new(crate::domain::config::testing::config(&text)))
    }

    /// A coordinator stand-in: `/v1/info` publishes `coordinator_id` (Trino 477+), and with `rejects` it
    /// refuses any `X-Forwarded-*` header with 406, as Trino's default does (row F1).
    async fn coordinator(coordinator_id: &'static str, rejects: bool) -> std::net::SocketAddr {
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        let info = move |headers: HeaderMap| async move {
            if rejects && headers.keys().any(|k| k.as_str().starts_with("x-forwarded-")) {
                return StatusCode::NOT_ACCEPTABLE.into_response();
            }
            format!(r#"{{"starting":false,"coordinator":true,"coordinatorId":"{coordinator_id}"}}"#)
                .into_response()
        };
        let app = axum::Router::new()
            .route("/v1/info", axum::routing::get(info))
            .route("/v1/info/state", axum::routing::get(|| async { r#""ACTIVE""# }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    #[tokio::test]
    async fn published_ids_are_learned_and_a_coordinator_refusing_forwarded_headers_is_misconfigured() {
        let (a, b) = (coordinator("aaaaa", false).await, coordinator("bbbbb", true).await);
        let router = crate::state::router::testing::router_from(&format!(
            "listen: 127.0.0.1:0\ndefault_group: g\nclusters:\n  - {{name: a, url: 'http://{a}', group: g}}\n  - {{name: b, url: 'http://{b}', group: g}}\n"
        ));
        Poller::new(router.clone()).round().await;
        let snapshot = router.snapshot();
        assert_eq!(snapshot.clusters[0].health(), Health::Healthy);
        let query = QueryId::parse("20260101_120000_00001_aaaaa").unwrap();
        assert_eq!(
            router.affinity().owner_of(&query).as_deref(),
            Some("a"),
            "placed before any query is seen"
        );
        assert_eq!(snapshot.clusters[1].health(), Health::Misconfigured);
        assert!(!snapshot.clusters[1].accepts_new_queries());
        assert!(snapshot.clusters[1].health_reason().contains("http-server.process-forwarded"));
        let unseen = QueryId::parse("20260101_120000_00001_bbbbb").unwrap();
        assert_eq!(router.affinity().owner_of(&unseen), None, "a refused poll publishes nothing");
    }

    #[tokio::test]
    async fn https_coordinators_are_verified_against_the_configured_ca() {
        let pki = TestPki::new("coordinators");
        let stranger = TestPki::new("not-the-coordinators");
        let coordinator = https_coordinator(&pki).await;

        let trusting = router_trusting(&pki.ca, coordinator);
        let mut poller = Poller::new(trusting.clone());
        poller.round().await;
        assert_eq!(trusting.snapshot().clusters[0].health(), Health::Healthy);

        let distrusting = router_trusting(&stranger.ca, coordinator);
        let mut poller = Poller::new(distrusting.clone());
        poller.round().await;
        assert_eq!(distrusting.snapshot().clusters[0].health(), Health::Unhealthy);
        let cluster = distrusting.snapshot().config.clusters[0].clone();
        let tls = &distrusting.snapshot().config.coordinator_tls;
        let client = poller.clients.client(&cluster.url.to_string(), tls).unwrap();
        let (seen, _) = poll_health(&client, &cluster.url.to_string(), Duration::from_secs(2)).await;
        let Observation::Failed(why) = seen else { panic!("{seen:?}") };
        assert!(why.contains("TLS handshake failed: invalid peer certificate: UnknownIssuer"), "{why}");

        // A reload that trusts the right CA is taken at the next round.
        distrusting.apply(trusting.snapshot().config.as_ref().clone());
        poller.round().await;
        poller.round().await;
        assert_eq!(distrusting.snapshot().clusters[0].health(), Health::Healthy);
    }
}
