//! The Kubernetes objects that put the router behind an Istio ingress gateway or Envoy Gateway, generated
//! from a router config (`trino-router kubernetes istio|envoy-gateway`), so that they cannot drift from
//! the router: one route per cluster, the routing header's name and values, the router Service's port, and
//! every Envoy fragment (filters, per-route overrides, timeouts, retries, the request buffer) taken from what
//! `envoy-config` itself writes ([`crate::envoy::bootstrap`]).
//!
//! - **Istio** ([`istio`]): a Gateway server and a VirtualService for Trino's own host on the ingress
//!   gateway the cluster already runs (never `*`), and an EnvoyFilter that inserts the router's filters
//!   into that gateway **disabled**: Trino's virtual host turns decide on, the new-statement routes add the
//!   SQL body and learn, the URL-placed routes (`url_prefix`) turn it off again. Every other host on the
//!   shared listener never reaches the router. The listener gets envoy-config's 8 MiB connection buffer, so
//!   that a new statement's SQL is buffered whole for the router.
//! - **Envoy Gateway** ([`envoy_gateway`]): a Gateway, an HTTPRoute with a rule per cluster (and per
//!   URL-placed cluster), EnvoyExtensionPolicies that put decide (and, on new statements, the SQL body and
//!   learn) on exactly the rules that need the router, BackendTrafficPolicies with envoy-config's timeouts
//!   and retries, a ClientTrafficPolicy with its buffer limit, and the ReferenceGrants across namespaces.
//!
//! The coordinators must be Kubernetes Services (`http://NAME.NAMESPACE.svc.cluster.local:PORT`): their
//! URLs name the backends. What each mode needs of the config (Istio: `envoy_cluster` is Istio's cluster
//! name) is checked, and an error says what to write.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::domain::config::{Cluster, Config, Overrides};
use crate::envoy::bootstrap::{
    MESSAGE_TIMEOUT, REQUEST_BUFFER_LIMIT_BYTES, RouteSource, decide_filter, http_connection_manager,
    learn_filter,
};
use crate::envoy::protocol::{DECIDE_FILTER, NOTE_NAMESPACE};

/// `trino-router kubernetes ...`
#[derive(Debug, Args)]
pub struct KubernetesArgs {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(Debug, Subcommand)]
pub enum Target {
    /// Gateway (Trino's host only), VirtualService and EnvoyFilter for an Istio ingress gateway.
    Istio(IstioArgs),
    /// Gateway, HTTPRoute, EnvoyExtensionPolicy, BackendTrafficPolicy, ClientTrafficPolicy and
    /// ReferenceGrant for Envoy Gateway.
    EnvoyGateway(EnvoyGatewayArgs),
}

/// What every target needs.
#[derive(Debug, Args)]
pub struct Common {
    /// The router config (YAML); its `listen` port is the router Service's (TRINO_ROUTER_LISTEN is not
    /// read: what is generated depends on the file alone).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The host name Trino clients connect to (a host of its own: never `*`).
    #[arg(long, value_name = "NAME")]
    pub host: String,
    /// The router's Service, as NAME.NAMESPACE (its port is the config's `listen` port).
    #[arg(long, value_name = "NAME.NAMESPACE", default_value = "trino-router.trino-router")]
    pub router_service: String,
    /// The Kubernetes cluster's DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
}

#[derive(Debug, Args)]
pub struct IstioArgs {
    #[command(flatten)]
    pub common: Common,
    /// The namespace of the Gateway and VirtualService.
    #[arg(long, value_name = "NAMESPACE", default_value = "trino-router")]
    pub namespace: String,
    /// The ingress gateway's namespace (where the EnvoyFilter must live).
    #[arg(long, value_name = "NAMESPACE", default_value = "istio-system")]
    pub ingress_namespace: String,
    /// The ingress gateway pods' label, KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE", default_value = "istio=ingressgateway")]
    pub ingress_selector: String,
    /// The Gateway server's port: the ingress gateway Service's port clients use.
    #[arg(long, value_name = "PORT", default_value_t = 80)]
    pub port: u16,
    /// The port the ingress gateway's Envoy listens on for it (the Service's targetPort).
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub target_port: u16,
}

#[derive(Debug, Args)]
pub struct EnvoyGatewayArgs {
    #[command(flatten)]
    pub common: Common,
    /// The namespace of the Gateway, HTTPRoute and policies [default: the coordinators' namespace].
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The GatewayClass Envoy Gateway serves.
    #[arg(long, value_name = "NAME", default_value = "eg")]
    pub gateway_class: String,
    /// The Gateway listener's port.
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub port: u16,
}

/// The objects as YAML documents, after a header that says how to regenerate them.
pub fn render(args: &KubernetesArgs) -> Result<String, String> {
    let (command, common) = match &args.target {
        Target::Istio(a) => ("istio", &a.common),
        Target::EnvoyGateway(a) => ("envoy-gateway", &a.common),
    };
    let config =
        Config::load(&common.config, &Overrides::from_process_env(None)).map_err(|e| e.to_string())?;
    let objects = match &args.target {
        Target::Istio(a) => istio(&config, a)?,
        Target::EnvoyGateway(a) => envoy_gateway(&config, a)?,
    };
    let mut out = format!(
        "# Generated by `trino-router kubernetes {command}` from {} for host {}: {} object(s).\n\
         # Do not edit: change the router config or the flags and run scripts/generate-deploy\n\
         # (tests/e2e/test_deploy.py fails when this file differs from what the router generates).\n",
        common.config.display(),
        common.host,
        objects.len()
    );
    for object in &objects {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(object).expect("a JSON value always serializes"));
    }
    Ok(out)
}

