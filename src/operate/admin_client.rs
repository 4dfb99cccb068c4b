//! The `trino-router admin` commands: a gRPC client of the admin API that prints what it is told. It
//! talks to the fleet: every `--server` address (a name: every address it resolves to), each of which
//! also answers for its peers; [`crate::operate::fleet_table`] turns the answers into one view. A
//! change goes to the first replica that answers (it pushes it to the others); `drain --wait` waits
//! until every replica reports the cluster drained.

use std::time::{Duration, Instant};

use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::operate::api::admin_client::AdminClient;
use crate::operate::api::{Cluster, ClusterRequest, ListClustersRequest, LocateQueryRequest};
use crate::operate::cli::{AdminAction, AdminConnection};
use crate::operate::fleet_table::{DrainVerdict, FleetView, Status, drain_verdict};

/// How long one call may take (a fleet listing asks every peer, each within a second).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How often `drain --wait` asks again, and how often it says what it waits for.
const WAIT_POLL: Duration = Duration::from_millis(500);
const WAIT_REPORT: Duration = Duration::from_secs(5);

/// One replica address to call.
struct Target {
    /// As shown: the address, and the name it came from.
    shown: String,
    url: String,
    /// The name the certificate must carry (the host of the URL it came from).
    tls_name: Option<String>,
}

/// A connected replica.
struct Connected {
    shown: String,
    client: AdminClient<Channel>,
}

/// Runs one admin command; returns what to print.
pub async fn run(connection: &AdminConnection, action: &AdminAction) -> Result<String, String> {
    let targets = targets(connection).await?;
    let token = connection.token.clone().unwrap_or_default();
    let (mut connected, failures) = connect_all(connection, &targets).await;
    if connected.is_empty() {
        return Err(failures.into_iter().map(|(_, e)| e).collect::<Vec<_>>().join("\n"));
    }
    let hint = tls_hint(connection);
    let status = |e: tonic::Status| {
        let transport = std::error::Error::source(&e).is_some();
        format!(
            "{}: {}{}",
            code_name(e.code()),
            with_causes(e.message().to_owned(), std::error::Error::source(&e)),
            if transport { hint } else { "" }
        )
    };
    let change = |kind: Change, name: &str, reason: &str| {
        let request = ClusterRequest { name: name.to_owned(), reason: reason.to_owned() };
        change(&connected, kind, request, &token, &status)
    };
    match action {
        AdminAction::Clusters { local } => {
            let view = gather(&mut connected, &failures, &token, !*local).await.map_err(status)?;
            Ok(crate::operate::fleet_table::render(&view))
        }
        AdminAction::Drain { name, wait, timeout, reason } => {
            let drained = change(Change::Drain, name, reason).await?;
            let mut out = format!("{name}: draining, {} quer(ies) in flight here\n", drained.in_flight);
            out.push_str(&held_by(&drained));
            if *wait {
                let waited = wait_drained(&mut connected, &failures, &token, name, *timeout).await;
                out.push_str(&waited.map_err(|e| match e {
                    Waited::Call(e) => status(e),
                    Waited::Failed(e) => e,
                })?);
            }
            Ok(out)
        }
        AdminAction::Undrain { name, reason } => summary(change(Change::Undrain, name, reason).await?),
        AdminAction::Enable { name, reason } => summary(change(Change::Enable, name, reason).await?),
        AdminAction::Disable { name, reason } => summary(change(Change::Disable, name, reason).await?),
        AdminAction::Locate { query_id } => {
            let mut last = None;
            for c in &mut connected {
                let request = with_token(LocateQueryRequest { query_id: query_id.clone() }, &token)?;
                let found = c.client.locate_query(request).await.map_err(status)?.into_inner();
                if !found.cluster.is_empty() {
                    return Ok(format!("{query_id}: {}\n", found.cluster));
                }
                last = Some(format!("{query_id}: the router cannot place this query"));
            }
            Err(last.unwrap_or_default())
        }
    }
}

/// Every address the `--server` URLs name (a host name: each address it resolves to).
async fn targets(connection: &AdminConnection) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for url in &connection.server {
        let uri: http::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return Err(format!("`{url}` is not a URL such as http://127.0.0.1:50051"));
        };
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_ok() {
            targets.push(Target { shown: format!("{host}:{port}"), url: url.clone(), tls_name: None });
            continue;
        }
        let found = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("cannot resolve `{host}` of {url}: {e}"))?;
        let mut addrs: Vec<std::net::SocketAddr> = found.collect();
        addrs.dedup();
        for addr in addrs {
            let shown = format!("{addr} ({host})");
            if targets.iter().any(|t: &Target| t.shown.starts_with(&addr.to_string())) {
                continue;
            }
            targets.push(Target {
                shown,
                url: format!("{scheme}://{addr}"),
                tls_name: Some(bare.to_owned()),
            });
        }
    }
    Ok(targets)
}

