//! The Envoy bootstrap that goes with a router config: what `trino-router envoy-config` prints.
//!
//! Shape: one listener for Trino clients; two ext_proc filters that call the router — **decide**
//! (request headers only; sets the routing header or refuses) and **learn** (enabled only on the
//! new-statement routes; sees the buffered first answer of each new query, so the router knows the
//! query's owner before the client can ask about it); the router filter, routing on the routing header;
//! one Envoy cluster per Trino cluster; and the router's own HTTP/2 gRPC cluster.
//!
//! Where the routes come from ([`RouteSource`]): by default the router serves them over RDS on its gRPC
//! port, adding one route per cluster that sends the follow-ups of every query whose coordinator id it
//! has learned straight to that cluster, with both filters off ([`LearnedRoutes`]) — so the router is
//! asked about a query about once, when it is submitted. `--static-routes` writes the same routes into
//! the bootstrap, without learned ones: every request then asks the router.
//!
//! TLS ([`EnvoyTls`]): with the router's `listen_tls`, Envoy dials the router over TLS (ALPN h2), checks
//! its certificate against `--router-ca` (and its name, with `--router-server-name`) and, when the router
//! requires client certificates, presents `--router-client-cert`; the RDS stream and the health checks
//! ride the same cluster. `https://` coordinators are checked against `--coordinator-ca`, by default the
//! config's `coordinator_tls.ca_file`. Paths are written as given: they are Envoy's.
//!
//! Why two filters: a decide failure must answer 503 (the clients retry, and nothing was submitted), but
//! a failure after a query was submitted must never turn its answer into an error (the client would
//! retry and submit the query twice) — so the learn filter has `failure_mode_allow: true`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::domain::config::{Cluster, Config, ENVOY_AUTH_METADATA, Secret};
use crate::envoy::local_reply::local_reply_config;
use crate::envoy::protocol::{DECIDE_FILTER, LEARN_FILTER, NOTE_NAMESPACE, ROLE_METADATA};
use crate::envoy::router_address::{self, RouterAddress};
pub use crate::envoy::statement_route::new_statement_regex;

/// Name of the Envoy cluster that reaches the router.
pub const ROUTER_CLUSTER: &str = "trino-router";
/// Name of the Trino listener (and its stats prefix).
pub const LISTENER: &str = "trino";

/// Where things listen.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// Envoy's Trino listener.
    pub listen: SocketAddr,
    /// Envoy's admin interface.
    pub admin: SocketAddr,
    /// The router replicas' gRPC addresses (or names) as Envoy dials them (at least one).
    pub routers: Vec<RouterAddress>,
}

/// Envoy's side of TLS. Paths are as Envoy sees them (its filesystem may not be the router's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvoyTls {
    /// How Envoy dials the router replicas; none: plaintext HTTP/2.
    pub router: Option<RouterTls>,
    /// The CA that signs the `https://` coordinators' certificates; none: the config's
    /// `coordinator_tls.ca_file`; neither: Envoy does not verify them.
    pub coordinator_ca: Option<PathBuf>,
}

/// TLS from Envoy to the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterTls {
    /// The CA that signed the router's certificate.
    pub ca: PathBuf,
    /// The name the router's certificate must carry (also sent as SNI); none: any the CA signed.
    pub server_name: Option<String>,
    /// Envoy's certificate and key, for a router that requires client certificates.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Whether `tls` fits the router `config` describes: a TLS router needs `router.ca`, one that requires
/// client certificates needs `router.client_cert`, and a plaintext router no TLS at all.
pub fn check_tls(config: &Config, tls: &EnvoyTls) -> Result<(), String> {
    match (&config.listen_tls, &tls.router) {
        (Some(_), None) => Err("the router serves TLS (listen_tls): pass --router-ca FILE, the CA Envoy \
                                trusts for the router's certificate"
            .to_owned()),
        (Some(listen), Some(router)) if listen.client_ca.is_some() && router.client_cert.is_none() => {
            Err("the router requires client certificates (listen_tls.client_ca_file): pass \
             --router-client-cert FILE and --router-client-key FILE"
                .to_owned())
        }
        (None, Some(_)) => {
            Err("--router-ca: the router serves plaintext (the config has no listen_tls)".to_owned())
        }
        _ => Ok(()),
    }
}

/// Envoy's per-message timeout for the router's filters. Past it, decide answers 503 (nothing was
/// submitted) and learn lets the answer through unlearned.
pub const MESSAGE_TIMEOUT: &str = "0.5s";

/// The name of the route configuration (what Envoy asks the router for over RDS).
pub const ROUTE_CONFIG_NAME: &str = LISTENER;

/// Where Envoy gets its routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    /// From the router, over RDS, with learned follow-up routes (the default).
    Discovered,
    /// Written into the bootstrap: every request asks the router.
    Static,
}

/// The follow-ups Envoy routes to one cluster by itself: requests naming a query whose id ends with one
/// of `coordinator_ids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedRoutes {
    pub cluster: Arc<str>,
    pub envoy_cluster: Arc<str>,
    pub coordinator_ids: Vec<Box<str>>,
}

