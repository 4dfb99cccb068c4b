//! What the fuzz targets share: the router configs they route with, Envoy header maps built from fuzz
//! input, and readings of the router's replies.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
use envoy_types::pb::envoy::service::ext_proc::v3::{CommonResponse, ProcessingResponse};
use trino_router::domain::config::{Config, Overrides};
use trino_router::envoy::ext_proc::messages::Phase;
use trino_router::state::router::Router;

/// Two groups (etl restricted to one user and one source pattern), three clusters (one with an Envoy
/// cluster name of its own), statement rules and a request rule, every new query's id logged (so the
/// learn role reads every first answer), small affinity caches.
pub const CONFIG: &str = r#"
listen: 127.0.0.1:1
default_group: adhoc
groups:
  - {name: etl, fallback: [adhoc], allow: {users: [etl_bot], sources: ['^airflow']}}
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-b, url: 'http://127.0.0.1:2', group: adhoc, weight: 2}
  - {name: trino-etl, url: 'http://127.0.0.1:3', group: etl, envoy_cluster: 'outbound|8080||trino-etl'}
query_log: {query_ids: true, sql: true}
max_sql_bytes: 4096
affinity: {max_queries: 1000}   # small caches: a fresh router per input is cheap to build and drop
rules:
  - name: etl-writes
    when: 'statement.kind in ["insert", "create_table_as", "merge"] && request.user != "guest"'
    group: etl
    set_headers: {X-Trino-Client-Tags: etl-write}
  - name: hive-readers
    when: '"hive" in statement.catalogs || "hive.web.t" in statement.tables_read'
    group: etl
  - name: dashboards
    match:
      source: {regex: '^superset'}
      session.query_priority: ["1", "2"]
    group: adhoc
  - name: tagged
    when: '"batch" in request.client_tags && request.headers["x-team"] == "data"'
    group: etl
"#;

/// [`CONFIG`] with URL-carried placement (`/_trino/{cluster}/...`) and without the query log: the learn
/// role reads a first answer only when the cluster's coordinator id was not confirmed lately.
pub fn prefixed_config_text() -> String {
    CONFIG.replace("query_log: {query_ids: true, sql: true}", "url_prefix: /_trino")
}

/// The configs, parsed once: [`CONFIG`] and [`prefixed_config_text`].
pub fn config(prefixed: bool) -> &'static Config {
    static PLAIN: OnceLock<Config> = OnceLock::new();
    static PREFIXED: OnceLock<Config> = OnceLock::new();
    let parse = |text: &str| {
        Config::from_yaml(Path::new("fuzz.yaml"), text, &Overrides::default())
            .expect("the fuzz config is valid")
    };
    if prefixed {
        PREFIXED.get_or_init(|| parse(&prefixed_config_text()))
    } else {
        PLAIN.get_or_init(|| parse(CONFIG))
    }
}

/// A router with nothing learned yet (one per fuzz input, so that a crash reproduces from its input).
pub fn fresh_router(prefixed: bool) -> Arc<Router> {
    Arc::new(Router::new(config(prefixed).clone()))
}

/// An Envoy header map as Envoy sends it: names as strings, values as raw bytes. A header whose name
/// starts with `~` is sent old-style, its value in the `value` string field (when it is UTF-8).
pub fn header_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> HeaderMap {
    let headers = pairs
        .into_iter()
        .map(|(name, value)| match (name.strip_prefix('~'), std::str::from_utf8(value)) {
            (Some(name), Ok(text)) => {
                HeaderValue { key: name.to_owned(), value: text.to_owned(), ..Default::default() }
            }
            _ => HeaderValue { key: name.to_owned(), raw_value: value.to_vec(), ..Default::default() },
        })
        .collect();
    HeaderMap { headers }
}

/// `Name: value` lines (split at the first `:` after the first byte, so `:path: /x` is a pseudo-header;
/// one space after the colon is dropped). Names are made UTF-8 (Envoy's are strings); values stay bytes.
pub fn header_lines(text: &[u8]) -> Vec<(String, Vec<u8>)> {
    text.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().skip(1).position(|&b| b == b':').map(|i| i + 1);
            let (name, value) = match colon {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, &b""[..]),
            };
            let value = value.strip_prefix(b" ").unwrap_or(value);
            (String::from_utf8_lossy(name).into_owned(), value.to_vec())
        })
        .collect()
}

/// The phase of a message from Envoy.
pub fn phase_of(request: &Request) -> Phase {
    match request {
        Request::RequestHeaders(_) => Phase::RequestHeaders,
        Request::ResponseHeaders(_) => Phase::ResponseHeaders,
        Request::RequestBody(_) => Phase::RequestBody,
        Request::ResponseBody(_) => Phase::ResponseBody,
        Request::RequestTrailers(_) => Phase::RequestTrailers,
        Request::ResponseTrailers(_) => Phase::ResponseTrailers,
    }
}

/// What a reply is: an answer to a phase (with its common response, if any), or an immediate response
/// to the client (its status).
#[derive(Debug)]
pub enum Answer<'a> {
    Phase(Phase, Option<&'a CommonResponse>),
    Immediate(i32),
    /// No response, or one the router never sends.
    Other,
}

pub fn answer_of(reply: &ProcessingResponse) -> Answer<'_> {
    match &reply.response {
        Some(Response::RequestHeaders(r)) => Answer::Phase(Phase::RequestHeaders, r.response.as_ref()),
        Some(Response::ResponseHeaders(r)) => Answer::Phase(Phase::ResponseHeaders, r.response.as_ref()),
        Some(Response::RequestBody(r)) => Answer::Phase(Phase::RequestBody, r.response.as_ref()),
        Some(Response::ResponseBody(r)) => Answer::Phase(Phase::ResponseBody, r.response.as_ref()),
        Some(Response::RequestTrailers(_)) => Answer::Phase(Phase::RequestTrailers, None),
        Some(Response::ResponseTrailers(_)) => Answer::Phase(Phase::ResponseTrailers, None),
        Some(Response::ImmediateResponse(r)) => Answer::Immediate(r.status.as_ref().map_or(0, |s| s.code)),
        Some(Response::StreamedImmediateResponse(_)) | None => Answer::Other,
    }
}

/// Whether a common response changes the request or answer it passes (headers, body, route).
pub fn changes_anything(common: Option<&CommonResponse>) -> bool {
    common.is_some_and(|c| {
        c.header_mutation.is_some()
            || c.body_mutation.is_some()
            || c.trailers.is_some()
            || c.clear_route_cache
    })
}
