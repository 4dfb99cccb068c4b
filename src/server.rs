//! Start-up and shutdown of the gRPC server: binds the listener (so callers learn the real port before
//! serving, as tests with port 0 need), then serves ext_proc and `grpc.health.v1` until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::Config;
use crate::ext_proc::service::ExtProcService;
use crate::routing::Router;

/// A bound, not yet serving, router.
pub struct Server {
    listener: TcpListener,
    router: Arc<Router>,
}

impl Server {
    /// Binds `config.listen`.
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Server { listener, router: Arc::new(Router::new(config)) })
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
        health_reporter.set_serving::<ExternalProcessorServer<ExtProcService>>().await;
        let ext_proc = ExternalProcessorServer::new(ExtProcService::new(self.router.clone()));
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health_service)
            .add_service(ext_proc)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown)
            .await
    }
}