/// The bootstrap as a JSON value (Envoy accepts it as YAML or JSON).
pub fn bootstrap(config: &Config, at: &Addresses, routes: RouteSource, tls: &EnvoyTls) -> Value {
    let coordinator_ca = coordinator_ca(config, tls);
    let mut clusters: Vec<Value> =
        config.clusters.iter().map(|c| coordinator_cluster(c, coordinator_ca.as_deref())).collect();
    clusters.push(router_cluster(&at.routers, tls.router.as_ref()));
    json!({
        // xDS needs a node identity; every Envoy in front of the same routers may share it.
        "node": { "id": "trino-envoy", "cluster": "trino-envoy" },
        "admin": { "address": socket_address(at.admin) },
        "static_resources": {
            "listeners": [listener(config, at.listen, routes)],
            "clusters": clusters,
        },
    })
}

/// The bootstrap as YAML text, with a header comment.
pub fn bootstrap_yaml(config: &Config, at: &Addresses, routes: RouteSource, tls: &EnvoyTls) -> String {
    let body =
        serde_norway::to_string(&bootstrap(config, at, routes, tls)).expect("a JSON value always serializes");
    let source = match routes {
        RouteSource::Discovered => "Routes come from the router (RDS).",
        RouteSource::Static => "Routes are static: every request asks the router.",
    };
    let router_tls = match &tls.router {
        Some(router) if router.client_cert.is_some() => " over mTLS",
        Some(_) => " over TLS",
        None => "",
    };
    let unverified = config.clusters.iter().any(|c| c.url.tls) && coordinator_ca(config, tls).is_none();
    let unverified = if unverified {
        "# Envoy does not verify the https:// coordinators' certificates: pass --coordinator-ca FILE (or set \
         coordinator_tls.ca_file).\n"
    } else {
        ""
    };
    format!(
        "# Envoy bootstrap generated by `trino-router envoy-config` for {} Trino cluster(s).\n\
         # Trino clients connect to {}; the router is dialled at {}{router_tls}. {source}\n{unverified}{body}",
        config.clusters.len(),
        at.listen,
        at.routers.iter().map(|r| r.dialable().to_string()).collect::<Vec<_>>().join(", ")
    )
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

/// How much of a request Envoy may hold for the router: a new statement's SQL is buffered whole up to
/// this size (Envoy's 1 MiB default cut long statements into a partial first part, which Envoy 1.40 then
/// sometimes failed to finish forwarding, and answered 2 MiB statements with 413).
pub const REQUEST_BUFFER_LIMIT_BYTES: u64 = 8 * 1024 * 1024;

fn listener(config: &Config, listen: SocketAddr, routes: RouteSource) -> Value {
    json!({
        "name": LISTENER,
        "address": socket_address(listen),
        "per_connection_buffer_limit_bytes": REQUEST_BUFFER_LIMIT_BYTES,
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": http_connection_manager(config, routes),
            }],
        }],
    })
}

/// The HTTP side: routes, the router's filters and Envoy's router filter. Also what an existing Envoy
/// needs to add (see `envoy/README.md`).
pub fn http_connection_manager(config: &Config, routes: RouteSource) -> Value {
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": LISTENER,
        "codec_type": "AUTO",
        // Fewer spellings of one path for the routes and the router (RFC 3986: dot segments resolved,
        // escaped unreserved characters decoded; `//` merged); what the router decides on is what the
        // coordinator gets. Escaped slashes stay as they are: a coordinator refuses them (J1).
        "normalize_path": true,
        "merge_slashes": true,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "local_reply_config": local_reply_config(),
        "http_filters": [
            decide_filter_for(config.envoy_auth.as_ref()),
            learn_filter_for(config.envoy_auth.as_ref()),
            { "name": "envoy.filters.http.router",
              "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } },
        ],
    });
    match routes {
        RouteSource::Static => hcm["route_config"] = route_config(config, &[]),
        RouteSource::Discovered => hcm["rds"] = route_discovery(),
    }
    hcm
}

/// RDS from the router replicas. Envoy keeps the last routes it got while no replica answers (learned
/// follow-up routes keep working), and its listener waits for the first answer before taking clients.
fn route_discovery() -> Value {
    json!({
        "route_config_name": ROUTE_CONFIG_NAME,
        "config_source": {
            "resource_api_version": "V3",
            // Wait for the routes however long it takes: without them every request would be a 404.
            "initial_fetch_timeout": "0s",
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{
                    "envoy_grpc": { "cluster_name": ROUTER_CLUSTER, "authority": ROUTER_CLUSTER },
                }],
            },
        },
    })
}

