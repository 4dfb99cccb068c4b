//! Reaching the peers: `fleet.peers` resolved to addresses (a host name stands for every address it
//! resolves to: a Kubernetes headless Service lists each ready replica), one gRPC channel per address
//! (over TLS when the router's port speaks it), the admin token on every call, and a failed call told
//! apart as *absent* (nothing listens there: that replica is not running) or *unreachable* (no answer
//! in time, or an error: it may be running and hold state this replica does not know).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::domain::config::fleet::{PeerAddress, PeerTls};

/// How long one call to a peer may take (connecting included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long resolving a peer's name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// One address to call, and the configured peer it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub configured: PeerAddress,
    pub addr: SocketAddr,
}

/// Every address the configured peers resolve to (each once), and the peers that resolved to nothing
/// with why. A name that does not resolve counts as no replica: a headless Service with no ready
/// replica has no addresses.
pub async fn resolve(peers: &[PeerAddress]) -> (Vec<Target>, Vec<String>) {
    let lookups = peers.iter().map(|peer| async move {
        let found =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((peer.host.as_str(), peer.port)))
                .await;
        (peer, found)
    });
    let mut targets: Vec<Target> = Vec::new();
    let mut unresolved = Vec::new();
    for (peer, found) in futures_util::future::join_all(lookups).await {
        match found {
            Ok(Ok(addrs)) => {
                for addr in addrs {
                    if !targets.iter().any(|t| t.addr == addr) {
                        targets.push(Target { configured: peer.clone(), addr });
                    }
                }
            }
            Ok(Err(e)) => unresolved.push(format!("{peer}: {e}")),
            Err(_) => unresolved.push(format!("{peer}: no answer from DNS within {RESOLVE_TIMEOUT:?}")),
        }
    }
    (targets, unresolved)
}

/// Why a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens there (connection refused): that replica is not running.
    Absent(String),
    /// No answer in time, or an error.
    Unreachable(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Absent(m) | Failure::Unreachable(m) => m,
        }
    }
}

/// A failed call's status as a [`Failure`]: refused connections are absent peers.
pub fn classify(status: &tonic::Status) -> Failure {
    let mut text = format!("{}: {}", status.code(), status.message());
    let mut refused = false;
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        next = cause.source();
    }
    refused |= text.contains("Connection refused");
    if refused { Failure::Absent(text) } else { Failure::Unreachable(text) }
}

/// A request with the admin token.
pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse::<MetadataValue<_>>() {
        request.metadata_mut().insert("authorization", value);
    }
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// One channel per peer address, made when first needed and again when the TLS settings change.
#[derive(Default)]
pub struct Channels {
    by_addr: Mutex<HashMap<SocketAddr, (Option<PeerTls>, Channel)>>,
}

impl Channels {
    /// The channel to `target` (it connects on first use, and again after a failure).
    pub fn get(&self, target: &Target, tls: Option<&PeerTls>) -> Result<Channel, String> {
        let mut by_addr = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((made_with, channel)) = by_addr.get(&target.addr)
            && made_with.as_ref() == tls
        {
            return Ok(channel.clone());
        }
        let channel = endpoint(target, tls)?.connect_lazy();
        by_addr.insert(target.addr, (tls.cloned(), channel.clone()));
        Ok(channel)
    }

    /// Forgets the channels of addresses no longer resolved.
    pub fn keep_only(&self, targets: &[Target]) {
        let mut by_addr = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        by_addr.retain(|addr, _| targets.iter().any(|t| t.addr == *addr));
    }
}

fn endpoint(target: &Target, tls: Option<&PeerTls>) -> Result<Endpoint, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{}", target.addr))
        .map_err(|e| format!("{}: {e}", target.addr))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true);
    let Some(tls) = tls else { return Ok(endpoint) };
    crate::domain::config::tls::install_crypto_provider();
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&*tls.ca.pem));
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(&*cert.pem, &*key.pem));
    }
    let name = tls.server_name.clone().unwrap_or_else(|| target.configured.host.clone());
    endpoint
        .tls_config(config.domain_name(name))
        .map_err(|e| format!("TLS settings for {}: {e}", target.addr))
}

/// A peer for tests that accepts connections and never answers (a paused replica).
#[cfg(test)]
pub(super) async fn silent_peer() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_stands_for_every_address() {
        let peers = vec![
            PeerAddress::parse("127.0.0.1:7001").unwrap(),
            PeerAddress::parse("localhost:7002").unwrap(),
            PeerAddress::parse("127.0.0.1:7001").unwrap(),
            PeerAddress::parse("no-such-host.invalid:7003").unwrap(),
        ];
        let (targets, unresolved) = resolve(&peers).await;
        let addrs: Vec<String> = targets.iter().map(|t| t.addr.to_string()).collect();
        assert_eq!(addrs[0], "127.0.0.1:7001");
        assert!(addrs.iter().filter(|a| *a == "127.0.0.1:7001").count() == 1, "each address once: {addrs:?}");
        assert!(
            targets.iter().any(|t| t.configured.host == "localhost" && t.addr.ip().is_loopback()),
            "{addrs:?}"
        );
        assert_eq!(unresolved.len(), 1, "{unresolved:?}");
        assert!(unresolved[0].starts_with("no-such-host.invalid:7003"), "{unresolved:?}");
    }

    #[tokio::test]
    async fn refused_is_absent_and_silence_is_unreachable() {
        // A port nothing listens on: refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        // A listener that accepts and never speaks: the call times out.
        let (silent_addr, _keep) = silent_peer().await;
        let channels = Channels::default();
        for (addr, absent) in [(closed_addr, true), (silent_addr, false)] {
            let target = Target { configured: PeerAddress::parse(&addr.to_string()).unwrap(), addr };
            let mut client =
                crate::operate::api::admin_client::AdminClient::new(channels.get(&target, None).unwrap());
            let started = std::time::Instant::now();
            let status = client
                .list_clusters(with_token(
                    crate::operate::api::ListClustersRequest::default(),
                    "admin-token-for-tests-0001",
                ))
                .await
                .unwrap_err();
            let failure = classify(&status);
            assert_eq!(matches!(failure, Failure::Absent(_)), absent, "{addr}: {failure:?}");
            assert!(started.elapsed() < CALL_TIMEOUT + Duration::from_millis(700), "{:?}", started.elapsed());
        }
    }
}