/// A coordinator Service, from a cluster's URL `http(s)://NAME.NAMESPACE.svc[.DOMAIN][:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorService {
    pub name: String,
    pub namespace: String,
    /// `NAME.NAMESPACE.svc.DOMAIN`
    pub fqdn: String,
    pub port: u16,
}

pub fn coordinator_service(cluster: &Cluster, domain: &str) -> Result<CoordinatorService, String> {
    let host = cluster.url.host.trim_end_matches('.');
    let labels: Vec<&str> = host.split('.').collect();
    let full_domain = format!("svc.{domain}");
    let fits = labels.len() >= 3
        && labels[2] == "svc"
        && (labels.len() == 3 || labels[2..].join(".") == full_domain);
    if !fits {
        return Err(format!(
            "cluster {}: url host {:?} is not a Kubernetes Service (write http://NAME.NAMESPACE.{full_domain}:PORT)",
            cluster.name, cluster.url.host
        ));
    }
    Ok(CoordinatorService {
        name: labels[0].to_owned(),
        namespace: labels[1].to_owned(),
        fqdn: format!("{}.{}.{full_domain}", labels[0], labels[1]),
        port: cluster.url.port,
    })
}

fn router_service(common: &Common, config: &Config) -> Result<(String, String, u16), String> {
    match common.router_service.split_once('.') {
        Some((name, namespace)) if !name.is_empty() && !namespace.is_empty() && !namespace.contains('.') => {
            Ok((name.to_owned(), namespace.to_owned(), config.listen.port()))
        }
        _ => Err(format!("--router-service {:?}: expected NAME.NAMESPACE", common.router_service)),
    }
}

/// What envoy-config writes for a Trino listener with static routes: the source of every fragment here.
struct EnvoyConfigRoutes {
    /// The new-statement route's `typed_per_filter_config` (decide with the SQL body, learn on).
    new_statement_filters: Value,
    /// A through-the-router route's `typed_per_filter_config` (decide on).
    decide_filters: Value,
    new_statement_timeout: String,
    new_statement_retry: Value,
    follow_up_retry: Value,
    /// The virtual host's `response_headers_to_add` (the transaction-id rewrite).
    response_headers_to_add: Value,
}

impl EnvoyConfigRoutes {
    fn of(config: &Config) -> Result<Self, String> {
        let hcm = http_connection_manager(config, RouteSource::Static);
        let vhost = &hcm["route_config"]["virtual_hosts"][0];
        let route = |name: &str| {
            vhost["routes"]
                .as_array()
                .and_then(|routes| routes.iter().find(|r| r["name"] == name))
                .cloned()
                .ok_or_else(|| format!("envoy-config wrote no route {name:?}"))
        };
        let new_statement = route("new-statement")?;
        let through_router = route("trino")?;
        Ok(EnvoyConfigRoutes {
            new_statement_filters: new_statement["typed_per_filter_config"].clone(),
            decide_filters: through_router["typed_per_filter_config"].clone(),
            new_statement_timeout: new_statement["route"]["timeout"].as_str().unwrap_or("0s").to_owned(),
            new_statement_retry: new_statement["route"]["retry_policy"].clone(),
            follow_up_retry: vhost["retry_policy"].clone(),
            response_headers_to_add: vhost["response_headers_to_add"].clone(),
        })
    }
}

/// A new statement, however spelled (`/v1/statement/`, `;x=1`, ...): envoy-config's `new-statement`
/// route's expression. Under a URL prefix (`Some`): still decided by the router (a client must not pick
/// its cluster by writing a URL), envoy-config's `prefixed-new-statement` expression.
fn new_statement_regex(prefix: Option<&str>) -> String {
    crate::envoy::statement_route::new_statement_regex(prefix)
}

/// One of the router's filters as the ingress gateway runs it: envoy-config's own, dialling Istio's
/// cluster for the router Service (and its host name as the authority), and disabled.
fn istio_filter(mut filter: Value, router_cluster: &str, router_host: &str) -> Value {
    filter["typed_config"]["grpc_service"]["envoy_grpc"] =
        json!({ "cluster_name": router_cluster, "authority": router_host });
    filter["disabled"] = json!(true);
    filter
}