/// Routes: learned follow-ups go straight to their cluster; every other route sends the request to the
/// cluster named by the routing header; only the new-statement routes keep the learn filter on.
pub fn route_config(config: &Config, learned: &[LearnedRoutes]) -> Value {
    let to_chosen_cluster = json!({
        "cluster_header": config.routing_header,
        // Trino long polls are short (maxWait ≤ 1 s), but result pages and spooled segments can be
        // large: no overall deadline; Envoy's stream idle timeout still ends dead streams.
        "timeout": "0s",
    });
    // A coordinator answers a new query at once (the query runs later): past this, it hangs, and Envoy's
    // 504 lets the client retry elsewhere (the learn filter takes the cluster out of rotation).
    let new_query_route = json!({
        "cluster_header": config.routing_header,
        "timeout": format!("{}s", config.new_query_timeout.as_secs_f64()),
        // Never repeated once it may have reached the coordinator: that would submit the query twice.
        "retry_policy": retry_policy(false),
    });
    let new_statement = |name: &str, regex: String| {
        json!({
            "name": name,
            "match": {
                "safe_regex": { "regex": regex },
                "headers": [{ "name": ":method", "string_match": { "exact": "POST" } }],
            },
            "route": new_query_route,
            // The decide filter reads the SQL here (rules and placement may test statement facts): the
            // whole body up to the listener's buffer limit, a first part beyond it. When neither needs
            // SQL, the router's headers reply turns this off (mode_override).
            "typed_per_filter_config": {
                DECIDE_FILTER: enabled(json!({ "processing_mode": processing_mode("BUFFERED_PARTIAL") })),
                LEARN_FILTER: enabled(json!({})),
            },
        })
    };
    let through_router = |name: &str, matcher: Value| {
        json!({
            "name": name,
            "match": matcher,
            "route": to_chosen_cluster,
            "typed_per_filter_config": { DECIDE_FILTER: enabled(json!({})) },
        })
    };
    let mut routes = vec![new_statement("new-statement", new_statement_regex(None))];
    if let Some(prefix) = &config.url_prefix {
        // URL-carried placement: a path under `{prefix}/{cluster}/` names its cluster, so Envoy routes it
        // there itself, prefix stripped, without asking the router — every follow-up, result page and
        // spooled segment. Only a new statement under a prefix, however spelled, is decided by the router
        // as any other (a client must not pick a cluster by writing a URL): its SQL goes to the router, and
        // the router sends it on the canonical path.
        routes.push(new_statement("prefixed-new-statement", new_statement_regex(Some(prefix))));
        for (index, cluster) in config.clusters.iter().enumerate() {
            let cluster_prefix = config.cluster_prefix(index).unwrap_or_default();
            routes.push(json!({
                "name": format!("url-placed-{}", cluster.name),
                "match": { "prefix": format!("{cluster_prefix}/") },
                "route": { "cluster": &*cluster.envoy_cluster, "prefix_rewrite": "/", "timeout": "0s" },
                // The coordinator builds the next URIs from this request: keep them under the prefix.
                "request_headers_to_add": [{
                    "header": { "key": "x-forwarded-prefix", "value": cluster_prefix },
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }],
                // No typed_per_filter_config: the router's filters stay off (not even created).
            }));
        }
    }
    for cluster in learned.iter().filter(|c| !c.coordinator_ids.is_empty()) {
        let ids: Vec<String> = cluster.coordinator_ids.iter().map(|id| regex::escape(id)).collect();
        routes.push(json!({
            "name": format!("learned-{}", cluster.cluster),
            // Paths that name a query (`target::classify`), the id literal and of Trino's generated shape.
            "match": { "safe_regex": { "regex": format!(
                "^/(?:v1|ui/api)/(?:statement/(?:queued|executing)|query)/[0-9]{{8}}_[0-9]{{6}}_[0-9]{{5}}_(?:{})(?:/.*)?$",
                ids.join("|")
            ) } },
            "route": { "cluster": &*cluster.envoy_cluster, "timeout": "0s" },
        }));
    }
    routes.push(through_router("trino", json!({ "prefix": "/" })));
    json!({
        "name": LISTENER,
        "virtual_hosts": [{
            "name": LISTENER,
            "domains": ["*"],
            "routes": routes,
            "retry_policy": retry_policy(true),
            // A transaction exists only on the cluster that started it: its id as clients see it names
            // that cluster, so any router replica places the transaction's statements (and strips the
            // prefix for the coordinator).
            "response_headers_to_add": [{
                "header": {
                    "key": "x-trino-started-transaction-id",
                    "value": "%UPSTREAM_CLUSTER%~%RESP(x-trino-started-transaction-id)%",
                },
                "append_action": "OVERWRITE_IF_EXISTS",
            }],
        }],
    })
}

/// Turns one of the router's filters on for a route (both are off unless a route turns them on, so
/// routes Envoy serves by itself do not even create them), with these `ExtProcPerRoute` overrides.
/// Envoy refuses a FilterConfig without a config: no overrides is an empty one.
fn enabled(overrides: Value) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
            "overrides": overrides,
        },
    })
}

/// The router's gRPC service as a filter calls it: the role in the stream's metadata and, with
/// `envoy_auth`, the token that lets the stream in.
fn router_grpc_service(role: &str, auth: Option<&Secret>) -> Value {
    let mut metadata = vec![json!({ "key": ROLE_METADATA, "value": role })];
    if let Some(token) = auth {
        metadata.push(json!({ "key": ENVOY_AUTH_METADATA, "value": token.expose() }));
    }
    // The authority is explicit: Envoy would otherwise send the cluster name, and names such as Istio's
    // `outbound|PORT||HOST` are not valid authorities for the router's HTTP/2 stack.
    json!({
        "envoy_grpc": { "cluster_name": ROUTER_CLUSTER, "authority": ROUTER_CLUSTER },
        "initial_metadata": metadata,
    })
}

/// The decide filter's processing mode: request headers, and the request body as given.
fn processing_mode(request_body_mode: &str) -> Value {
    json!({
        "request_header_mode": "SEND",
        "response_header_mode": "SKIP",
        "request_body_mode": request_body_mode,
        "response_body_mode": "NONE",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    })
}

/// The decide filter without `envoy_auth` (see [`decide_filter_for`]).
pub fn decide_filter() -> Value {
    decide_filter_for(None)
}

