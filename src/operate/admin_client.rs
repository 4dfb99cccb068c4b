//! The `trino-router admin` commands: a gRPC client of the admin API that prints what it is told.

use std::time::{Duration, Instant};

use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::operate::api::admin_client::AdminClient;
use crate::operate::api::{Cluster, ClusterRequest, ListClustersRequest, LocateQueryRequest};
use crate::operate::cli::{AdminAction, AdminConnection};

/// Runs one admin command; returns what to print.
pub async fn run(connection: &AdminConnection, action: &AdminAction) -> Result<String, String> {
    let mut endpoint = Channel::from_shared(connection.server.clone())
        .map_err(|e| format!("`{}` is not a URL: {e}", connection.server))?
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = client_tls(connection)? {
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS settings: {}", causes(&e)))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach the router at {}: {}", connection.server, causes(&e)))?;
    let mut client = AdminClient::new(channel);
    let token = connection.token.clone().unwrap_or_default();
    let cluster = |name: &str| with_token(ClusterRequest { name: name.to_owned() }, &token);
    // A router that requires client certificates closes the connection of a client without one; the
    // alert that says so does not always arrive before the close.
    let hint = if connection.server.starts_with("https://") && connection.cert_file.is_none() {
        " (if the router requires client certificates: --cert-file and --key-file)"
    } else {
        ""
    };
    let status = |e: tonic::Status| {
        let transport = std::error::Error::source(&e).is_some();
        format!(
            "{}: {}{}",
            code_name(e.code()),
            with_causes(e.message().to_owned(), std::error::Error::source(&e)),
            if transport { hint } else { "" }
        )
    };
    match action {
        AdminAction::Clusters => {
            let list =
                client.list_clusters(with_token(ListClustersRequest {}, &token)?).await.map_err(status)?;
            Ok(table(&list.into_inner().clusters))
        }
        AdminAction::Drain { name, wait, timeout } => {
            let drained = client.drain(cluster(name)?).await.map_err(status)?.into_inner();
            let mut out = format!("{name}: draining, {} quer(ies) in flight\n", drained.in_flight);
            if *wait {
                let deadline = Instant::now() + *timeout;
                loop {
                    let list = client
                        .list_clusters(with_token(ListClustersRequest {}, &token)?)
                        .await
                        .map_err(status)?;
                    let now = list.into_inner().clusters.into_iter().find(|c| c.name == *name);
                    match now {
                        Some(c) if c.drained => break,
                        Some(c) if c.operator_state != "draining" => {
                            return Err(format!("{name} is no longer draining (now {})", c.operator_state));
                        }
                        Some(_) if Instant::now() >= deadline => {
                            return Err(format!("{name} still has queries in flight after {timeout:?}"));
                        }
                        Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                        None => return Err(format!("{name} was removed from the config")),
                    }
                }
                out.push_str(&format!("{name}: drained, no query in flight: safe to stop\n"));
            }
            Ok(out)
        }
        AdminAction::Undrain { name } => {
            summary(client.undrain(cluster(name)?).await.map_err(status)?.into_inner())
        }
        AdminAction::Disable { name } => {
            summary(client.disable(cluster(name)?).await.map_err(status)?.into_inner())
        }
        AdminAction::Enable { name } => {
            summary(client.enable(cluster(name)?).await.map_err(status)?.into_inner())
        }
        AdminAction::Locate { query_id } => {
            let found = client
                .locate_query(with_token(LocateQueryRequest { query_id: query_id.clone() }, &token)?)
                .await
                .map_err(status)?
                .into_inner();
            if found.cluster.is_empty() {
                Err(format!("{query_id}: the router cannot place this query"))
            } else {
                Ok(format!("{query_id}: {}\n", found.cluster))
            }
        }
    }
}

/// The TLS settings for an `https://` address; none for `http://`.
fn client_tls(connection: &AdminConnection) -> Result<Option<ClientTlsConfig>, String> {
    if !connection.server.starts_with("https://") {
        if connection.ca_file.is_some() || connection.cert_file.is_some() {
            return Err(format!(
                "--ca-file and --cert-file are for TLS: the address must be https:// (not {})",
                connection.server
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
    if let Some(name) = &connection.tls_server_name {
        tls = tls.domain_name(name.clone());
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
    Ok(format!("{}: {} ({}, {new})\n", cluster.name, cluster.operator_state, cluster.health))
}

/// A fixed-width table of clusters.
pub fn table(clusters: &[Cluster]) -> String {
    let mut rows = vec![
        [
            "CLUSTER",
            "GROUP",
            "HEALTH",
            "OPERATOR",
            "NEW",
            "LOAD",
            "COORD",
            "IN_FLIGHT",
            "ROUTED",
            "WEIGHT",
            "URL",
        ]
        .map(str::to_owned),
    ];
    for c in clusters {
        let coordinator =
            if c.coordinator_queries < 0 { "-".to_owned() } else { c.coordinator_queries.to_string() };
        let operator = if c.drained { "drained".to_owned() } else { c.operator_state.clone() };
        rows.push([
            c.name.clone(),
            c.group.clone(),
            c.health.clone(),
            operator,
            if c.accepts_new_queries { "yes" } else { "no" }.to_owned(),
            c.load.to_string(),
            coordinator,
            c.in_flight.to_string(),
            c.queries_routed.to_string(),
            c.weight.to_string(),
            c.url.clone(),
        ]);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_up() {
        let cluster = |name: &str, drained: bool| Cluster {
            name: name.into(),
            group: "adhoc".into(),
            health: "healthy".into(),
            operator_state: "draining".into(),
            drained,
            coordinator_queries: -1,
            in_flight: 3,
            url: "http://127.0.0.1:1".into(),
            weight: 1.0,
            ..Default::default()
        };
        let text = table(&[cluster("blue", false), cluster("green-long-name", true)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("CLUSTER          GROUP"), "{text}");
        assert!(lines[1].contains("draining") && lines[2].contains("drained"), "{text}");
        assert_eq!(lines[1].find("adhoc"), lines[0].find("GROUP"));
    }
}
