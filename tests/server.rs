//! The middle tier: the real [`Server`] on an ephemeral loopback port, driven over gRPC by tonic clients
//! the way Envoy drives it — ext_proc streams in both filter roles (request headers, the SQL body, the
//! answer's headers and body) and an RDS stream — against fake coordinators that answer the health
//! polls and query lookups. The streams' behaviour end to end within the router, without Envoy.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Phase;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse,
};
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_client::RouteDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::value::Kind;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use trino_router::domain::config::{Config, ENVOY_AUTH_METADATA, Overrides};
use trino_router::envoy::route_discovery::ROUTE_TYPE_URL;
use trino_router::operate::server::Server;

/// The coordinator ids of the fake coordinators of clusters `trino-a` and `trino-b`.
const A: &str = "aaaaa";
const B: &str = "bbbbb";
/// A coordinator id no fake coordinator knows: its queries are placed only by what the router learned.
const LEARNED: &str = "ccccc";

/// A fake coordinator: healthy, and it knows the queries whose ids end with its coordinator id.
async fn coordinator(coordinator_id: &'static str) -> SocketAddr {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/v1/info", get(|| async { r#"{"starting":false,"coordinator":true}"# }))
        .route("/v1/info/state", get(|| async { r#""ACTIVE""# }))
        .route(
            "/v1/query/{id}",
            get(move |UrlPath(id): UrlPath<String>| async move {
                // Trino answers 410 for every id it does not hold (docs/trino-conformance.md, Q2).
                if id.ends_with(coordinator_id) { StatusCode::OK } else { StatusCode::GONE }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The router under test, serving on an ephemeral port; stopped when dropped.
struct Router {
    channel: Channel,
    /// The envoy_auth token the router was configured with, if any.
    envoy_token: Option<&'static str>,
    _stop: oneshot::Sender<()>,
}

impl Router {
    /// Two clusters of the default group, `trino-a` and `trino-b`, each with a fake coordinator; `extra`
    /// is appended to the config. Returns once the first health round is done (SERVING).
    async fn start(extra: &str) -> Router {
        Router::start_with(extra, None).await
    }

    /// As [`Router::start`], with `envoy_auth` set to `token` when given.
    async fn start_with(extra: &str, token: Option<&'static str>) -> Router {
        let auth = token.map(|t| format!("envoy_auth: {{token: {t}}}\n")).unwrap_or_default();
        let extra = format!("{extra}\n{auth}");
        let (a, b) = (coordinator(A).await, coordinator(B).await);
        let yaml = format!(
            "listen: 127.0.0.1:0\ndefault_group: adhoc\n\
             clusters:\n  - {{name: trino-a, url: 'http://{a}', group: adhoc}}\n  - {{name: trino-b, url: 'http://{b}', group: adhoc}}\n{extra}\n"
        );
        let config = Config::from_yaml(Path::new("server-test.yaml"), &yaml, &Overrides::default()).unwrap();
        let server = Server::bind(config, None).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut health = HealthClient::new(channel.clone());
        for _ in 0..100 {
            let serving = health.check(HealthCheckRequest { service: String::new() }).await;
            if serving.is_ok_and(|r| r.into_inner().status == 1) {
                return Router { channel, envoy_token: token, _stop: stop };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the router never became ready");
    }

    /// A new ext_proc stream of the filter `role` (`decide` or `learn`), with the router's envoy_auth
    /// token when it has one.
    async fn stream(&self, role: &str) -> Stream {
        self.open(Some(role), self.envoy_token).await.unwrap()
    }

    /// A new ext_proc stream: with `role` and `token` in its metadata when given.
    async fn open(&self, role: Option<&str>, token: Option<&str>) -> Result<Stream, tonic::Status> {
        let (sender, receiver) = mpsc::channel(8);
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        if let Some(role) = role {
            request.metadata_mut().insert("x-trino-router-role", role.parse().unwrap());
        }
        if let Some(token) = token {
            request.metadata_mut().insert(ENVOY_AUTH_METADATA, token.parse().unwrap());
        }
        let replies = ExternalProcessorClient::new(self.channel.clone()).process(request).await?;
        Ok(Stream { sender, replies: replies.into_inner() })
    }

    /// A new RDS stream, its first request sent.
    async fn routes(&self) -> (mpsc::Sender<DiscoveryRequest>, tonic::Streaming<DiscoveryResponse>) {
        let (sender, receiver) = mpsc::channel(8);
        sender
            .send(DiscoveryRequest {
                type_url: ROUTE_TYPE_URL.to_owned(),
                resource_names: vec!["trino".to_owned()],
                ..Default::default()
            })
            .await
            .unwrap();
        let replies = RouteDiscoveryServiceClient::new(self.channel.clone())
            .stream_routes(ReceiverStream::new(receiver))
            .await
            .unwrap();
        (sender, replies.into_inner())
    }
}

/// One ext_proc stream: messages go out, replies come back.
struct Stream {
    sender: mpsc::Sender<ProcessingRequest>,
    replies: tonic::Streaming<ProcessingResponse>,
}

impl Stream {
    async fn send(&mut self, phase: Phase, metadata: Option<Metadata>) -> ProcessingResponse {
        let message =
            ProcessingRequest { request: Some(phase), metadata_context: metadata, ..Default::default() };
        self.sender.send(message).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), self.replies.message()).await;
        reply.expect("a reply in time").expect("no stream error").expect("a reply, not the end")
    }
}

fn headers(pairs: &[(&str, &str)], end_of_stream: bool) -> HttpHeaders {
    let headers = pairs
        .iter()
        .map(|(k, v)| HeaderValue {
            key: (*k).into(),
            raw_value: v.as_bytes().to_vec(),
            ..Default::default()
        })
        .collect();
    HttpHeaders { headers: Some(HeaderMap { headers }), end_of_stream, ..Default::default() }
}

fn body(bytes: &str) -> HttpBody {
    HttpBody { body: bytes.as_bytes().to_vec(), end_of_stream: true, ..Default::default() }
}

/// What a reply does: `route CLUSTER [name=value ...]`, `refuse STATUS`, `pass PHASE`, with
/// `+mode` when it changes what Envoy sends next.
fn summary(reply: &ProcessingResponse) -> String {
    let mode = if reply.mode_override.is_some() { " +mode" } else { "" };
    let (phase, common) = match &reply.response {
        Some(Response::RequestHeaders(h)) => ("request headers", h.response.as_ref()),
        Some(Response::RequestBody(b)) => ("request body", b.response.as_ref()),
        Some(Response::ResponseHeaders(h)) => ("response headers", h.response.as_ref()),
        Some(Response::ResponseBody(b)) => ("response body", b.response.as_ref()),
        Some(Response::ImmediateResponse(r)) => return format!("refuse {}", r.status.as_ref().unwrap().code),
        other => return format!("{other:?}"),
    };
    let set: Vec<String> = common
        .and_then(|c| c.header_mutation.as_ref())
        .map(|m| m.set_headers.iter().filter_map(|h| h.header.as_ref()).collect::<Vec<_>>())
        .unwrap_or_default()
        .iter()
        .map(|h| format!("{}={}", h.key, String::from_utf8_lossy(&h.raw_value)))
        .collect();
    match set.split_first() {
        Some((routed, rest)) if routed.starts_with("x-trino-cluster=") => {
            let extra: String = rest.iter().map(|h| format!(" {h}")).collect();
            format!("route {}{extra}{mode}", &routed["x-trino-cluster=".len()..])
        }
        _ => format!("pass {phase}{mode}"),
    }
}

/// What Envoy forwards to the learn filter's stream from a decide reply: its dynamic metadata.
fn forwarded(reply: &ProcessingResponse) -> Metadata {
    let fields = reply.dynamic_metadata.clone().expect("a routed new statement leaves a note").fields;
    let filter_metadata = fields
        .into_iter()
        .filter_map(|(namespace, value)| match value.kind {
            Some(Kind::StructValue(s)) => Some((namespace, s)),
            _ => None,
        })
        .collect();
    Metadata { filter_metadata, ..Default::default() }
}

/// A new statement through both filters: decide (headers, then its SQL), then learn (the first page of
/// query `id`). Returns the cluster it went to.
async fn submit(router: &Router, sql: &str, id: &str) -> String {
    let mut decide = router.stream("decide").await;
    let post = headers(&[(":method", "POST"), (":path", "/v1/statement"), ("x-trino-user", "alice")], false);
    let tentative = decide.send(Phase::RequestHeaders(post), None).await;
    assert!(summary(&tentative).starts_with("route trino-"), "{}", summary(&tentative));
    let routed = decide.send(Phase::RequestBody(body(sql)), None).await;
    let cluster = summary(&routed).split_whitespace().nth(1).unwrap().to_owned();

    let mut learn = router.stream("learn").await;
    let answer = learn
        .send(Phase::ResponseHeaders(headers(&[(":status", "200")], false)), Some(forwarded(&routed)))
        .await;
    assert_eq!(summary(&answer), "pass response headers +mode", "the first answer's body is asked for");
    let page = format!(r#"{{"id":"{id}","nextUri":"http://x/v1/statement/queued/{id}/y/1","stats":{{}}}}"#);
    assert_eq!(summary(&learn.send(Phase::ResponseBody(body(&page)), None).await), "pass response body");
    cluster
}

/// The decide filter's answer to a follow-up `GET path`.
async fn follow_up(router: &Router, path: &str) -> String {
    let mut decide = router.stream("decide").await;
    summary(
        &decide
            .send(Phase::RequestHeaders(headers(&[(":method", "GET"), (":path", path)], true)), None)
            .await,
    )
}

#[tokio::test]
async fn a_new_query_is_decided_learned_and_its_follow_ups_placed() {
    let router = Router::start("").await;
    let id = format!("20260101_120000_00001_{LEARNED}");
    let cluster = submit(&router, "SELECT 1", &id).await;
    assert!(cluster == "trino-a" || cluster == "trino-b", "{cluster}");
    // The query was learned on the cluster its statement went to, so its follow-ups go there.
    assert_eq!(
        follow_up(&router, &format!("/v1/statement/executing/{id}/y/1")).await,
        format!("route {cluster}")
    );
    // So do the other queries of the same coordinator (placed by its id), with no lookup.
    let sibling = format!("20260101_120000_00002_{LEARNED}");
    assert_eq!(follow_up(&router, &format!("/v1/query/{sibling}")).await, format!("route {cluster}"));
}

#[tokio::test]
async fn queries_nobody_placed_are_looked_up_on_the_coordinators() {
    let router = Router::start("").await;
    // A restarted router: trino-b's coordinator knows the query.
    let known = format!("/v1/statement/executing/20260101_120000_00009_{B}/y/1");
    assert_eq!(follow_up(&router, &known).await, "route trino-b");
    let unknown = "/v1/statement/executing/20260101_120000_00009_zzzzz/y/1";
    assert_eq!(follow_up(&router, unknown).await, "refuse 404", "no coordinator knows it");
    assert_eq!(follow_up(&router, "/v1/statement/executing/NOT-AN-ID/y/1").await, "refuse 400");
    assert_eq!(follow_up(&router, "/v1/info").await.split(' ').next(), Some("route"), "anything else");
}

#[tokio::test]
async fn rules_on_the_sql_decide_on_the_body_and_add_their_headers() {
    let rules = "groups: [{name: etl, fallback: [adhoc]}]\n\
                 rules: [{name: writes, when: 'statement.kind == \"insert\"', group: etl, set_headers: {X-Trino-Client-Tags: etl-write}}]";
    let router = Router::start(rules).await;
    let mut decide = router.stream("decide").await;
    let post = headers(&[(":method", "POST"), (":path", "/v1/statement")], false);
    decide.send(Phase::RequestHeaders(post), None).await;
    // etl has no cluster of its own: the query goes to its fallback, with the rule's header.
    let routed = decide.send(Phase::RequestBody(body("INSERT INTO hive.s.t VALUES (1)")), None).await;
    let summary = summary(&routed);
    assert!(
        summary.starts_with("route trino-") && summary.ends_with(" x-trino-client-tags=etl-write"),
        "{summary}"
    );
    // A statement that names a query runs where that query runs (after a lookup, if need be).
    let mut decide = router.stream("decide").await;
    decide
        .send(Phase::RequestHeaders(headers(&[(":method", "POST"), (":path", "/v1/statement")], false)), None)
        .await;
    let kill = format!("CALL system.runtime.kill_query(query_id => '20260101_120000_00003_{B}')");
    assert_eq!(routed_to(&decide.send(Phase::RequestBody(body(&kill)), None).await), "route trino-b");
}

/// The cluster a reply routes to, without the headers it adds.
fn routed_to(reply: &ProcessingResponse) -> String {
    summary(reply).split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn learned_coordinator_ids_become_routes_envoy_serves_alone() {
    let router = Router::start("").await;
    let (requests, mut routes) = router.routes().await;
    let first = routes.message().await.unwrap().expect("the routes at once");
    assert_eq!(first.type_url, ROUTE_TYPE_URL);
    let text = |r: &DiscoveryResponse| String::from_utf8_lossy(&r.resources[0].value).into_owned();
    assert!(!text(&first).contains(LEARNED), "nothing learned yet");
    // Envoy ACKs; then a new query teaches the router a coordinator id.
    requests
        .send(DiscoveryRequest {
            type_url: ROUTE_TYPE_URL.to_owned(),
            version_info: first.version_info.clone(),
            response_nonce: first.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let cluster = submit(&router, "SELECT 1", &format!("20260101_120000_00001_{LEARNED}")).await;
    let next = tokio::time::timeout(Duration::from_secs(5), routes.message()).await;
    let next = next.expect("new routes in time").unwrap().expect("a new version");
    assert_ne!(next.version_info, first.version_info);
    let published = text(&next);
    assert!(published.contains(&format!("learned-{cluster}")) && published.contains(LEARNED), "{published}");
}

/// A learn stream's claim that a known coordinator id belongs to the other cluster: the other
/// cluster's coordinator does not know the query, so nothing changes — the coordinator id still places
/// its queries (before, the claim made it ambiguous for good and its queries unplaceable).
async fn forge_claim(
    router: &Router,
    claimed_by: &str,
    id: &str,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut decide = router.stream("decide").await;
    let post =
        headers(&[(":method", "POST"), (":path", "/v1/statement"), ("x-trino-user", "mallory")], false);
    decide.send(Phase::RequestHeaders(post), None).await;
    let routed = decide.send(Phase::RequestBody(body("SELECT 1")), None).await;
    // The forger names the cluster it likes in the note.
    let mut note = forwarded(&routed);
    for fields in note.filter_metadata.values_mut() {
        for value in fields.fields.values_mut() {
            if let Some(Kind::StringValue(s)) = &mut value.kind
                && s.starts_with("trino-")
            {
                *s = claimed_by.to_owned();
            }
        }
    }
    let mut learn = router.open(None, token).await?;
    learn.send(Phase::ResponseHeaders(headers(&[(":status", "200")], false)), Some(note)).await;
    let page = format!(r#"{{"id":"{id}","nextUri":"http://x/v1/statement/queued/{id}/y/1","stats":{{}}}}"#);
    learn.send(Phase::ResponseBody(body(&page)), None).await;
    Ok(())
}

#[tokio::test]
async fn a_forged_learn_stream_changes_no_placement() {
    let router = Router::start("").await;
    let id = format!("20260101_120000_00001_{LEARNED}");
    let cluster = submit(&router, "SELECT 1", &id).await;
    let other = if cluster == "trino-a" { "trino-b" } else { "trino-a" };
    forge_claim(&router, other, &format!("20260101_120000_00002_{LEARNED}"), None).await.unwrap();
    // The claim is checked with the other coordinator, which does not know the query.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sibling = format!("/v1/statement/executing/20260101_120000_00003_{LEARNED}/y/1");
    assert_eq!(follow_up(&router, &sibling).await, format!("route {cluster}"), "placement unchanged");
}

#[tokio::test]
async fn with_envoy_auth_only_streams_with_the_token_are_served() {
    let token = "envoy-shared-token-for-tests-0001";
    let router = Router::start_with("", Some(token)).await;
    for (role, presented) in
        [(Some("learn"), None), (Some("decide"), Some("wrong-token-wrong-token")), (None, None)]
    {
        let refused = router.open(role, presented).await.err().expect("refused");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{role:?} {presented:?}");
        assert!(refused.message().contains("envoy_auth"), "{}", refused.message());
    }
    let id = format!("20260101_120000_00001_{LEARNED}");
    let cluster = submit(&router, "SELECT 1", &id).await;
    let other = if cluster == "trino-a" { "trino-b" } else { "trino-a" };
    let forged = forge_claim(&router, other, &format!("20260101_120000_00002_{LEARNED}"), None).await;
    assert_eq!(forged.unwrap_err().code(), tonic::Code::Unauthenticated);
    let sibling = format!("/v1/statement/executing/20260101_120000_00003_{LEARNED}/y/1");
    assert_eq!(follow_up(&router, &sibling).await, format!("route {cluster}"));
}