/// The decide filter; with `auth`, its streams carry the `envoy_auth` token.
pub fn decide_filter_for(auth: Option<&Secret>) -> Value {
    json!({
        "name": DECIDE_FILTER,
        // Off unless the route turns it on (see `enabled`).
        "disabled": true,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": router_grpc_service("decide", auth),
            "stat_prefix": "decide",
            "processing_mode": processing_mode("NONE"),
            "allow_mode_override": true,
            "message_timeout": MESSAGE_TIMEOUT,
            // Its note to the learn filter (see `learn_filter`).
            "metadata_options": { "receiving_namespaces": { "untyped": [NOTE_NAMESPACE] } },
            // No decision, no request: a 503 tells clients that nothing was submitted, and they retry.
            "failure_mode_allow": false,
            "status_on_error": { "code": 503 },
        },
    })
}

/// The learn filter without `envoy_auth` (see [`learn_filter_for`]).
pub fn learn_filter() -> Value {
    learn_filter_for(None)
}

/// The learn filter; with `auth`, its streams carry the `envoy_auth` token.
pub fn learn_filter_for(auth: Option<&Secret>) -> Value {
    json!({
        "name": LEARN_FILTER,
        // On only for the new-statement routes.
        "disabled": true,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": router_grpc_service("learn", auth),
            "stat_prefix": "learn",
            "message_timeout": MESSAGE_TIMEOUT,
            // The query exists once the coordinator answered: whatever happens to the router now, the
            // client must get that answer.
            "failure_mode_allow": true,
            // One message per new query: the answer's headers, with the decide filter's note (which
            // cluster, whether to watch) forwarded as metadata. The router asks for the body (mode
            // override) only when it reads it (see `LEARN_REFRESH`).
            "allow_mode_override": true,
            "metadata_options": { "forwarding_namespaces": { "untyped": [NOTE_NAMESPACE] } },
            "processing_mode": {
                "request_header_mode": "SKIP",
                "response_header_mode": "SEND",
                "request_body_mode": "NONE",
                "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
        },
    })
}

/// The CA Envoy checks `https://` coordinators against: `--coordinator-ca`, else the config's (absolute:
/// Envoy does not run where the config is).
fn coordinator_ca(config: &Config, tls: &EnvoyTls) -> Option<PathBuf> {
    tls.coordinator_ca.clone().or_else(|| {
        config.coordinator_tls.ca.as_ref().map(|ca| std::path::absolute(&ca.path).unwrap_or(ca.path.clone()))
    })
}

/// A TLS transport socket for an upstream cluster.
fn upstream_tls(context: Value) -> Value {
    let mut typed_config = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    });
    if let (Some(config), Some(fields)) = (typed_config.as_object_mut(), context.as_object()) {
        config.extend(fields.clone());
    }
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": typed_config })
}

/// Certificates signed by the CA in `ca`, and with `name` among their subject alternative names when
/// given (Envoy checks no name otherwise).
fn validation_context(ca: &Path, name: Option<&str>) -> Value {
    let mut validation = json!({ "trusted_ca": { "filename": ca.display().to_string() } });
    if let Some(name) = name {
        let san_type = if name.parse::<IpAddr>().is_ok() { "IP_ADDRESS" } else { "DNS" };
        validation["match_typed_subject_alt_names"] =
            json!([{ "san_type": san_type, "matcher": { "exact": name } }]);
    }
    validation
}

fn coordinator_cluster(cluster: &Cluster, ca: Option<&Path>) -> Value {
    let url = &cluster.url;
    let discovery = if url.host.parse::<IpAddr>().is_ok() { "STATIC" } else { "LOGICAL_DNS" };
    let mut value = json!({
        "name": &*cluster.envoy_cluster,
        "type": discovery,
        "connect_timeout": "2s",
        // Envoy allows 3 retries in flight per cluster by default: a blip that cuts a busy coordinator's
        // connections needs one per request in flight (the retries themselves are bounded per request).
        "circuit_breakers": { "thresholds": [{ "max_retries": 1024 }] },
        "load_assignment": {
            "cluster_name": &*cluster.envoy_cluster,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": url.host, "port_value": url.port }
            } } }] }],
        },
    });
    if url.tls {
        let mut context = json!({});
        // SNI carries host names only (RFC 6066), never an IP address.
        if url.host.parse::<IpAddr>().is_err() {
            context["sni"] = json!(url.host);
        }
        if let Some(ca) = ca {
            context["common_tls_context"] =
                json!({ "validation_context": validation_context(ca, Some(&url.host)) });
        }
        value["transport_socket"] = upstream_tls(context);
    }
    value
}

/// Envoy → router over TLS: HTTP/2 by ALPN, the router checked against its CA, Envoy's certificate for
/// a router that requires one.
fn router_transport_socket(tls: &RouterTls) -> Value {
    let mut common = json!({
        "alpn_protocols": ["h2"],
        "validation_context": validation_context(&tls.ca, tls.server_name.as_deref()),
    });
    if let Some((cert, key)) = &tls.client_cert {
        common["tls_certificates"] = json!([{
            "certificate_chain": { "filename": cert.display().to_string() },
            "private_key": { "filename": key.display().to_string() },
        }]);
    }
    let mut context = json!({ "common_tls_context": common });
    if let Some(name) = &tls.server_name {
        context["sni"] = json!(name);
    }
    upstream_tls(context)
}

