//! Serves Envoy its routes over RDS (`envoy.service.route.v3.RouteDiscoveryService`, state of the world)
//! on the router's gRPC port, so Envoy routes the follow-ups of known coordinators by itself.
//!
//! Owns three things:
//! - **what is published** ([`RouteTable`]): the route configuration [`envoy_bootstrap::route_config`]
//!   renders — the same JSON `envoy-config --static-routes` prints — plus, per cluster that is active and
//!   not down, a route for the coordinator ids the router has learned. A draining, disabled or down
//!   cluster gets none: its follow-ups come back through the router, which then sees every query still
//!   in flight there (drain completion) and answers for a dead cluster itself. Under
//!   `new_query_routing: envoy`, also the native routes for new statements ([`native_routes`]): Envoy
//!   places them by weights the router sets from load, health and the operator's say, and the learn
//!   filter is on for them only while a coordinator id is unknown.
//! - **the publisher** ([`publish`]): rebuilds the table when its inputs change (a new coordinator id,
//!   an operator or health change, a reload, new native weights after a poll), woken by
//!   [`Router::routes_changed`] and a short tick.
//! - **one stream's protocol** ([`StreamState`]): send the latest table on Envoy's first request and on
//!   every change; an ACK needs nothing; a NACK is logged (Envoy keeps its previous routes).
//!
//! The JSON is turned into protobuf by reflection over the Envoy route API's descriptors (compiled in
//! `build.rs` from the `.proto` files `envoy-types` ships): one rendering for both outputs, and a route
//! Envoy's schema does not know fails here, in tests, rather than as a NACK.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_server::RouteDiscoveryService;
use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::config::Config;
use crate::domain::decision::native::{NativeRoute, NotNative, Target};
use crate::envoy::bootstrap::{LearnedRoutes, ROUTE_CONFIG_NAME, route_config};
use crate::state::cluster_state::{ClusterRuntime, Operator};
use crate::state::router::{Router, Snapshot};

mod native_routes;

/// The RDS resource type.
pub const ROUTE_TYPE_URL: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// Coordinator ids per cluster in its learned route: the most recent ones (a restarted coordinator has
/// a new id; older ids name queries that are gone, and the router still places them if asked).
pub const LEARNED_IDS_PER_CLUSTER: usize = 16;

/// How often the publisher looks for changes nobody announced (health verdicts from polls).
const PUBLISH_TICK: Duration = Duration::from_millis(200);

static ENVOY_ROUTE_API: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/envoy_route_descriptor.bin"))[..])
        .expect("build.rs wrote a valid descriptor set")
});

/// One published version of the routes.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTable {
    /// Counts publications in this process (Envoy only compares versions for equality).
    pub version: u64,
    pub resource: Any,
}

/// The route configuration (as JSON, with `@type`s) as the protobuf Envoy expects over RDS.
pub fn encode_route_config(json: &Value) -> Result<Any, String> {
    let descriptor = ENVOY_ROUTE_API
        .get_message_by_name("envoy.config.route.v3.RouteConfiguration")
        .ok_or("the descriptor set lacks RouteConfiguration")?;
    let message = DynamicMessage::deserialize(descriptor, json).map_err(|e| e.to_string())?;
    Ok(Any { type_url: ROUTE_TYPE_URL.to_owned(), value: prost::Message::encode_to_vec(&message) })
}

/// Whether a cluster gets a learned route: active and not down (otherwise its follow-ups must come back
/// through the router).
fn takes_learned_route(runtime: &ClusterRuntime) -> bool {
    runtime.operator() == Operator::Active && !runtime.health().is_down()
}

/// The learned routes for `snapshot`: per cluster that is active and not down, its recent coordinator ids.
pub fn learned_routes(router: &Router, snapshot: &Snapshot) -> Vec<LearnedRoutes> {
    snapshot
        .config
        .clusters
        .iter()
        .zip(&snapshot.clusters)
        .filter(|(_, runtime)| takes_learned_route(runtime))
        .map(|(cluster, _)| LearnedRoutes {
            cluster: cluster.name.clone(),
            envoy_cluster: cluster.envoy_cluster.clone(),
            coordinator_ids: router.affinity().recent_coordinator_ids(&cluster.name, LEARNED_IDS_PER_CLUSTER),
        })
        .filter(|routes| !routes.coordinator_ids.is_empty())
        .collect()
}