/// Istio: Gateway, VirtualService, EnvoyFilter.
pub fn istio(config: &Config, args: &IstioArgs) -> Result<Vec<Value>, String> {
    let common = &args.common;
    let (router_name, router_namespace, router_port) = router_service(common, config)?;
    let router_host = format!("{router_name}.{router_namespace}.svc.{}", common.cluster_domain);
    let router = IstioRouter { cluster: format!("outbound|{router_port}||{router_host}"), host: router_host };
    let (selector_key, selector_value) = args
        .ingress_selector
        .split_once('=')
        .ok_or_else(|| format!("--ingress-selector {:?}: expected KEY=VALUE", args.ingress_selector))?;
    let envoy = EnvoyConfigRoutes::of(config)?;
    let services = istio_services(config, &common.cluster_domain)?;
    let routes = istio_routes(config, &services, &envoy);
    let gateway = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": { "name": "trino", "namespace": args.namespace },
        "spec": {
            "selector": { selector_key: selector_value },
            "servers": [{
                "port": { "number": args.port, "name": "http-trino", "protocol": "HTTP" },
                "hosts": [common.host],
            }],
        },
    });
    let virtual_service = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": { "name": "trino", "namespace": args.namespace },
        "spec": { "hosts": [common.host], "gateways": ["trino"], "http": routes.http },
    });

    let envoy_filter = json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": { "name": "trino-router", "namespace": args.ingress_namespace },
        "spec": {
            "workloadSelector": { "labels": { selector_key: selector_value } },
            "configPatches": istio_patches(args, &envoy, &routes, &router),
        },
    });
    Ok(vec![gateway, virtual_service, envoy_filter])
}

/// How the ingress gateway reaches the router Service: Istio's cluster name and the host name.
struct IstioRouter {
    cluster: String,
    host: String,
}

/// The coordinator Services, each checked to be what Istio routes to by the name the router writes.
fn istio_services(config: &Config, domain: &str) -> Result<Vec<CoordinatorService>, String> {
    let mut services = Vec::new();
    for cluster in &config.clusters {
        let service = coordinator_service(cluster, domain)?;
        let istio_name = format!("outbound|{}||{}", service.port, service.fqdn);
        if *cluster.envoy_cluster != istio_name {
            return Err(format!(
                "cluster {}: behind Istio the routing header must name Istio's cluster (so that the \
                 VirtualService matches it and transaction ids name it): set envoy_cluster: '{istio_name}'",
                cluster.name
            ));
        }
        if cluster.url.tls {
            return Err(format!(
                "cluster {}: https:// coordinators behind Istio: let Istio originate TLS (a DestinationRule) \
                 and write the url as http://",
                cluster.name
            ));
        }
        services.push(service);
    }

    Ok(services)
}

/// The VirtualService's routes, in Envoy's match order, and the names of those the EnvoyFilter patches.
struct IstioRoutes {
    http: Vec<Value>,
    new_statement: Vec<String>,
    url_placed: Vec<String>,
}

fn istio_routes(config: &Config, services: &[CoordinatorService], envoy: &EnvoyConfigRoutes) -> IstioRoutes {
    let header = &config.routing_header;
    let destination = |service: &CoordinatorService| json!([{ "destination": { "host": service.fqdn, "port": { "number": service.port } } }]);
    let retries =
        |policy: &Value| json!({ "attempts": policy["num_retries"], "retryOn": policy["retry_on"] });
    let new_statement_matches = |extra: &Value| -> Value {
        let mut m = json!({ "uri": { "regex": new_statement_regex(None) }, "method": { "exact": "POST" } });
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        json!([m])
    };

    // Routes, in Envoy's match order.
    let mut http = Vec::new();
    let mut new_statement_routes = Vec::new();
    if let Some(prefix) = &config.url_prefix {
        // A new statement under the prefix, first whatever headers the client sent: the router gets its
        // SQL, decides it, and sends it on the canonical path (then the routes below match it).
        http.push(json!({
            "name": "prefixed-new-statement",
            "match": [{ "uri": { "regex": new_statement_regex(Some(prefix)) }, "method": { "exact": "POST" } }],
            "directResponse": { "status": 503 },
        }));
        new_statement_routes.push("prefixed-new-statement".to_owned());
    }
    // After decide: the cluster it chose (its header value).
    for (cluster, service) in config.clusters.iter().zip(services) {
        let by_header = json!({ "headers": { header.as_str(): { "exact": &*cluster.envoy_cluster } } });
        let name = format!("{}-new-statement", cluster.name);
        http.push(json!({
            "name": name,
            "match": new_statement_matches(&by_header),
            "route": destination(service),
            "timeout": envoy.new_statement_timeout,
            "retries": retries(&envoy.new_statement_retry),
        }));
        new_statement_routes.push(name);
        http.push(json!({
            "name": &*cluster.name,
            "match": [by_header],
            "route": destination(service),
            "timeout": "0s",
            "retries": retries(&envoy.follow_up_retry),
        }));
    }
    // URL-carried placement: Istio routes every follow-up itself, prefix stripped, the router not asked.
    let mut url_placed_routes = Vec::new();
    if config.url_prefix.is_some() {
        for (index, (cluster, service)) in config.clusters.iter().zip(services).enumerate() {
            let cluster_prefix = config.cluster_prefix(index).unwrap_or_default();
            let name = format!("url-placed-{}", cluster.name);
            http.push(json!({
                "name": name,
                "match": [{ "uri": { "prefix": format!("{cluster_prefix}/") } }],
                "rewrite": { "uri": "/" },
                "headers": { "request": { "set": { "x-forwarded-prefix": cluster_prefix } } },
                "route": destination(service),
                "timeout": "0s",
                "retries": retries(&envoy.follow_up_retry),
            }));
            url_placed_routes.push(name);
        }
    }
    // Before decide: where a request lands first. Never forwarded: decide routes it, or answers itself.
    http.push(json!({
        "name": "trino-new-statement",
        "match": new_statement_matches(&json!({})),
        "directResponse": { "status": 503 },
    }));
    new_statement_routes.push("trino-new-statement".to_owned());
    http.push(json!({ "name": "trino-undecided", "directResponse": { "status": 503 } }));

    IstioRoutes { http, new_statement: new_statement_routes, url_placed: url_placed_routes }
}

