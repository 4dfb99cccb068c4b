//! trino-router: the routing decisions for Trino traffic, made for Envoy over ext_proc.
//!
//! Envoy carries every byte; the router answers, per request, which Trino cluster it goes to. The
//! decision itself is pure ([`decision`], over [`target`] and [`query_id`]); [`routing`] holds the live
//! state it needs; [`ext_proc`] speaks Envoy's protocol; [`refusal`] is where refusals become answers;
//! [`envoy_bootstrap`] writes the Envoy configuration that goes with a router config.

pub mod admin;
pub mod admin_client;
pub mod affinity;
pub mod cli;
pub mod cluster_state;
pub mod config;
pub mod coordinator_http;
pub mod decision;
pub mod discovery;
pub mod envoy_bootstrap;
pub mod explain;
pub mod ext_proc;
pub mod health;
pub mod kubernetes_manifests;
pub mod metrics;
pub mod poller;
pub mod query_id;
pub mod refusal;
pub mod reload;
pub mod request_facts;
pub mod route_discovery;
pub mod router_address;
pub mod routing;
pub mod rules;
pub mod server;
pub mod statement;
pub mod status;
pub mod target;
pub mod tls;

/// The router's own gRPC API, compiled from `proto/` by `build.rs`.
pub mod api {
    tonic::include_proto!("trino_router.v1");

    /// The encoded descriptor set of the API, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("trino_router_descriptor");
}
