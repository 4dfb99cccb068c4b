//! Running the router: start-up and shutdown ([`server`]) and the limits of its ports ([`listener`]),
//! the admin API and its client, the replicas'
//! shared operator state ([`fleet`]), the metrics endpoint and status page, live config reload, offline
//! dry runs ([`explain`]) and the command line.

pub mod admin;
pub mod admin_client;
pub mod cli;
pub mod explain;
pub mod fleet;
pub mod fleet_table;
pub mod kubernetes_manifests;
pub mod listener;
pub mod metrics_endpoint;
pub mod reload;
pub mod server;
pub mod status_page;

/// The router's own gRPC API, compiled from `proto/` by `build.rs`.
pub mod api {
    tonic::include_proto!("trino_router.v1");

    /// The encoded descriptor set of the API, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("trino_router_descriptor");
}