/// The EnvoyFilter's patches: the router's filters (disabled) before the router filter, the listener's
/// buffer, and Trino's virtual host and routes turning them on (and off again for URL-placed routes).
fn istio_patches(
    args: &IstioArgs,
    envoy: &EnvoyConfigRoutes,
    routes: &IstioRoutes,
    router: &IstioRouter,
) -> Vec<Value> {
    let vhost_name = format!("{}:{}", args.common.host, args.port);
    let listener = json!({
        "context": "GATEWAY",
        "listener": {
            "portNumber": args.target_port,
            "filterChain": { "filter": {
                "name": "envoy.filters.network.http_connection_manager",
                "subFilter": { "name": "envoy.filters.http.router" },
            } },
        },
    });
    let vhost_match = |route: Option<&str>| {
        let mut vhost = json!({ "name": vhost_name });
        if let Some(route) = route {
            vhost["route"] = json!({ "name": route });
        }
        json!({ "context": "GATEWAY", "routeConfiguration": { "portNumber": args.port, "vhost": vhost } })
    };
    let mut patches = vec![
        json!({ "applyTo": "HTTP_FILTER", "match": listener, "patch": { "operation": "INSERT_BEFORE",
            "value": istio_filter(decide_filter(), &router.cluster, &router.host) } }),
        json!({ "applyTo": "HTTP_FILTER", "match": listener, "patch": { "operation": "INSERT_BEFORE",
            "value": istio_filter(learn_filter(), &router.cluster, &router.host) } }),
        // Room for a whole statement's SQL, as envoy-config's listener has. It is the listener's (every host
        // on the port shares it): a per-route `request_body_buffer_limit` above the listener's limit left
        // buffered statements hanging in Envoy 1.40 now and then (tests/e2e/test_deploy.py showed it).
        json!({ "applyTo": "LISTENER", "match": { "context": "GATEWAY", "listener": { "portNumber": args.target_port } },
            "patch": { "operation": "MERGE", "value": { "per_connection_buffer_limit_bytes": REQUEST_BUFFER_LIMIT_BYTES } } }),
        // Trino's host only: decide on for every request (it always overwrites a client's routing header),
        // and the transaction-id rewrite.
        json!({ "applyTo": "VIRTUAL_HOST", "match": vhost_match(None), "patch": { "operation": "MERGE", "value": {
            "typed_per_filter_config": envoy.decide_filters,
            "response_headers_to_add": envoy.response_headers_to_add,
        } } }),
    ];
    for route in &routes.new_statement {
        patches.push(json!({ "applyTo": "HTTP_ROUTE", "match": vhost_match(Some(route)), "patch": {
            "operation": "MERGE", "value": { "typed_per_filter_config": envoy.new_statement_filters } } }));
    }
    for route in &routes.url_placed {
        patches.push(json!({ "applyTo": "HTTP_ROUTE", "match": vhost_match(Some(route)), "patch": {
            "operation": "MERGE", "value": { "typed_per_filter_config": {
                DECIDE_FILTER: { "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true },
            } } } }));
    }
    patches
}

/// `base` with the fields of `more` added.
fn merged(mut base: Value, more: Value) -> Value {
    if let (Some(base), Value::Object(more)) = (base.as_object_mut(), more) {
        base.extend(more);
    }
    base
}

/// A duration as Envoy Gateway writes them (`500ms`, `10s`).
fn eg_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// Envoy's `0.5s` (as envoy-config writes durations) as a [`Duration`].
fn envoy_duration(text: &str) -> Result<Duration, String> {
    text.strip_suffix('s')
        .and_then(|secs| secs.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("envoy-config wrote an unexpected duration {text:?}"))
}

/// An envoy-config retry policy as a BackendTrafficPolicy `retry`.
fn eg_retry(policy: &Value) -> Result<Value, String> {
    let backoff = &policy["retry_back_off"];
    Ok(json!({
        "numRetries": policy["num_retries"],
        "retryOn": { "triggers": policy["retry_on"].as_str().unwrap_or_default().split(',').collect::<Vec<_>>() },
        "perRetry": { "backOff": {
            "baseInterval": eg_duration(envoy_duration(backoff["base_interval"].as_str().unwrap_or_default())?),
            "maxInterval": eg_duration(envoy_duration(backoff["max_interval"].as_str().unwrap_or_default())?),
        } },
    }))
}

/// Gateway API's limit on the rules of one HTTPRoute (and on a policy's targetRefs).
const GATEWAY_API_MAX_RULES: usize = 16;

/// Envoy Gateway: Gateway, HTTPRoute, EnvoyExtensionPolicy ×2, BackendTrafficPolicy ×2, ClientTrafficPolicy,
/// ReferenceGrants.
pub fn envoy_gateway(config: &Config, args: &EnvoyGatewayArgs) -> Result<Vec<Value>, String> {
    let common = &args.common;
    let (router_name, router_namespace, router_port) = router_service(common, config)?;
    let services: Vec<CoordinatorService> = config
        .clusters
        .iter()
        .map(|c| coordinator_service(c, &common.cluster_domain))
        .collect::<Result<_, _>>()?;
    if config.clusters.iter().any(|c| c.url.tls) {
        return Err("https:// coordinators: add a BackendTLSPolicy per Service yourself; this generator \
                    writes plaintext backends only"
            .to_owned());
    }
    let namespace = eg_namespace(args, &services)?;
    let envoy = EnvoyConfigRoutes::of(config)?;
    let rules = eg_rules(config, &services, &namespace)?;
    let mut router_backend = json!({ "name": router_name, "port": router_port });
    if router_namespace != namespace {
        router_backend["namespace"] = json!(router_namespace);
    }
    let metadata = |name: &str| json!({ "name": name, "namespace": namespace });
    let mut objects = vec![
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": metadata("trino"),
            "spec": {
                "gatewayClassName": args.gateway_class,
                "listeners": [{ "name": "trino", "protocol": "HTTP", "port": args.port, "hostname": common.host }],
            },
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": metadata("trino"),
            "spec": { "parentRefs": [{ "name": "trino" }], "hostnames": [common.host], "rules": rules.rules },
        }),
    ];
    objects.extend(eg_policies(&envoy, &rules, &router_backend, &namespace)?);
    objects.extend(eg_reference_grants(&namespace, (&router_name, &router_namespace), &services));
    Ok(objects)
}

