//! Replicas in one process: real servers on loopback ports that name each other as peers, over mTLS,
//! and a replica whose peer accepts connections but never answers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::domain::config::tls::testing::{Issued, TestPki};
use crate::domain::config::{Config, Overrides};
use crate::operate::api::admin_client::AdminClient;
use crate::operate::api::{ClusterRequest, ListClustersRequest};
use crate::operate::server::Server;
use crate::state::cluster_state::Operator;

/// A port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server of `yaml` as replica `replica`, serving until the returned sender is dropped.
async fn serve(yaml: &str, replica: &str) -> (Server, SocketAddr) {
    let overrides = Overrides {
        listen: None,
        env: vec![(crate::domain::config::fleet::REPLICA_ENV.into(), replica.into())],
        hostname: None,
    };
    let config = Config::from_yaml(std::path::Path::new("/tmp/r.yaml"), yaml, &overrides).unwrap();
    let server = Server::bind(config, None).await.unwrap();
    let addr = server.local_addr().unwrap();
    (server, addr)
}

fn run(server: Server) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    stop
}

async fn tls_channel(addr: SocketAddr, pki: &TestPki, client: &Issued) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(&client.cert).unwrap(),
            std::fs::read(&client.key).unwrap(),
        ))
        .domain_name("127.0.0.1");
    Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect().await.unwrap()
}

fn with_token<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", "Bearer admin-token-for-tests-0001".parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_a_drain_over_mtls() {
    let pki = TestPki::new("fleet");
    let served = pki.issue("router", &["127.0.0.1"]);
    let admin = pki.issue("admin", &["admin.example.com"]);
    let ports = [free_port(), free_port()];
    let yaml = |port: u16| {
        format!(
            "listen: 127.0.0.1:{port}\ndefault_group: a\n\
             clusters: [{{name: blue, url: 'http://127.0.0.1:9', group: a}}, {{name: green, url: 'http://127.0.0.1:9', group: a}}]\n\
             admin: {{token: admin-token-for-tests-0001}}\n\
             listen_tls: {{cert_file: '{}', key_file: '{}', client_ca_file: '{}'}}\n\
             fleet: {{peers: ['127.0.0.1:{}', '127.0.0.1:{}'], tls_server_name: '127.0.0.1'}}\n",
            served.cert.display(),
            served.key.display(),
            pki.ca.display(),
            ports[0],
            ports[1]
        )
    };
    let (r0, addr0) = serve(&yaml(ports[0]), "r0").await;
    let (r1, addr1) = serve(&yaml(ports[1]), "r1").await;
    let router1 = r1.router().clone();
    let _stops = [run(r0), run(r1)];

    let mut client = AdminClient::new(tls_channel(addr0, &pki, &admin).await);
    let started = Instant::now();
    let blue = client
        .drain(with_token(ClusterRequest { name: "blue".into(), reason: "upgrade".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(blue.replicas_reached, vec!["r1".to_owned()], "{blue:?}");
    assert!(blue.replicas_missed.is_empty(), "{blue:?}");
    // Pushed before the answer: r1 has it now.
    assert_eq!(
        router1.snapshot().clusters[0].operator(),
        Operator::Draining,
        "after {:?}",
        started.elapsed()
    );
    assert_eq!(router1.operators().entry("blue").unwrap().reason, "upgrade");

    // The fleet view through r1: both replicas, agreeing.
    let mut through_r1 = AdminClient::new(tls_channel(addr1, &pki, &admin).await);
    let list =
        through_r1.list_clusters(with_token(ListClustersRequest { fleet: true })).await.unwrap().into_inner();
    assert_eq!(list.replica, "r1");
    assert_eq!(list.peers.len(), 1, "{:?}", list.peers);
    let r0_view = &list.peers[0];
    assert_eq!((r0_view.replica.as_str(), r0_view.status.as_str()), ("r0", "ok"), "{r0_view:?}");
    assert_eq!(r0_view.clusters[0].operator_state, "draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waits_for_a_silent_peer_then_serves_and_says_so() {
    let (silent_addr, _keep) = super::peers::silent_peer().await;
    let yaml = format!(
        "listen: 127.0.0.1:0\ndefault_group: a\nclusters: [{{name: blue, url: 'http://127.0.0.1:9', group: a}}]\n\
         admin: {{token: admin-token-for-tests-0001}}\nfleet: {{peers: ['{silent_addr}'], startup_wait: 2s}}\n"
    );
    let (server, addr) = serve(&yaml, "r0").await;
    let router = server.router().clone();
    let started = Instant::now();
    let _stop = run(server);
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let serving = || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest { service: String::new() })
                .await
                .map(|r| r.into_inner().status)
                .unwrap_or(0)
                == 1
        }
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!serving().await, "SERVING while its peer had not answered and the wait was not over");
    assert!(!router.operators().settled());
    while !serving().await {
        assert!(started.elapsed() < Duration::from_secs(6), "never SERVING after the wait");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "served after {waited:?}, before fleet.startup_wait");
    assert!(router.operators().settled());
    let _ = health.check(HealthCheckRequest { service: String::new() }).await;
}
