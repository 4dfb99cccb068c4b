//! Start-up and shutdown of the router: binds the gRPC listener (so callers learn the real port before
//! serving, as tests with port 0 need), then serves ext_proc, RDS, the admin API (with reflection) and
//! `grpc.health.v1`, runs the health poller, the route publisher and the config watcher, until told to
//! stop. On stop: NOT_SERVING at once while still serving for [`SHUTDOWN_DRAIN`], then no new
//! connections, RDS streams end (Envoy keeps its routes), open decisions get [`SHUTDOWN_GRACE`] to finish.
//!
//! Readiness: `grpc.health.v1` reports NOT_SERVING until the first poll round has finished and the
//! operator's say is settled (the state file read, the peers heard: [`crate::operate::fleet`]), so a
//! readiness probe holds traffic back until the router knows which clusters are up and which drained.
//!
//! With `listen_tls` the one port speaks TLS (ALPN h2), and with a client CA it refuses every client
//! without a certificate that CA signed (mTLS): Envoy, probes and `trino-router admin` alike. The
//! certificate is read at start; a new one takes a restart (a reload keeps the running one).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_server::RouteDiscoveryServiceServer;
use tokio::net::TcpListener;

use crate::coordinators::checks;
use crate::coordinators::poller::Poller;
use crate::coordinators::query_lookup::QueryLookup;
use crate::domain::config::tls::ListenTls;
use crate::domain::config::{Config, Overrides};
use crate::envoy::ext_proc::service::ExtProcService;
use crate::envoy::route_discovery::{RouteDiscovery, RouteTable, initial_table, publish};
use crate::operate::admin::AdminService;
use crate::operate::api::admin_server::AdminServer;
use crate::operate::fleet::Fleet;
use crate::operate::listener::{
    GRPC_KEEPALIVE, GRPC_KEEPALIVE_TIMEOUT, GRPC_LIMITS, GRPC_MAX_MESSAGE_BYTES,
    GRPC_MAX_STREAMS_PER_CONNECTION, LimitedListener, incoming,
};
use crate::state::router::Router;

/// After a shutdown signal, how long the router keeps serving while reporting NOT_SERVING, so that
/// Envoy's health checks (every second, as envoy-config writes them) send new streams elsewhere.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_millis(1500);

/// Then, how long open streams may take to finish before the router exits anyway. Decisions take
/// milliseconds (a discovery lookup at most `affinity.discovery_timeout`); Envoy's per-message timeout is
/// 0.5 s.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The tonic TLS settings of the gRPC listener.
fn server_tls_config(tls: &ListenTls) -> tonic::transport::ServerTlsConfig {
    let identity = tonic::transport::Identity::from_pem(&*tls.cert.pem, &*tls.key.pem);
    let config = tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        // A client that connects and says nothing must not hold a handshake slot for ever.
        .timeout(std::time::Duration::from_secs(10));
    match &tls.client_ca {
        Some(ca) => config.client_ca_root(tonic::transport::Certificate::from_pem(&*ca.pem)),
        None => config,
    }
}

/// A gRPC server with the ports' limits (see [`crate::operate::listener`]) and, when configured, TLS.
fn grpc_builder(
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let builder = tonic::transport::Server::builder()
        .max_concurrent_streams(GRPC_MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT));
    match tls {
        Some(tls) => builder.tls_config(tls),
        None => Ok(builder),
    }
}

/// Reports the router ready (SERVING) or not, for every service name callers check.
async fn set_health(reporter: &tonic_health::server::HealthReporter, ready: bool) {
    if ready {
        reporter.set_serving::<ExternalProcessorServer<ExtProcService>>().await;
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    } else {
        reporter.set_not_serving::<ExternalProcessorServer<ExtProcService>>().await;
        reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    }
}

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
    /// The metrics endpoint, when configured.
    metrics: Option<TcpListener>,
    /// The admin service's own port, when configured (`admin.listen`).
    admin: Option<TcpListener>,
    /// TLS on the gRPC listener, when configured (`listen_tls`).
    tls: Option<tonic::transport::ServerTlsConfig>,
    /// The peers and the state file.
    fleet: Arc<Fleet>,
}