/// Where the Gateway, route and policies live: `--namespace`, else the coordinators' (when they share one).
fn eg_namespace(args: &EnvoyGatewayArgs, services: &[CoordinatorService]) -> Result<String, String> {
    Ok(match &args.namespace {
        Some(namespace) => namespace.clone(),
        None => {
            let first = &services[0].namespace;
            if services.iter().any(|s| &s.namespace != first) {
                return Err("the coordinators are in several namespaces: pass --namespace".to_owned());
            }
            first.clone()
        }
    })
}

/// The HTTPRoute's rules, and which policies each gets (by rule name).
struct EgRules {
    rules: Vec<Value>,
    /// Decide, request headers only.
    decide: Vec<String>,
    /// Decide with the SQL body, then learn.
    new_statement: Vec<String>,
    /// Timeouts and retries of follow-ups.
    follow_up: Vec<String>,
    /// Timeouts and retries of new queries.
    new_query: Vec<String>,
}

fn eg_rules(config: &Config, services: &[CoordinatorService], namespace: &str) -> Result<EgRules, String> {
    let header = &config.routing_header;
    let backend = |service: &CoordinatorService| {
        let mut backend = json!({ "name": service.name, "port": service.port });
        if service.namespace != namespace {
            backend["namespace"] = json!(service.namespace);
        }
        json!([backend])
    };
    let new_statement_matches = |headers: &Value| -> Value {
        let mut m = json!({ "path": { "type": "RegularExpression", "value": new_statement_regex(None) }, "method": "POST" });
        if !headers.is_null() {
            m["headers"] = headers.clone();
        }
        json!([m])
    };

    // Rules, and which policies each gets.
    let mut rules = Vec::new();
    let (mut decide_rules, mut new_statement_rules, mut follow_up_rules, mut new_query_rules) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (cluster, service) in config.clusters.iter().zip(services) {
        let headers = json!([{ "name": header, "value": &*cluster.envoy_cluster }]);
        let name = format!("{}-new-statement", cluster.name);
        rules.push(json!({ "name": name, "matches": new_statement_matches(&headers), "backendRefs": backend(service) }));
        new_statement_rules.push(name.clone());
        new_query_rules.push(name);
        rules.push(json!({ "name": &*cluster.name, "matches": [{ "headers": headers }], "backendRefs": backend(service) }));
        decide_rules.push(cluster.name.to_string());
        follow_up_rules.push(cluster.name.to_string());
    }
    if let Some(prefix) = &config.url_prefix {
        // No backend, like `new-statement`: the router gets its SQL, decides it and sends it on the
        // canonical path. Envoy Gateway orders regular expressions longest first: this one comes before
        // the plain ones, whatever headers the client sent.
        rules.push(json!({
            "name": "prefixed-new-statement",
            "matches": [{ "path": { "type": "RegularExpression", "value": new_statement_regex(Some(prefix)) },
                          "method": "POST" }],
        }));
        new_statement_rules.push("prefixed-new-statement".to_owned());
        for (index, (cluster, service)) in config.clusters.iter().zip(services).enumerate() {
            let cluster_prefix = config.cluster_prefix(index).unwrap_or_default();
            let name = format!("url-placed-{}", cluster.name);
            rules.push(json!({
                "name": name,
                "matches": [{ "path": { "type": "PathPrefix", "value": cluster_prefix } }],
                "filters": [
                    { "type": "URLRewrite", "urlRewrite": { "path": { "type": "ReplacePrefixMatch", "replacePrefixMatch": "/" } } },
                    { "type": "RequestHeaderModifier", "requestHeaderModifier": {
                        "set": [{ "name": "x-forwarded-prefix", "value": cluster_prefix }] } },
                ],
                "backendRefs": backend(service),
            }));
            // No extension policy: Envoy Gateway routes it, the router is not asked.
            follow_up_rules.push(name);
        }
    }
    // Before decide: no backend, never forwarded (decide routes the request, or answers itself).
    rules.push(json!({ "name": "new-statement", "matches": new_statement_matches(&Value::Null) }));
    new_statement_rules.push("new-statement".to_owned());
    rules.push(
        json!({ "name": "undecided", "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }] }),
    );
    decide_rules.push("undecided".to_owned());
    if rules.len() > GATEWAY_API_MAX_RULES {
        return Err(format!(
            "{} clusters need {} HTTPRoute rules, and Gateway API allows {GATEWAY_API_MAX_RULES} per route: \
             this generator writes one HTTPRoute (fewer clusters, or no url_prefix, which takes one rule per cluster)",
            config.clusters.len(),
            rules.len()
        ));
    }

    Ok(EgRules {
        rules,
        decide: decide_rules,
        new_statement: new_statement_rules,
        follow_up: follow_up_rules,
        new_query: new_query_rules,
    })
}

/// The extension, backend traffic and client traffic policies: envoy-config's filters, timeouts, retries
/// and buffer, on the rules that need each.
fn eg_policies(
    envoy: &EnvoyConfigRoutes,
    rules: &EgRules,
    router_backend: &Value,
    namespace: &str,
) -> Result<Vec<Value>, String> {
    let targets = |rules: &[String]| -> Value {
        rules
            .iter()
            .map(|rule| json!({ "group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "trino", "sectionName": rule }))
            .collect()
    };
    let message_timeout = eg_duration(envoy_duration(MESSAGE_TIMEOUT)?);
    let decide = |body: Option<&str>| {
        let mut request = json!({});
        if let Some(body) = body {
            request["body"] = json!(body);
        }
        json!({
            "backendRefs": [router_backend],
            "processingMode": { "request": request, "allowModeOverride": true },
            "messageTimeout": message_timeout,
            // No decision, no request: a 503 tells clients that nothing was submitted, and they retry.
            "failOpen": false,
            "statusOnError": 503,
            "metadata": { "writableNamespaces": [NOTE_NAMESPACE] },
        })
    };
    let learn = json!({
        "backendRefs": [router_backend],
        "processingMode": { "response": {}, "allowModeOverride": true },
        "messageTimeout": message_timeout,
        // The query exists once the coordinator answered: the client must get that answer.
        "failOpen": true,
        "metadata": { "accessibleNamespaces": [NOTE_NAMESPACE] },
    });
    let metadata = |name: &str| json!({ "name": name, "namespace": namespace });
    let new_query_timeout = eg_duration(envoy_duration(&envoy.new_statement_timeout)?);
    // A rule's policy: its cluster's connections as envoy-config's coordinator clusters have them.
    let traffic = |timeout: &str, retry: &Value| -> Result<Value, String> {
        Ok(json!({
            "timeout": { "http": { "requestTimeout": timeout }, "tcp": { "connectTimeout": "2s" } },
            "retry": eg_retry(retry)?,
            "circuitBreaker": { "maxParallelRetries": 1024 },
        }))
    };
    Ok(vec![
        json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyExtensionPolicy",
            "metadata": metadata("trino-router-decide"),
            "spec": { "targetRefs": targets(&rules.decide), "extProc": [decide(None)] },
        }),
        json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyExtensionPolicy",
            "metadata": metadata("trino-router-new-statements"),
            "spec": { "targetRefs": targets(&rules.new_statement), "extProc": [decide(Some("BufferedPartial")), learn] },
        }),
        json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "BackendTrafficPolicy",
            "metadata": metadata("trino-new-queries"),
            "spec": merged(json!({ "targetRefs": targets(&rules.new_query) }), traffic(&new_query_timeout, &envoy.new_statement_retry)?),
        }),
        json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "BackendTrafficPolicy",
            "metadata": metadata("trino-follow-ups"),
            "spec": merged(json!({ "targetRefs": targets(&rules.follow_up) }), traffic("0s", &envoy.follow_up_retry)?),
        }),
        json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "ClientTrafficPolicy",
            "metadata": metadata("trino"),
            "spec": {
                "targetRefs": [{ "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "trino" }],
                // A new statement's SQL is buffered whole for the router up to this size.
                "connection": { "bufferLimit": REQUEST_BUFFER_LIMIT_BYTES },
            },
        }),
    ])
}