/// Connects to every target at once; those that could not be reached, with why.
async fn connect_all(
    connection: &AdminConnection,
    targets: &[Target],
) -> (Vec<Connected>, Vec<(String, String)>) {
    let attempts = targets.iter().map(|target| async move {
        let channel = connect(connection, target).await?;
        Ok::<_, String>(Connected { shown: target.shown.clone(), client: AdminClient::new(channel) })
    });
    let mut connected = Vec::new();
    let mut failures = Vec::new();
    for (target, attempt) in targets.iter().zip(futures_util::future::join_all(attempts).await) {
        match attempt {
            Ok(c) => connected.push(c),
            Err(e) => failures.push((target.shown.clone(), e)),
        }
    }
    (connected, failures)
}

async fn connect(connection: &AdminConnection, target: &Target) -> Result<Channel, String> {
    let mut endpoint = Channel::from_shared(target.url.clone())
        .map_err(|e| format!("`{}` is not a URL: {e}", target.url))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT);
    if let Some(tls) = client_tls(connection, &target.url, target.tls_name.as_deref())? {
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS settings: {}", causes(&e)))?;
    }
    endpoint.connect().await.map_err(|e| {
        format!("cannot reach the router at {}: {}{}", target.shown, causes(&e), tls_hint(connection))
    })
}

/// A router that requires client certificates closes the connection of a client without one; the alert
/// that says so does not always arrive before the close.
fn tls_hint(connection: &AdminConnection) -> &'static str {
    if connection.server.iter().any(|s| s.starts_with("https://")) && connection.cert_file.is_none() {
        " (if the router requires client certificates: --cert-file and --key-file)"
    } else {
        ""
    }
}

/// The operator commands.
#[derive(Clone, Copy)]
enum Change {
    Drain,
    Undrain,
    Disable,
    Enable,
}

/// Sends a change to the first replica that can be reached (it pushes it to its peers); a refusal,
/// such as an unknown cluster or a wrong token, is the answer.
async fn change(
    connected: &[Connected],
    kind: Change,
    request: ClusterRequest,
    token: &str,
    status: &impl Fn(tonic::Status) -> String,
) -> Result<Cluster, String> {
    let mut unreachable = Vec::new();
    for c in connected {
        let mut client = c.client.clone();
        let request = with_token(request.clone(), token)?;
        let answer = match kind {
            Change::Drain => client.drain(request).await,
            Change::Undrain => client.undrain(request).await,
            Change::Disable => client.disable(request).await,
            Change::Enable => client.enable(request).await,
        };
        match answer {
            Ok(cluster) => return Ok(cluster.into_inner()),
            Err(e) if e.code() == tonic::Code::Unavailable => {
                unreachable.push(format!("{}: {}", c.shown, status(e)))
            }
            Err(e) => return Err(status(e)),
        }
    }
    Err(unreachable.join("\n"))
}

/// Every replica's view, from every connected address (`fleet`: each also answers for its peers).
async fn gather(
    connected: &mut [Connected],
    failures: &[(String, String)],
    token: &str,
    fleet: bool,
) -> Result<FleetView, tonic::Status> {
    let mut view = FleetView::default();
    let mut first_error = None;
    for c in connected.iter_mut() {
        let request =
            with_token(ListClustersRequest { fleet }, token).map_err(tonic::Status::invalid_argument)?;
        match c.client.list_clusters(request).await {
            Ok(answer) => view.add_answer(c.shown.split(' ').next().unwrap_or(&c.shown), answer.into_inner()),
            Err(e) if e.code() == tonic::Code::Unauthenticated => return Err(e),
            Err(e) => {
                view.add_failure(&c.shown, Status::Unreachable(e.message().to_owned()));
                first_error.get_or_insert(e);
            }
        }
    }
    for (shown, why) in failures {
        // Nothing listens there (a name's other address, a stopped replica): not running, nothing to count.
        let status = if why.contains("Connection refused") {
            Status::Absent(why.clone())
        } else {
            Status::Unreachable(why.clone())
        };
        view.add_failure(shown, status);
    }
    let answered = view.answered().next().is_some();
    match first_error {
        Some(e) if !answered => Err(e),
        _ => Ok(view),
    }
}