impl Server {
    /// Binds `config.listen`. With a `source`, the config file is watched and reloaded.
    pub async fn bind(config: Config, source: Option<ConfigSource>) -> std::io::Result<Server> {
        crate::domain::config::tls::install_crypto_provider();
        let tls = config.listen_tls.as_ref().map(server_tls_config);
        if let Some(tls) = &tls {
            // Fails here, before the router says it listens, rather than when it starts serving.
            tonic::transport::Server::builder().tls_config(tls.clone()).map_err(std::io::Error::other)?;
        }
        let listener = TcpListener::bind(config.listen).await?;
        crate::state::metrics::set_replica(&config.fleet.replica);
        let router = Arc::new(Router::new(config));
        let fleet = Fleet::new(router.clone());
        fleet.load_state_file();
        let metrics = match router.snapshot().config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let admin = match router.snapshot().config.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let routes = initial_table(&router).map_err(std::io::Error::other)?;
        Ok(Server { listener, router, source, routes, metrics, admin, tls, fleet })
    }

    /// The address actually bound (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `GET /metrics` is served (the real port), when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the admin service is served on a port of its own (the real port), when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Serves until `shutdown` completes, then stops as [`SHUTDOWN_DRAIN`] and [`SHUTDOWN_GRACE`] say.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), tonic::transport::Error> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        set_health(&health_reporter, false).await;

        let mut poller = Poller::new(self.router.clone());
        let reporter = health_reporter.clone();
        let fleet = self.fleet.clone();
        let background = tokio::spawn(async move {
            tokio::join!(poller.round(), fleet.settle());
            set_health(&reporter, true).await;
            tracing::info!("first health round done, operator state settled: ready");
            tokio::join!(poller.run(), fleet.run());
        });
        let (tables, tables_rx) = tokio::sync::watch::channel(Arc::new(self.routes));
        let publisher = tokio::spawn(publish(self.router.clone(), tables));
        let metrics = self.metrics.map(|listener| {
            tokio::spawn(crate::operate::metrics_endpoint::serve(
                listener,
                self.router.clone(),
                self.fleet.clone(),
            ))
        });
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        let mut stopped = stopping_rx.clone();
        let shutdown = async move {
            shutdown.await;
            // Not ready from now on: Envoy's health checks (and Kubernetes' readiness probe) take this
            // replica out while it still answers, so no new stream is refused.
            background.abort();
            set_health(&health_reporter, false).await;
            tracing::info!(drain = ?SHUTDOWN_DRAIN, "not ready; still serving while callers move away");
            tokio::time::sleep(SHUTDOWN_DRAIN).await;
            tracing::info!(grace = ?SHUTDOWN_GRACE, "no new connections; open streams finish");
            let _ = stopping.send(true);
        };
        let watcher = self.source.map(|source| {
            tokio::spawn(crate::operate::reload::watch(self.router.clone(), source.path, source.overrides))
        });