/// The router replicas: HTTP/2, gRPC health-checked (a replica that stops answering gets no new streams,
/// a restarted one is taken back within seconds), and ejected after consecutive local failures. Envoy's
/// default panic threshold stays: when most replicas fail their checks, Envoy tries them all anyway.
/// A name among the replicas makes it a STRICT_DNS cluster (see [`router_address`]).
fn router_cluster(routers: &[RouterAddress], tls: Option<&RouterTls>) -> Value {
    let endpoints: Vec<Value> =
        routers.iter().map(|r| json!({ "endpoint": { "address": r.envoy_address() } })).collect();
    let mut cluster = json!({
        "name": ROUTER_CLUSTER,
        "connect_timeout": "0.25s",
        // Each stream to the replica with the fewest open streams (of 4 picks): a replica that stalls
        // (paused, overloaded) piles up open streams and stops getting new ones before its health check
        // fails. Round robin would not do: every new query opens a decide and a learn stream, so with two
        // replicas the decide streams all went to one of them.
        "load_balancing_policy": { "policies": [{ "typed_extension_config": {
            "name": "envoy.load_balancing_policies.least_request",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
                "choice_count": 4,
            },
        } }] },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} },
            },
        },
        "health_checks": [{
            "timeout": "0.5s",
            "interval": "1s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "no_traffic_interval": "1s",
            "grpc_health_check": { "authority": ROUTER_CLUSTER },
        }],
        "outlier_detection": {
            "split_external_local_origin_errors": true,
            "consecutive_local_origin_failure": 2,
            "base_ejection_time": "2s",
            "max_ejection_percent": 100,
        },
        "load_assignment": {
            "cluster_name": ROUTER_CLUSTER,
            "endpoints": [{ "lb_endpoints": endpoints }],
        },
    });
    if let (Some(cluster), Some(discovery)) =
        (cluster.as_object_mut(), router_address::discovery(routers).as_object())
    {
        cluster.extend(discovery.clone());
    }
    if let Some(tls) = tls {
        cluster["transport_socket"] = router_transport_socket(tls);
    }
    cluster
}