/// What the routes are made from, cheap to read and compare: the config in force (held, so that a new
/// config can never be mistaken for a freed one at the same address), the coordinator-id table's change
/// count, which clusters take learned routes, and the native routes for new statements (their weights
/// follow every poll). Read before the routes are built, so a change that lands meanwhile shows at the
/// next look.
struct Inputs {
    config: Arc<Config>,
    coordinator_id_changes: u64,
    takes_learned_route: Vec<bool>,
    native: Result<Vec<NativeRoute>, NotNative>,
}

impl Inputs {
    fn read(router: &Router, snapshot: &Snapshot) -> Inputs {
        Inputs {
            config: snapshot.config.clone(),
            coordinator_id_changes: router.affinity().coordinator_id_changes(),
            takes_learned_route: snapshot
                .clusters
                .iter()
                .map(|runtime| takes_learned_route(runtime))
                .collect(),
            native: router.native_plan(snapshot),
        }
    }

    fn same_as(&self, other: &Inputs) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
            && self.coordinator_id_changes == other.coordinator_id_changes
            && self.takes_learned_route == other.takes_learned_route
            && self.native == other.native
    }
}

/// The routes for `snapshot` as table `version`, with `native` routes for new statements when the
/// config allows them.
fn build_table(
    router: &Router,
    snapshot: &Snapshot,
    native: &Result<Vec<NativeRoute>, NotNative>,
    version: u64,
) -> Result<RouteTable, String> {
    let learned = learned_routes(router, snapshot);
    let mut routes = route_config(&snapshot.config, &learned);
    if let Ok(plan) = native {
        native_routes::add(&mut routes, &snapshot.config, plan);
    }
    let resource = encode_route_config(&routes)?;
    tracing::info!(
        version,
        learned = ?learned.iter().map(|l| (&*l.cluster, l.coordinator_ids.len())).collect::<Vec<_>>(),
        native = %native_summary(&snapshot.config, native),
        "publishing routes"
    );
    Ok(RouteTable { version, resource })
}

/// The native routes in a few words for the log: each weighted target's clusters and weights, or why
/// the router decides every new statement.
fn native_summary(config: &Config, native: &Result<Vec<NativeRoute>, NotNative>) -> String {
    let plan = match native {
        Ok(plan) => plan,
        Err(NotNative::RouterDecides) => return "off".to_owned(),
        Err(why) => return format!("off: {}", why.reason()),
    };
    let targets: Vec<String> = plan
        .iter()
        .filter_map(|route| match &route.target {
            Target::Weighted(w) => Some(format!(
                "{}: {}{}",
                route.name,
                w.clusters
                    .iter()
                    .map(|&(c, weight)| format!("{}={weight}", config.clusters[c].name))
                    .collect::<Vec<_>>()
                    .join(" "),
                if w.learn { " (learning)" } else { "" }
            )),
            Target::Router => None,
        })
        .collect();
    targets.join(", ")
}

/// Keeps `tables` up to date (forever: the server aborts this task when it stops). The routes are built
/// again only when their inputs changed.
pub async fn publish(router: Arc<Router>, tables: watch::Sender<Arc<RouteTable>>) {
    let mut last: Option<Inputs> = None;
    loop {
        let snapshot = router.snapshot();
        let inputs = Inputs::read(&router, &snapshot);
        if !last.as_ref().is_some_and(|last| last.same_as(&inputs)) {
            let version = tables.borrow().version + 1;
            match build_table(&router, &snapshot, &inputs.native, version) {
                Ok(table) => {
                    tables.send_replace(Arc::new(table));
                }
                Err(error) => {
                    tracing::error!(%error, "could not encode the routes; Envoy keeps the previous ones")
                }
            }
            last = Some(inputs);
        }
        tokio::select! {
            _ = router.routes_changed().notified() => {}
            _ = tokio::time::sleep(PUBLISH_TICK) => {}
        }
    }
}

/// The first table, published before the server takes streams.
pub fn initial_table(router: &Router) -> Result<RouteTable, String> {
    let snapshot = router.snapshot();
    build_table(router, &snapshot, &router.native_plan(&snapshot), 0)
}

/// One RDS stream's protocol: what to send Envoy after each of its requests and each new table.
#[derive(Debug, Default)]
pub struct StreamState {
    /// The version last sent on this stream, if any.
    sent: Option<u64>,
    /// Responses sent (the nonce of the last one).
    nonce: u64,
}