/// References across namespaces: the policies to the router Service, the route to coordinators.
fn eg_reference_grants(
    namespace: &str,
    (router_name, router_namespace): (&str, &str),
    services: &[CoordinatorService],
) -> Vec<Value> {
    let mut objects = Vec::new();
    let mut grants: Vec<(String, &str, Vec<String>)> = Vec::new();
    if router_namespace != namespace {
        grants.push((router_namespace.to_owned(), "EnvoyExtensionPolicy", vec![router_name.to_owned()]));
    }
    for service in services.iter().filter(|s| s.namespace != namespace) {
        match grants.iter_mut().find(|(ns, kind, _)| *ns == service.namespace && *kind == "HTTPRoute") {
            Some((_, _, names)) => names.push(service.name.clone()),
            None => grants.push((service.namespace.clone(), "HTTPRoute", vec![service.name.clone()])),
        }
    }
    for (grant_namespace, kind, names) in grants {
        let group = if kind == "HTTPRoute" { "gateway.networking.k8s.io" } else { "gateway.envoyproxy.io" };
        objects.push(json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": { "name": format!("trino-{}-from-{namespace}", kind.to_lowercase()), "namespace": grant_namespace },
            "spec": {
                "from": [{ "group": group, "kind": kind, "namespace": namespace }],
                "to": names.iter().map(|name| json!({ "group": "", "kind": "Service", "name": name })).collect::<Vec<_>>(),
            },
        }));
    }
    objects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::protocol::LEARN_FILTER;
    use std::path::Path;

    fn config(extra: &str, clusters: &[(&str, &str, Option<&str>)]) -> Config {
        let mut text = format!("listen: 0.0.0.0:50051\ndefault_group: adhoc\n{extra}clusters:\n");
        for (name, url, envoy_cluster) in clusters {
            text.push_str(&format!("  - {{name: {name}, url: '{url}', group: adhoc"));
            if let Some(envoy_cluster) = envoy_cluster {
                text.push_str(&format!(", envoy_cluster: '{envoy_cluster}'"));
            }
            text.push_str("}\n");
        }
        Config::from_yaml(Path::new("t"), &text, &Overrides::default()).unwrap()
    }

    fn common() -> Common {
        Common {
            config: "t".into(),
            host: "trino.example.com".into(),
            router_service: "trino-router.trino-router".into(),
            cluster_domain: "cluster.local".into(),
        }
    }

    fn istio_args() -> IstioArgs {
        IstioArgs {
            common: common(),
            namespace: "trino-router".into(),
            ingress_namespace: "istio-system".into(),
            ingress_selector: "istio=ingressgateway".into(),
            port: 80,
            target_port: 8080,
        }
    }

    fn eg_args() -> EnvoyGatewayArgs {
        EnvoyGatewayArgs { common: common(), namespace: None, gateway_class: "eg".into(), port: 8080 }
    }

    const A: &str = "http://trino-a.trino.svc.cluster.local:8080";
    const A_ISTIO: &str = "outbound|8080||trino-a.trino.svc.cluster.local";

    #[test]
    fn coordinator_urls_name_services() {
        type Service<'a> = (&'a str, &'a str, &'a str);
        let table: &[(&str, Result<Service, &str>)] = &[
            (A, Ok(("trino-a", "trino", "trino-a.trino.svc.cluster.local"))),
            ("http://trino-a.trino.svc:8080", Ok(("trino-a", "trino", "trino-a.trino.svc.cluster.local"))),
            (
                "http://trino-a.trino.svc.cluster.local.:8080",
                Ok(("trino-a", "trino", "trino-a.trino.svc.cluster.local")),
            ),
            ("http://10.0.0.1:8080", Err("not a Kubernetes Service")),
            ("http://trino.example.com:8080", Err("not a Kubernetes Service")),
            ("http://trino-a.trino.svc.other.domain:8080", Err("not a Kubernetes Service")),
        ];
        for (url, want) in table {
            let config = config("", &[("c", url, None)]);
            match (coordinator_service(&config.clusters[0], "cluster.local"), want) {
                (Ok(got), Ok((name, namespace, fqdn))) => {
                    assert_eq!(
                        (&*got.name, &*got.namespace, &*got.fqdn, got.port),
                        (*name, *namespace, *fqdn, 8080)
                    )
                }
                (Err(got), Err(want)) => assert!(got.contains(want), "{url}: {got}"),
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn istio_wants_istios_cluster_names_and_plaintext() {
        let wrong = config("", &[("trino-a", A, None)]);
        let err = istio(&wrong, &istio_args()).unwrap_err();
        assert!(err.contains(&format!("set envoy_cluster: '{A_ISTIO}'")), "{err}");
        let tls = config(
            "",
            &[(
                "trino-a",
                "https://trino-a.trino.svc.cluster.local:8443",
                Some("outbound|8443||trino-a.trino.svc.cluster.local"),
            )],
        );
        assert!(istio(&tls, &istio_args()).unwrap_err().contains("DestinationRule"));
    }

    #[test]
    fn istio_filters_are_off_but_on_trinos_host() {
        let config = config("url_prefix: /_trino\n", &[("trino-a", A, Some(A_ISTIO))]);
        let objects = istio(&config, &istio_args()).unwrap();
        let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Gateway", "VirtualService", "EnvoyFilter"]);
        assert_eq!(objects[0]["spec"]["servers"][0]["hosts"], json!(["trino.example.com"]), "never *");
        let patches = objects[2]["spec"]["configPatches"].as_array().unwrap();
        let filters: Vec<&Value> =
            patches.iter().filter(|p| p["applyTo"] == "HTTP_FILTER").map(|p| &p["patch"]["value"]).collect();
        assert_eq!(filters.len(), 2);
        for filter in &filters {
            assert_eq!(filter["disabled"], true, "inert for every other host");
            assert_eq!(
                filter["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"],
                "outbound|50051||trino-router.trino-router.svc.cluster.local"
            );
        }
        let vhost = patches.iter().find(|p| p["applyTo"] == "VIRTUAL_HOST").unwrap();
        assert_eq!(vhost["match"]["routeConfiguration"]["vhost"]["name"], "trino.example.com:80");
        assert!(vhost["patch"]["value"]["typed_per_filter_config"][DECIDE_FILTER].is_object());
        let listener = patches.iter().find(|p| p["applyTo"] == "LISTENER").unwrap();
        assert_eq!(
            listener["patch"]["value"]["per_connection_buffer_limit_bytes"],
            REQUEST_BUFFER_LIMIT_BYTES
        );
        assert_eq!(
            listener["match"]["listener"]["portNumber"], 8080,
            "the gateway's own port, not the Service's"
        );
        let routes: Vec<&str> = objects[1]["spec"]["http"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            routes,
            [
                "prefixed-new-statement",
                "trino-a-new-statement",
                "trino-a",
                "url-placed-trino-a",
                "trino-new-statement",
                "trino-undecided"
            ],
            "a prefixed new statement gets its SQL read whatever routing header the client sent"
        );
        let prefixed = patches
            .iter()
            .find(|p| p["match"]["routeConfiguration"]["vhost"]["route"]["name"] == "prefixed-new-statement")
            .unwrap();
        assert!(
            prefixed["patch"]["value"]["typed_per_filter_config"][LEARN_FILTER].is_object(),
            "SQL and learn"
        );
        let matches = &objects[1]["spec"]["http"][1]["match"];
        assert_eq!(matches[0]["uri"]["regex"], crate::envoy::bootstrap::new_statement_regex(None));
        let off = patches
            .iter()
            .find(|p| p["match"]["routeConfiguration"]["vhost"]["route"]["name"] == "url-placed-trino-a")
            .unwrap();
        assert_eq!(
            off["patch"]["value"]["typed_per_filter_config"][DECIDE_FILTER]["disabled"], true,
            "follow-ups bypass the router"
        );
    }

    #[test]
    fn envoy_gateway_has_a_rule_per_cluster_and_policies_on_the_right_rules() {
        let config = config(
            "url_prefix: /_trino\n",
            &[("trino-a", A, None), ("trino-etl", "http://trino-etl.etl.svc.cluster.local:8080", None)],
        );
        assert!(envoy_gateway(&config, &eg_args()).unwrap_err().contains("pass --namespace"));
        let objects =
            envoy_gateway(&config, &EnvoyGatewayArgs { namespace: Some("trino".into()), ..eg_args() })
                .unwrap();
        let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Gateway",
                "HTTPRoute",
                "EnvoyExtensionPolicy",
                "EnvoyExtensionPolicy",
                "BackendTrafficPolicy",
                "BackendTrafficPolicy",
                "ClientTrafficPolicy",
                "ReferenceGrant",
                "ReferenceGrant"
            ]
        );
        let rules = objects[1]["spec"]["rules"].as_array().unwrap();
        let etl = rules.iter().find(|r| r["name"] == "trino-etl").unwrap();
        assert_eq!(etl["backendRefs"][0], json!({ "name": "trino-etl", "namespace": "etl", "port": 8080 }));
        let sections = |object: &Value| -> Vec<String> {
            object["spec"]["targetRefs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["sectionName"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(sections(&objects[2]), ["trino-a", "trino-etl", "undecided"]);
        assert_eq!(
            sections(&objects[3]),
            ["trino-a-new-statement", "trino-etl-new-statement", "prefixed-new-statement", "new-statement"]
        );
        let new_statement = rules.iter().find(|r| r["name"] == "new-statement").unwrap();
        assert_eq!(new_statement["matches"][0]["path"]["type"], "RegularExpression");
        assert_eq!(
            new_statement["matches"][0]["path"]["value"],
            crate::envoy::bootstrap::new_statement_regex(None)
        );
        assert_eq!(objects[2]["spec"]["extProc"][0]["statusOnError"], 503);
        assert_eq!(objects[2]["spec"]["extProc"][0]["messageTimeout"], "500ms");
        assert_eq!(objects[4]["spec"]["timeout"]["http"]["requestTimeout"], "10s");
        assert_eq!(
            objects[4]["spec"]["retry"]["retryOn"]["triggers"],
            json!(["connect-failure", "refused-stream", "reset-before-request"])
        );
        assert_eq!(
            objects[5]["spec"]["retry"]["perRetry"]["backOff"],
            json!({ "baseInterval": "200ms", "maxInterval": "800ms" })
        );
        assert_eq!(objects[6]["spec"]["connection"]["bufferLimit"], REQUEST_BUFFER_LIMIT_BYTES);
        assert_eq!(objects[8]["metadata"]["namespace"], "etl", "the route may reach the etl Service");

        let many: Vec<(String, String)> =
            (0..6).map(|i| (format!("c{i}"), format!("http://c{i}.trino.svc:8080"))).collect();
        let many: Vec<(&str, &str, Option<&str>)> =
            many.iter().map(|(n, u)| (n.as_str(), u.as_str(), None)).collect();
        let err = envoy_gateway(&self::config("url_prefix: /_trino\n", &many), &eg_args()).unwrap_err();
        assert!(err.contains("allows 16"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(eg_duration(envoy_duration("0.5s").unwrap()), "500ms");
        assert_eq!(eg_duration(envoy_duration("10s").unwrap()), "10s");
        assert!(envoy_duration("10m").is_err());
    }
}