enum Waited {
    Call(tonic::Status),
    Failed(String),
}

/// Until every replica reports `name` drained ([`drain_verdict`]); what to print then.
async fn wait_drained(
    connected: &mut [Connected],
    failures: &[(String, String)],
    token: &str,
    name: &str,
    timeout: Duration,
) -> Result<String, Waited> {
    let started = Instant::now();
    let mut reported = Instant::now();
    loop {
        let view = gather(connected, failures, token, true).await.map_err(Waited::Call)?;
        match drain_verdict(&view, name) {
            DrainVerdict::Drained(replicas) => {
                return Ok(format!(
                    "{name}: drained, no query in flight: safe to stop (every replica agrees: {})\n",
                    replicas.join(", ")
                ));
            }
            DrainVerdict::Stopped(why) => return Err(Waited::Failed(why)),
            DrainVerdict::Waiting(why) if started.elapsed() >= timeout => {
                return Err(Waited::Failed(format!(
                    "{name} is not drained after {timeout:?}: {}",
                    why.join("; ")
                )));
            }
            DrainVerdict::Waiting(why) => {
                if reported.elapsed() >= WAIT_REPORT {
                    eprintln!("{name}: waiting: {}", why.join("; "));
                    reported = Instant::now();
                }
                tokio::time::sleep(WAIT_POLL).await;
            }
        }
    }
}

/// Which replicas hold a change, from the answer to it (nothing for a replica with no peers).
fn held_by(cluster: &Cluster) -> String {
    let mut out = String::new();
    if !cluster.replicas_reached.is_empty() {
        out.push_str(&format!("peers holding it now: {}\n", cluster.replicas_reached.join(", ")));
    }
    if !cluster.replicas_missed.is_empty() {
        out.push_str(&format!(
            "NOT YET on: {} (each takes it within fleet.sync_interval of answering again)\n",
            cluster.replicas_missed.join(", ")
        ));
    }
    out
}

/// The TLS settings for an `https://` address; none for `http://`. `name`: the host the address was
/// resolved from, which the certificate must carry.
fn client_tls(
    connection: &AdminConnection,
    url: &str,
    name: Option<&str>,
) -> Result<Option<ClientTlsConfig>, String> {
    if !url.starts_with("https://") {
        if connection.ca_file.is_some() || connection.cert_file.is_some() {
            return Err(format!(
                "--ca-file and --cert-file are for TLS: the address must be https:// (not {url})"
            ));
        }
        return Ok(None);
    }
    crate::domain::config::tls::install_crypto_provider();
    let mut tls = match &connection.ca_file {
        Some(path) => {
            let ca = crate::domain::config::tls::read_ca(path).map_err(|e| format!("--ca-file: {e}"))?;
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&*ca.pem))
        }
        None => ClientTlsConfig::new().with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&connection.cert_file, &connection.key_file) {
        let cert =
            crate::domain::config::tls::read_certificates(cert).map_err(|e| format!("--cert-file: {e}"))?;
        let key =
            crate::domain::config::tls::read_private_key(key).map_err(|e| format!("--key-file: {e}"))?;
        crate::domain::config::tls::check_key_matches(&cert, &key).map_err(|e| format!("--key-file: {e}"))?;
        tls = tls.identity(Identity::from_pem(&*cert.pem, &*key.pem));
    }
    if let Some(name) = connection.tls_server_name.as_deref().or(name) {
        tls = tls.domain_name(name.to_owned());
    }
    Ok(Some(tls))
}

/// An error with what caused it (tonic's transport errors say little on their own).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    with_causes(error.to_string(), error.source())
}

/// `text`, then each cause in turn that it does not say already.
fn with_causes(mut text: String, mut next: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(cause) = next {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        next = cause.source();
    }
    text
}

fn with_token<T>(message: T, token: &str) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    if !token.is_empty() {
        let value: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token holds characters a header cannot".to_owned())?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

fn summary(cluster: Cluster) -> Result<String, String> {
    let new = if cluster.accepts_new_queries { "takes new queries" } else { "takes no new queries" };
    let mut out = format!("{}: {} ({}, {new})\n", cluster.name, cluster.operator_state, cluster.health);
    out.push_str(&held_by(&cluster));
    Ok(out)
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => "refused (UNAUTHENTICATED)",
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::Unavailable => "router unavailable",
        _ => "failed",
    }
}