impl StreamState {
    /// Envoy asked (first request, ACK or NACK): the response to send, if any.
    pub fn on_request(
        &mut self,
        request: &DiscoveryRequest,
        table: &RouteTable,
    ) -> Option<DiscoveryResponse> {
        if let Some(error) = &request.error_detail {
            tracing::warn!(
                version = request.version_info,
                nonce = request.response_nonce,
                message = error.message,
                "Envoy rejected the routes; it keeps the previous ones"
            );
        }
        let first = request.response_nonce.is_empty();
        let answered_latest = self.sent == Some(table.version);
        if first || !answered_latest { self.respond(table) } else { None }
    }

    /// A new table was published: send it unless this stream already has it.
    pub fn on_table(&mut self, table: &RouteTable) -> Option<DiscoveryResponse> {
        if self.sent == Some(table.version) || self.sent.is_none() { None } else { self.respond(table) }
    }

    fn respond(&mut self, table: &RouteTable) -> Option<DiscoveryResponse> {
        self.sent = Some(table.version);
        self.nonce += 1;
        Some(DiscoveryResponse {
            version_info: table.version.to_string(),
            resources: vec![table.resource.clone()],
            type_url: ROUTE_TYPE_URL.to_owned(),
            nonce: self.nonce.to_string(),
            ..Default::default()
        })
    }
}

/// The RDS service.
pub struct RouteDiscovery {
    tables: watch::Receiver<Arc<RouteTable>>,
    /// Turns true when the server shuts down: streams end so that shutdown does not wait for them.
    stopping: watch::Receiver<bool>,
}

