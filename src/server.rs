//! Start-up and shutdown of the router: binds the gRPC listener (so callers learn the real port before
//! serving, as tests with port 0 need), then serves ext_proc, RDS, the admin API (with reflection) and
//! `grpc.health.v1`, runs the health poller, the route publisher and the config watcher, until told to
//! stop. On stop, RDS streams end at once (Envoy keeps its routes); decisions in progress finish.
//!
//! Readiness: `grpc.health.v1` reports NOT_SERVING until the first poll round has finished, so a
//! readiness probe holds traffic back until the router knows which clusters are up.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_server::RouteDiscoveryServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::admin::AdminService;
use crate::api::admin_server::AdminServer;
use crate::config::{Config, Overrides};
use crate::ext_proc::service::ExtProcService;
use crate::poller::Poller;
use crate::route_discovery::{RouteDiscovery, RouteTable, initial_table, publish};
use crate::routing::Router;

/// Where the config came from, for live reload.
pub struct ConfigSource {
    pub path: PathBuf,
    pub overrides: Overrides,
}

/// A bound, not yet serving, router.
pub struct Server {
    listener: TcpListener,
    router: Arc<Router>,
    source: Option<ConfigSource>,
    /// The first routes served over RDS.
    routes: RouteTable,
}

impl Server {
    /// Binds `config.listen`. With a `source`, the config file is watched and reloaded.
    pub async fn bind(config: Config, source: Option<ConfigSource>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let router = Arc::new(Router::new(config));
        let routes = initial_table(&router).map_err(std::io::Error::other)?;
        Ok(Server { listener, router, source, routes })
    }

    /// The address actually bound (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Serves until `shutdown` completes, then lets open streams finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), tonic::transport::Error> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_not_serving::<ExternalProcessorServer<ExtProcService>>().await;
        health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;

        let mut poller = Poller::new(self.router.clone());
        let background = tokio::spawn(async move {
            poller.round().await;
            health_reporter.set_serving::<ExternalProcessorServer<ExtProcService>>().await;
            health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
            tracing::info!("first health round done: ready");
            poller.run().await;
        });
        let (tables, tables_rx) = tokio::sync::watch::channel(Arc::new(self.routes));
        let publisher = tokio::spawn(publish(self.router.clone(), tables));
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            let _ = stopping.send(true);
        };
        let watcher = self.source.map(|source| {
            tokio::spawn(crate::reload::watch(self.router.clone(), source.path, source.overrides))
        });

        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("the compiled descriptor sets are valid");
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(AdminServer::new(AdminService::new(self.router.clone())))
            .add_service(ExternalProcessorServer::new(ExtProcService::new(self.router.clone())))
            .add_service(RouteDiscoveryServiceServer::new(RouteDiscovery::new(tables_rx, stopping_rx)))
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown)
            .await;
        background.abort();
        publisher.abort();
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        result
    }
}