        // Server reflection over the admin API and grpc.health.v1.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::operate::api::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .expect("the compiled descriptor sets are valid")
        };
        let lookup = Arc::new(QueryLookup::default());
        let checks = self
            .router
            .take_checks()
            .map(|inbox| tokio::spawn(checks::answer(self.router.clone(), lookup.clone(), inbox)));
        let admin = AdminServer::new(AdminService::new(self.router.clone(), self.fleet.clone()));
        let ext_proc = ExternalProcessorServer::new(ExtProcService::new(self.router.clone(), lookup))
            .max_decoding_message_size(GRPC_MAX_MESSAGE_BYTES);
        let mut routes = tonic::service::Routes::new(health_service.clone())
            .add_service(reflection())
            .add_service(ext_proc)
            .add_service(RouteDiscoveryServiceServer::new(RouteDiscovery::new(
                tables_rx,
                stopping_rx.clone(),
            )));
        let admin_port = match self.admin {
            None => {
                routes = routes.add_service(admin);
                None
            }
            Some(listener) => {
                // The admin service (and health, for probes) on a port of its own, with the same TLS.
                let mut stopped = stopping_rx.clone();
                let served =
                    tonic::service::Routes::new(health_service).add_service(reflection()).add_service(admin);
                let incoming = incoming(LimitedListener::new(listener, GRPC_LIMITS, "admin"));
                let serve = grpc_builder(self.tls.clone())?.add_routes(served).serve_with_incoming_shutdown(
                    incoming,
                    async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    },
                );
                Some(tokio::spawn(serve))
            }
        };
        let incoming = incoming(LimitedListener::new(self.listener, GRPC_LIMITS, "grpc"));
        let serve =
            grpc_builder(self.tls)?.add_routes(routes).serve_with_incoming_shutdown(incoming, shutdown);
        let deadline = async {
            let _ = stopped.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let result = tokio::select! {
            result = serve => result,
            () = deadline => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "streams still open after the grace period: stopping anyway");
                Ok(())
            }
        };
        for task in
            [admin_port.map(|t| t.abort_handle()), checks.map(|t| t.abort_handle())].into_iter().flatten()
        {
            task.abort();
        }
        publisher.abort();
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tls::testing::TestPki;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    /// A router on an ephemeral port with `listen_tls` from `pki` (mTLS with `pki`'s CA).
    async fn tls_router(pki: &TestPki) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let served = pki.issue("router", &["127.0.0.1"]);
        let text = format!(
            "listen: 127.0.0.1:0\ndefault_group: a\nclusters: [{{name: a, url: 'http://127.0.0.1:9', group: a}}]\n\
             admin: {{token: admin-token-for-tests-0001}}\n\
             listen_tls: {{cert_file: '{}', key_file: '{}', client_ca_file: '{}'}}\n",
            served.cert.display(),
            served.key.display(),
            pki.ca.display()
        );
        let config = crate::domain::config::testing::config(&text);
        let server = Server::bind(config, None).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// A grpc.health.v1 Check over TLS trusting `ca`, with `identity` as the client certificate.
    async fn check(
        addr: SocketAddr,
        ca: &std::path::Path,
        identity: Option<&crate::domain::config::tls::testing::Issued>,
    ) -> Result<(), String> {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
        if let Some(issued) = identity {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(&issued.cert).unwrap(),
                std::fs::read(&issued.key).unwrap(),
            ));
        }
        let channel = Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map(|_| ())
            .map_err(|e| format!("check: {e:?}"))
    }

    #[tokio::test]
    async fn tls_listener_requires_client_certificates_of_its_ca() {
        let pki = TestPki::new("server");
        let stranger = TestPki::new("stranger");
        let (addr, stop) = tls_router(&pki).await;
        let envoy = pki.issue("envoy", &["envoy.example.com"]);
        let outsider = stranger.issue("outsider", &["envoy.example.com"]);

        check(addr, &pki.ca, Some(&envoy)).await.expect("a client of the CA with a certificate is served");
        let e = check(addr, &pki.ca, None).await.expect_err("no client certificate");
        assert!(e.contains("check") || e.contains("connect"), "{e}");
        check(addr, &pki.ca, Some(&outsider)).await.expect_err("a client certificate of another CA");
        let e = check(addr, &stranger.ca, Some(&envoy))
            .await
            .expect_err("a client that does not trust the router");
        assert!(e.contains("UnknownIssuer") || e.contains("certificate"), "{e}");

        // `trino-router admin` over TLS: with the CA and a client certificate, and without.
        let connection = |cert: Option<&crate::domain::config::tls::testing::Issued>| {
            crate::operate::cli::AdminConnection {
                server: vec![format!("https://{addr}")],
                token: Some("admin-token-for-tests-0001".into()),
                ca_file: Some(pki.ca.clone()),
                cert_file: cert.map(|c| c.cert.clone()),
                key_file: cert.map(|c| c.key.clone()),
                tls_server_name: None,
            }
        };
        let listed = crate::operate::admin_client::run(
            &connection(Some(&envoy)),
            &crate::operate::cli::AdminAction::Clusters { local: false },
        )
        .await;
        assert!(listed.as_ref().is_ok_and(|table| table.starts_with("REPLICA")), "{listed:?}");
        let refused = crate::operate::admin_client::run(
            &connection(None),
            &crate::operate::cli::AdminAction::Clusters { local: false },
        )
        .await;
        let e = refused.expect_err("no client certificate");
        assert!(e.contains("CertificateRequired"), "the error says why: {e}");
        let plain = crate::operate::cli::AdminConnection {
            server: vec![format!("http://{addr}")],
            ..connection(Some(&envoy))
        };
        let e = crate::operate::admin_client::run(
            &plain,
            &crate::operate::cli::AdminAction::Clusters { local: false },
        )
        .await
        .unwrap_err();
        assert!(e.contains("must be https://"), "{e}");
        let _ = stop.send(());
    }
}