impl RouteDiscovery {
    pub fn new(tables: watch::Receiver<Arc<RouteTable>>, stopping: watch::Receiver<bool>) -> RouteDiscovery {
        RouteDiscovery { tables, stopping }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl RouteDiscoveryService for RouteDiscovery {
    type StreamRoutesStream = ResponseStream<DiscoveryResponse>;
    type DeltaRoutesStream =
        ResponseStream<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse>;

    async fn stream_routes(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamRoutesStream>, Status> {
        let mut inbound = request.into_inner();
        let mut tables = self.tables.clone();
        let mut stopping = self.stopping.clone();
        let (outbound, responses) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut state = StreamState::default();
            loop {
                let reply = tokio::select! {
                    request = inbound.message() => match request {
                        Ok(Some(request)) if !request.type_url.is_empty() && request.type_url != ROUTE_TYPE_URL => {
                            Some(Err(Status::invalid_argument(format!("this server serves {ROUTE_TYPE_URL}, not {}", request.type_url))))
                        }
                        Ok(Some(request)) => {
                            if !request.resource_names.is_empty()
                                && !request.resource_names.iter().any(|n| n == ROUTE_CONFIG_NAME)
                            {
                                tracing::warn!(names = ?request.resource_names, "Envoy asked for routes this router does not serve");
                            }
                            let table = tables.borrow_and_update().clone();
                            state.on_request(&request, &table).map(Ok)
                        }
                        Ok(None) | Err(_) => return,
                    },
                    changed = tables.changed() => match changed {
                        Ok(()) => {
                            let table = tables.borrow_and_update().clone();
                            state.on_table(&table).map(Ok)
                        }
                        Err(_) => return,
                    },
                    _ = stopping.wait_for(|stop| *stop) => return,
                };
                if let Some(reply) = reply {
                    let failed = reply.is_err();
                    if outbound.send(reply).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn delta_routes(
        &self,
        _request: Request<Streaming<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaRoutesStream>, Status> {
        Err(Status::unimplemented("this router serves state-of-the-world RDS (api_type: GRPC)"))
    }

    async fn fetch_routes(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let table = self.tables.borrow().clone();
        Ok(Response::new(StreamState::default().respond(&table).expect("always responds")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::Config;

    fn config(extra: &str) -> Config {
        let text = format!(
            "
listen: 127.0.0.1:1
default_group: adhoc
{extra}
clusters:
  - {{name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}}
  - {{name: trino-b, url: 'http://127.0.0.1:2', group: adhoc, envoy_cluster: 'outbound|2||b'}}
"
        );
        crate::domain::config::testing::config(&text)
    }

    fn learned(cluster: &str, ids: &[&str]) -> LearnedRoutes {
        LearnedRoutes {
            cluster: cluster.into(),
            envoy_cluster: cluster.into(),
            coordinator_ids: ids.iter().map(|id| (*id).into()).collect(),
        }
    }

    #[test]
    fn every_rendering_is_valid_envoy_route_configuration() {
        let both = [learned("trino-a", &["abcde", "fghij"]), learned("trino-b", &["kmnpq"])];
        for extra in ["", "url_prefix: /_trino"] {
            for learned in [&[][..], &both[..]] {
                let any = encode_route_config(&route_config(&config(extra), learned)).unwrap();
                assert_eq!(any.type_url, ROUTE_TYPE_URL);
                assert!(any.value.len() > 200, "{extra:?}: {} bytes", any.value.len());
            }
        }
    }

    #[test]
    fn unknown_fields_are_refused_here_not_by_envoy() {
        let mut json = route_config(&config(""), &[]);
        json["virtual_hosts"][0]["routes"][0]["route"]["no_such_field"] = Value::Bool(true);
        assert!(encode_route_config(&json).unwrap_err().contains("no_such_field"));
    }

    #[test]
    fn learned_route_sends_named_queries_of_known_coordinators_to_their_cluster() {
        let json = route_config(&config(""), &[learned("trino-b", &["kmnpq", "abcde"])]);
        let routes = json["virtual_hosts"][0]["routes"].as_array().unwrap();
        let route = routes.iter().find(|r| r["name"] == "learned-trino-b").unwrap();
        assert_eq!(route["route"]["cluster"], "trino-b");
        assert_eq!(routes.last().unwrap()["name"], "trino", "the catch-all stays last");
        let regex = regex::Regex::new(route["match"]["safe_regex"]["regex"].as_str().unwrap()).unwrap();
        let id = "20261125_101010_00042";
        for (path, native) in [
            (format!("/v1/statement/executing/{id}_kmnpq/y1/1"), true),
            (format!("/v1/statement/queued/{id}_abcde/y1/1"), true),
            (format!("/v1/statement/queued/{id}_abcde"), true),
            (format!("/v1/query/{id}_kmnpq"), true),
            (format!("/ui/api/query/{id}_kmnpq"), true),
            (format!("/ui/api/statement/executing/{id}_kmnpq/y/2"), true),
            (format!("/v1/statement/executing/{id}_zzzzz/y1/1"), false),
            (format!("/v1/statement/executing/{id}_kmnpqx/y1/1"), false),
            (format!("/v1/statement/executing/x{id}_kmnpq/y1/1"), false),
            (format!("/v1/statement/executing/{id}%5Fkmnpq/y1/1"), false),
            ("/v1/statement".to_owned(), false),
            ("/v1/spooled/download/abc".to_owned(), false),
            (format!("/v1/info?q={id}_kmnpq"), false),
        ] {
            assert_eq!(regex.is_match(&path), native, "{path}");
        }
    }

    fn table(version: u64) -> RouteTable {
        RouteTable { version, resource: Any::default() }
    }

    fn request(nonce: &str, rejected: bool) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: ROUTE_TYPE_URL.to_owned(),
            resource_names: vec![ROUTE_CONFIG_NAME.to_owned()],
            response_nonce: nonce.to_owned(),
            error_detail: rejected.then(|| envoy_types::pb::google::rpc::Status {
                message: "bad route".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn stream_protocol() {
        let mut s = StreamState::default();
        assert_eq!(s.on_table(&table(1)), None, "nothing before Envoy asked");
        let first = s.on_request(&request("", false), &table(1)).unwrap();
        assert_eq!((first.version_info.as_str(), first.nonce.as_str()), ("1", "1"));
        assert_eq!(s.on_request(&request("1", false), &table(1)), None, "an ACK needs no answer");
        assert_eq!(
            s.on_request(&request("1", true), &table(1)),
            None,
            "a NACK is not answered with the same"
        );
        let next = s.on_table(&table(2)).unwrap();
        assert_eq!((next.version_info.as_str(), next.nonce.as_str()), ("2", "2"));
        assert_eq!(s.on_table(&table(2)), None);
        // A request acknowledging an older response while a newer table exists gets the newer one.
        let mut s = StreamState::default();
        s.on_request(&request("", false), &table(3)).unwrap();
        assert_eq!(s.on_request(&request("1", false), &table(4)).unwrap().version_info, "4");
        // Envoy reconnecting (empty nonce) always gets the current table.
        assert_eq!(s.on_request(&request("", false), &table(4)).unwrap().nonce, "3");
    }
}