/// Envoy retries a request to the same coordinator when it never reached it (the connection failed, or was
/// reset before the request went out): safe for every request, a new query's POST included. `after_sent`
/// adds a request reset after it went out, for the requests that may be repeated (everything but a new
/// query: Trino's follow-ups name their page by token). The back-off (0.2 s, up to 0.8 s, jittered, 4
/// retries: about a second) carries requests over a network blip; a coordinator that stays away is
/// answered for by the router once its poll finds it unreachable.
fn retry_policy(after_sent: bool) -> Value {
    let retry_on = if after_sent {
        "connect-failure,refused-stream,reset-before-request,reset"
    } else {
        "connect-failure,refused-stream,reset-before-request"
    };
    json!({
        "retry_on": retry_on,
        "num_retries": 4,
        "retry_back_off": { "base_interval": "0.2s", "max_interval": "0.8s" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = "
listen: 0.0.0.0:50051
default_group: adhoc
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:18081', group: adhoc}
  - {name: trino-b, url: 'https://trino-b.example.com', group: adhoc}
  - {name: trino-etl, url: 'http://10.0.0.3:8080', group: etl, envoy_cluster: 'outbound|8080||trino-etl.data.svc.cluster.local'}
";
        crate::domain::config::testing::config(text)
    }

    fn addresses() -> Addresses {
        Addresses {
            listen: "127.0.0.1:8080".parse().unwrap(),
            admin: "127.0.0.1:9901".parse().unwrap(),
            routers: vec!["0.0.0.0:50051".parse().unwrap()],
        }
    }

    #[test]
    fn one_envoy_cluster_per_trino_cluster_plus_the_router() {
        let b = bootstrap(&config(), &addresses(), RouteSource::Static, &EnvoyTls::default());
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        let names: Vec<&str> = clusters.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["trino-a", "trino-b", "outbound|8080||trino-etl.data.svc.cluster.local", ROUTER_CLUSTER]
        );
        assert_eq!(clusters[0]["type"], "STATIC");
        assert_eq!(clusters[1]["type"], "LOGICAL_DNS");
        assert_eq!(clusters[1]["transport_socket"]["typed_config"]["sni"], "trino-b.example.com");
        assert!(clusters[0].get("transport_socket").is_none());
        let router =
            &clusters[3]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        assert_eq!(router["socket_address"]["address"], "127.0.0.1", "unspecified is dialled on loopback");
        assert_eq!(router["socket_address"]["port_value"], 50051);
        assert!(clusters[3]["health_checks"][0]["grpc_health_check"].is_object());
    }

    #[test]
    fn several_router_replicas() {
        let mut at = addresses();
        at.routers = vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()];
        let b = bootstrap(&config(), &at, RouteSource::Static, &EnvoyTls::default());
        let router = &b["static_resources"]["clusters"][3];
        let ports: Vec<u64> = router["load_assignment"]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["endpoint"]["address"]["socket_address"]["port_value"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [1, 2]);
        assert!(
            bootstrap_yaml(&config(), &at, RouteSource::Static, &EnvoyTls::default())
                .contains("dialled at 127.0.0.1:1, 127.0.0.1:2")
        );
    }

    #[test]
    fn a_named_router_is_a_strict_dns_cluster() {
        let mut at = addresses();
        at.routers = vec!["trino-router-headless:50051".parse().unwrap()];
        let b = bootstrap(&config(), &at, RouteSource::Discovered, &EnvoyTls::default());
        let router = &b["static_resources"]["clusters"][3];
        assert_eq!(router["type"], "STRICT_DNS");
        let address = &router["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        assert_eq!(address["socket_address"]["address"], "trino-router-headless");
        assert!(router["health_checks"][0]["grpc_health_check"].is_object(), "each address health-checked");
        assert_envoy_schema(&b, "named router");
        let yaml = bootstrap_yaml(&config(), &at, RouteSource::Discovered, &EnvoyTls::default());
        assert!(yaml.contains("dialled at trino-router-headless:50051."), "{yaml}");
    }

    #[test]
    fn envoy_auth_travels_in_both_filters_metadata() {
        let mut config = config();
        config.envoy_auth = Some(Secret::new("envoy-shared-token-0123456789"));
        let b = bootstrap(&config, &addresses(), RouteSource::Discovered, &EnvoyTls::default());
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        for (i, role) in [(0, "decide"), (1, "learn")] {
            let metadata = &hcm["http_filters"][i]["typed_config"]["grpc_service"]["initial_metadata"];
            assert_eq!(metadata[0]["value"], role);
            assert_eq!(metadata[1]["key"], ENVOY_AUTH_METADATA);
            assert_eq!(metadata[1]["value"], "envoy-shared-token-0123456789");
        }
        assert_envoy_schema(&b, "with envoy_auth");
    }

    #[test]
    fn filters_and_routes() {
        let b = bootstrap(&config(), &addresses(), RouteSource::Static, &EnvoyTls::default());
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let filters: Vec<&str> =
            hcm["http_filters"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(filters, [DECIDE_FILTER, LEARN_FILTER, "envoy.filters.http.router"]);
        let decide = &hcm["http_filters"][0]["typed_config"];
        assert_eq!(decide["processing_mode"]["response_header_mode"], "SKIP");
        assert_eq!(decide["status_on_error"]["code"], 503);
        assert_eq!(decide["failure_mode_allow"], false);
        let learn = &hcm["http_filters"][1]["typed_config"];
        assert_eq!(learn["failure_mode_allow"], true);
        assert_eq!(learn["processing_mode"]["response_body_mode"], "NONE", "asked for when needed");
        assert_eq!(learn["processing_mode"]["request_header_mode"], "SKIP", "the note replaces them");
        assert_eq!(learn["metadata_options"]["forwarding_namespaces"]["untyped"][0], NOTE_NAMESPACE);
        assert_eq!(decide["metadata_options"]["receiving_namespaces"]["untyped"][0], NOTE_NAMESPACE);
        assert_eq!(decide["grpc_service"]["initial_metadata"][0]["value"], "decide");
        assert_eq!(learn["grpc_service"]["initial_metadata"][0]["value"], "learn");
        assert_eq!(decide["grpc_service"]["initial_metadata"].as_array().unwrap().len(), 1, "no envoy_auth");
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 2);
        for route in routes {
            assert_eq!(route["route"]["cluster_header"], "x-trino-cluster");
        }
        assert_eq!(routes[0]["match"]["safe_regex"]["regex"], new_statement_regex(None));
        assert_eq!(hcm["normalize_path"], true);
        assert_eq!(hcm["merge_slashes"], true);
        let overrides = &routes[0]["typed_per_filter_config"];
        assert!(overrides[LEARN_FILTER].get("disabled").is_none(), "learning is on for new statements");
        assert_eq!(overrides[LEARN_FILTER]["config"]["overrides"], json!({}), "Envoy wants a config");
        assert_eq!(
            overrides[DECIDE_FILTER]["config"]["overrides"]["processing_mode"]["request_body_mode"],
            "BUFFERED_PARTIAL"
        );
        assert_eq!(decide["processing_mode"]["request_body_mode"], "NONE");
        assert_eq!(hcm["http_filters"][0]["disabled"], true, "each route turns the filters on");
        assert!(routes[1]["typed_per_filter_config"].get(LEARN_FILTER).is_none());
        assert!(routes[1]["typed_per_filter_config"].get(DECIDE_FILTER).is_some());
        let rewrite = &hcm["route_config"]["virtual_hosts"][0]["response_headers_to_add"][0];
        assert_eq!(rewrite["header"]["key"], "x-trino-started-transaction-id");
        assert_eq!(rewrite["header"]["value"], "%UPSTREAM_CLUSTER%~%RESP(x-trino-started-transaction-id)%");
        assert_eq!(
            rewrite["append_action"], "OVERWRITE_IF_EXISTS",
            "added only where the coordinator sent one"
        );
        let mapper = &hcm["local_reply_config"]["mappers"][2];
        assert!(mapper["filter"]["response_flag_filter"]["flags"].as_array().unwrap().contains(&json!("UF")));
        assert_eq!(
            mapper["body_format_override"]["json_format"]["error"]["errorName"],
            "CLUSTER_UNAVAILABLE"
        );
    }

    #[test]
    fn url_placement_routes_follow_ups_natively() {
        let text = "
listen: 127.0.0.1:1
default_group: adhoc
url_prefix: /_trino
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-b, url: 'http://127.0.0.1:2', group: adhoc, envoy_cluster: 'outbound|2||b'}
";
        let config = crate::domain::config::testing::config(text);
        let routes = route_config(&config, &[])["virtual_hosts"][0]["routes"].as_array().unwrap().clone();
        let names: Vec<&str> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["new-statement", "prefixed-new-statement", "url-placed-trino-a", "url-placed-trino-b", "trino"]
        );
        assert_eq!(
            routes[1]["typed_per_filter_config"], routes[0]["typed_per_filter_config"],
            "SQL and learn"
        );
        assert_eq!(routes[1]["route"], routes[0]["route"], "the new-query timeout, no retry once sent");
        let b = &routes[3];
        assert_eq!(b["match"]["prefix"], "/_trino/trino-b/");
        assert_eq!(b["route"]["cluster"], "outbound|2||b");
        assert_eq!(b["route"]["prefix_rewrite"], "/");
        assert!(b.get("typed_per_filter_config").is_none(), "no router on the data path");
        let statement =
            regex::Regex::new(routes[1]["match"]["safe_regex"]["regex"].as_str().unwrap()).unwrap();
        assert!(statement.is_match("/_trino/trino-a/v1/statement"));
        assert!(!statement.is_match("/_trino/trino-a/v1/statement/executing/x/y/1"));
        assert!(
            route_config(&super::tests::config(), &[])["virtual_hosts"][0]["routes"]
                .as_array()
                .unwrap()
                .len()
                == 2
        );
    }

    #[test]
    fn routes_from_the_router_by_default() {
        let b = bootstrap(&config(), &addresses(), RouteSource::Discovered, &EnvoyTls::default());
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert!(hcm.get("route_config").is_none());
        assert_eq!(hcm["rds"]["route_config_name"], ROUTE_CONFIG_NAME);
        let source = &hcm["rds"]["config_source"]["api_config_source"];
        assert_eq!(source["api_type"], "GRPC");
        assert_eq!(source["grpc_services"][0]["envoy_grpc"]["cluster_name"], ROUTER_CLUSTER);
        assert_eq!(b["node"]["id"], "trino-envoy", "xDS needs a node");
        let filters = hcm["http_filters"].as_array().unwrap();
        assert_eq!(filters.len(), 3, "the same filters either way");
        assert!(
            bootstrap_yaml(&config(), &addresses(), RouteSource::Discovered, &EnvoyTls::default())
                .contains("(RDS)")
        );
    }

    /// Every TLS option of `envoy-config`.
    fn full_tls() -> EnvoyTls {
        EnvoyTls {
            router: Some(RouterTls {
                ca: "/etc/envoy/router-ca.pem".into(),
                server_name: Some("trino-router.trino-router.svc".into()),
                client_cert: Some(("/etc/envoy/envoy.pem".into(), "/etc/envoy/envoy-key.pem".into())),
            }),
            coordinator_ca: Some("/etc/envoy/trino-ca.pem".into()),
        }
    }

    #[test]
    fn tls_to_the_router_and_to_coordinators() {
        let tls = full_tls();
        let b = bootstrap(&config(), &addresses(), RouteSource::Discovered, &tls);
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        let router = &clusters[3]["transport_socket"]["typed_config"];
        assert_eq!(router["sni"], "trino-router.trino-router.svc");
        let common = &router["common_tls_context"];
        assert_eq!(common["alpn_protocols"], json!(["h2"]), "gRPC needs HTTP/2");
        assert_eq!(common["validation_context"]["trusted_ca"]["filename"], "/etc/envoy/router-ca.pem");
        assert_eq!(
            common["validation_context"]["match_typed_subject_alt_names"][0],
            json!({ "san_type": "DNS", "matcher": { "exact": "trino-router.trino-router.svc" } })
        );
        assert_eq!(common["tls_certificates"][0]["private_key"]["filename"], "/etc/envoy/envoy-key.pem");
        assert!(
            clusters[3]["health_checks"][0]["grpc_health_check"].is_object(),
            "health checks ride TLS too"
        );

        let coordinator = &clusters[1]["transport_socket"]["typed_config"];
        assert_eq!(coordinator["sni"], "trino-b.example.com");
        let validation = &coordinator["common_tls_context"]["validation_context"];
        assert_eq!(validation["trusted_ca"]["filename"], "/etc/envoy/trino-ca.pem");
        assert_eq!(validation["match_typed_subject_alt_names"][0]["matcher"]["exact"], "trino-b.example.com");
        assert!(clusters[0].get("transport_socket").is_none(), "http:// stays plaintext");
        let yaml = bootstrap_yaml(&config(), &addresses(), RouteSource::Discovered, &tls);
        assert!(yaml.contains("dialled at 127.0.0.1:50051 over mTLS."), "{yaml}");
        assert!(!yaml.contains("does not verify"));
        let plain = bootstrap_yaml(&config(), &addresses(), RouteSource::Discovered, &EnvoyTls::default());
        assert!(plain.contains("# Envoy does not verify the https:// coordinators' certificates"));
    }

    #[test]
    fn coordinator_ca_defaults_to_the_configs_and_ip_hosts_get_no_sni() {
        use crate::domain::config::tls::testing::TestPki;
        let pki = TestPki::new("bootstrap");
        let text = format!(
            "listen: 127.0.0.1:1\ndefault_group: a\ncoordinator_tls: {{ca_file: '{}'}}\n\
             clusters: [{{name: a, url: 'https://127.0.0.1:8443', group: a}}]\n",
            pki.ca.display()
        );
        let config = crate::domain::config::testing::config(&text);
        let b = bootstrap(&config, &addresses(), RouteSource::Static, &EnvoyTls::default());
        let socket = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert!(socket.get("sni").is_none(), "{socket}");
        let validation = &socket["common_tls_context"]["validation_context"];
        assert_eq!(validation["trusted_ca"]["filename"], pki.ca.display().to_string());
        assert_eq!(
            validation["match_typed_subject_alt_names"][0],
            json!({ "san_type": "IP_ADDRESS", "matcher": { "exact": "127.0.0.1" } })
        );
    }

    #[test]
    fn envoys_tls_must_fit_the_routers() {
        use crate::domain::config::tls::testing::TestPki;
        let pki = TestPki::new("fit");
        let router = pki.issue("router", &["127.0.0.1"]);
        let listen_tls = |client_ca: bool| {
            let ca =
                if client_ca { format!(", client_ca_file: '{}'", pki.ca.display()) } else { String::new() };
            let text = format!(
                "listen: 127.0.0.1:1\ndefault_group: a\nclusters: [{{name: a, url: 'http://127.0.0.1:2', group: a}}]\n\
                 listen_tls: {{cert_file: '{}', key_file: '{}'{ca}}}\n",
                router.cert.display(),
                router.key.display()
            );
            crate::domain::config::testing::config(&text)
        };
        let server_only = RouterTls { ca: "/ca.pem".into(), server_name: None, client_cert: None };
        let mutual =
            RouterTls { client_cert: Some(("/e.pem".into(), "/k.pem".into())), ..server_only.clone() };
        let with = |router: Option<&RouterTls>| EnvoyTls { router: router.cloned(), coordinator_ca: None };
        assert!(check_tls(&config(), &with(None)).is_ok());
        assert!(check_tls(&config(), &with(Some(&server_only))).unwrap_err().contains("no listen_tls"));
        assert!(check_tls(&listen_tls(false), &with(None)).unwrap_err().contains("--router-ca"));
        assert!(check_tls(&listen_tls(false), &with(Some(&server_only))).is_ok());
        assert!(
            check_tls(&listen_tls(true), &with(Some(&server_only)))
                .unwrap_err()
                .contains("--router-client-cert")
        );
        assert!(check_tls(&listen_tls(true), &with(Some(&mutual))).is_ok());
    }

    /// Fails the test unless `bootstrap` is an Envoy bootstrap by Envoy's schema, typed configs included
    /// (what `envoy --mode validate` checks first; build.rs compiles the descriptors).
    fn assert_envoy_schema(bootstrap: &Value, what: &str) {
        use prost_reflect::{DescriptorPool, DynamicMessage};
        static SCHEMA: std::sync::LazyLock<DescriptorPool> = std::sync::LazyLock::new(|| {
            let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_bootstrap_descriptor.bin"));
            DescriptorPool::decode(&bytes[..]).expect("build.rs wrote a valid descriptor set")
        });
        let message = SCHEMA.get_message_by_name("envoy.config.bootstrap.v3.Bootstrap").unwrap();
        if let Err(e) = DynamicMessage::deserialize(message, bootstrap) {
            panic!("{what}: not an Envoy bootstrap: {e}");
        }
    }

    #[test]
    fn every_rendering_follows_envoys_schema() {
        let server_tls = EnvoyTls {
            router: Some(RouterTls { ca: "/ca.pem".into(), server_name: None, client_cert: None }),
            coordinator_ca: None,
        };
        let prefixed = crate::domain::config::testing::config(
            "listen: 127.0.0.1:1\ndefault_group: a\nurl_prefix: /_trino\n\
             clusters: [{name: a, url: 'https://[::1]:8443', group: a}]\n",
        );
        for config in [config(), prefixed] {
            for routes in [RouteSource::Discovered, RouteSource::Static] {
                for tls in [EnvoyTls::default(), server_tls.clone(), full_tls()] {
                    let b = bootstrap(&config, &addresses(), routes, &tls);
                    assert_envoy_schema(&b, &format!("{routes:?} {tls:?}"));
                }
            }
        }
        let mut broken = bootstrap(&config(), &addresses(), RouteSource::Static, &full_tls());
        broken["static_resources"]["clusters"][3]["transport_socket"]["typed_config"]["common_tls_context"]
            ["alpn"] = json!(["h2"]);
        let caught = std::panic::catch_unwind(|| assert_envoy_schema(&broken, "broken"));
        assert!(caught.is_err(), "the check catches a misspelt field");
    }

    #[test]
    fn yaml_names_the_addresses() {
        let yaml = bootstrap_yaml(&config(), &addresses(), RouteSource::Static, &EnvoyTls::default());
        assert!(yaml.starts_with(
            "# Envoy bootstrap generated by `trino-router envoy-config` for 3 Trino cluster(s).\n"
        ));
        assert!(yaml.contains("dialled at 127.0.0.1:50051"));
        let parsed: Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(parsed, bootstrap(&config(), &addresses(), RouteSource::Static, &EnvoyTls::default()));
    }
}
