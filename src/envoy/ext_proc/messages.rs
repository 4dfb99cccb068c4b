//! Conversions between ext_proc protobuf messages and the router's own types: reading header values out
//! of an Envoy `HeaderMap`, and building the replies the router sends (route, refuse, pass).

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse, ProcessingResponse,
    TrailersResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;

use crate::domain::refusal::LocalReply;

/// The value of header `name` (lower-case), if present and valid UTF-8. Envoy sends values in
/// `raw_value`; older Envoys used `value`. With several values, the first wins.
pub fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    let value = headers?.headers.iter().find(|h| h.key.eq_ignore_ascii_case(name))?;
    if value.raw_value.is_empty() {
        Some(value.value.as_str())
    } else {
        std::str::from_utf8(&value.raw_value).ok()
    }
}

fn set_header(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// A reply to the request-headers or request-body phase that sets the routing header (replacing any
/// value the client sent), adds `extra` headers, and makes Envoy pick the route again. A body-phase
/// reply overrides what the headers phase set: Envoy holds a buffered request until then.
pub fn route(
    phase: Phase,
    routing_header: &str,
    value: &str,
    extra: &[(String, String)],
) -> ProcessingResponse {
    let mut set_headers = Vec::with_capacity(1 + extra.len());
    set_headers.push(set_header(routing_header, value));
    set_headers.extend(extra.iter().map(|(name, value)| set_header(name, value)));
    let common = CommonResponse {
        header_mutation: Some(HeaderMutation { set_headers, remove_headers: vec![] }),
        clear_route_cache: true,
        ..Default::default()
    };
    reply(match phase {
        Phase::RequestBody => Response::RequestBody(BodyResponse { response: Some(common) }),
        _ => Response::RequestHeaders(HeadersResponse { response: Some(common) }),
    })
}

/// The dynamic-metadata namespace in which the decide filter leaves the learn filter its note.
pub const NOTE_NAMESPACE: &str = "trino-router";

/// What the decide filter tells the learn filter about a new statement: the Envoy cluster it chose
/// and whether to watch the query's answers for the transaction it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnNote {
    pub envoy_cluster: String,
    pub watch: bool,
    /// The new query's log line, for the learn filter to write with the query id (`query_log.query_ids`).
    pub log: Option<QueryLine>,
}

/// One new query's log line: who, where, why, how fast.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryLine {
    pub user: String,
    pub source: String,
    pub group: String,
    pub cluster: String,
    /// The rule that chose the group; empty when none did.
    pub rule: String,
    pub decision_us: u64,
    /// Only with `query_log.sql`.
    pub sql: Option<String>,
}

impl QueryLine {
    /// Writes the line (`query_id` empty when not known) and shows it on the status page.
    pub fn log(&self, query_id: &str) {
        crate::operate::status_page::record(self, query_id);
        tracing::info!(
            target: "trino_router::queries",
            query_id,
            user = self.user,
            source = self.source,
            group = self.group,
            cluster = self.cluster,
            rule = self.rule,
            decision_us = self.decision_us,
            sql = self.sql.as_deref(),
            "new query"
        );
    }

    fn to_struct(&self) -> envoy_types::pb::google::protobuf::Struct {
        use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
        let text = |s: &str| Value { kind: Some(Kind::StringValue(s.to_owned())) };
        let mut fields: Vec<(String, Value)> = vec![
            ("user".into(), text(&self.user)),
            ("source".into(), text(&self.source)),
            ("group".into(), text(&self.group)),
            ("cluster".into(), text(&self.cluster)),
            ("rule".into(), text(&self.rule)),
            ("decision_us".into(), Value { kind: Some(Kind::NumberValue(self.decision_us as f64)) }),
        ];
        if let Some(sql) = &self.sql {
            fields.push(("sql".into(), text(sql)));
        }
        Struct { fields: fields.into_iter().collect() }
    }

    fn from_struct(s: &envoy_types::pb::google::protobuf::Struct) -> QueryLine {
        use envoy_types::pb::google::protobuf::value::Kind;
        let text = |k: &str| match s.fields.get(k).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(v)) => v.clone(),
            _ => String::new(),
        };
        let decision_us = match s.fields.get("decision_us").and_then(|v| v.kind.as_ref()) {
            Some(Kind::NumberValue(n)) => *n as u64,
            _ => 0,
        };
        let sql = s.fields.contains_key("sql").then(|| text("sql"));
        QueryLine {
            user: text("user"),
            source: text("source"),
            group: text("group"),
            cluster: text("cluster"),
            rule: text("rule"),
            decision_us,
            sql,
        }
    }
}

/// Adds `note` to a decide reply as dynamic metadata (Envoy forwards it to the learn filter's stream).
pub fn with_note(mut reply: ProcessingResponse, note: &LearnNote) -> ProcessingResponse {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let mut fields = vec![
        ("cluster".to_owned(), Value { kind: Some(Kind::StringValue(note.envoy_cluster.clone())) }),
        ("watch".to_owned(), Value { kind: Some(Kind::BoolValue(note.watch)) }),
    ];
    if let Some(line) = &note.log {
        fields.push(("log".to_owned(), Value { kind: Some(Kind::StructValue(line.to_struct())) }));
    }
    let inner = Struct { fields: fields.into_iter().collect() };
    let outer = [(NOTE_NAMESPACE.to_owned(), Value { kind: Some(Kind::StructValue(inner)) })];
    reply.dynamic_metadata = Some(Struct { fields: outer.into_iter().collect() });
    reply
}

/// The decide filter's note, from the metadata Envoy forwards with a learn stream's message.
pub fn read_note(metadata: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>) -> Option<LearnNote> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let note = metadata?.filter_metadata.get(NOTE_NAMESPACE)?;
    let envoy_cluster = match note.fields.get("cluster")?.kind.as_ref()? {
        Kind::StringValue(cluster) => cluster.clone(),
        _ => return None,
    };
    let watch = matches!(note.fields.get("watch").and_then(|v| v.kind.as_ref()), Some(Kind::BoolValue(true)));
    let log = match note.fields.get("log").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(line)) => Some(QueryLine::from_struct(line)),
        _ => None,
    };
    Some(LearnNote { envoy_cluster, watch, log })
}

/// A learn stream's response-headers reply asking Envoy for the response body (buffered): the learn
/// filter's mode, with the body.
pub fn with_response_body(mut reply: ProcessingResponse) -> ProcessingResponse {
    use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
    use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::{
        BodySendMode, HeaderSendMode,
    };
    reply.mode_override = Some(ProcessingMode {
        request_header_mode: HeaderSendMode::Skip as i32,
        response_header_mode: HeaderSendMode::Send as i32,
        request_body_mode: BodySendMode::None as i32,
        response_body_mode: BodySendMode::Buffered as i32,
        request_trailer_mode: HeaderSendMode::Skip as i32,
        response_trailer_mode: HeaderSendMode::Skip as i32,
    });
    reply
}

/// Adds a processing-mode override to a headers reply: the decide filter's mode without the request body
/// (the rules need no SQL, so Envoy need not send it).
pub fn without_request_body(reply: ProcessingResponse) -> ProcessingResponse {
    with_mode(reply, false)
}

/// Adds a processing-mode override to a headers reply: the decide filter's mode plus the response
/// headers (a watched follow-up's answer may name a new transaction).
pub fn with_response_headers(reply: ProcessingResponse) -> ProcessingResponse {
    with_mode(reply, true)
}

/// The decide filter's mode (request headers only), with or without the response headers. An override
/// replaces the whole mode, so every field is set.
fn with_mode(mut reply: ProcessingResponse, response_headers: bool) -> ProcessingResponse {
    use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
    use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::{
        BodySendMode, HeaderSendMode,
    };
    let response_header_mode = if response_headers { HeaderSendMode::Send } else { HeaderSendMode::Skip };
    reply.mode_override = Some(ProcessingMode {
        request_header_mode: HeaderSendMode::Send as i32,
        response_header_mode: response_header_mode as i32,
        request_body_mode: BodySendMode::None as i32,
        response_body_mode: BodySendMode::None as i32,
        request_trailer_mode: HeaderSendMode::Skip as i32,
        response_trailer_mode: HeaderSendMode::Skip as i32,
    });
    reply
}

/// Every header with a UTF-8 value, as `(name, value)`.
pub fn header_pairs(headers: Option<&HeaderMap>) -> impl Iterator<Item = (&str, &str)> {
    headers.into_iter().flat_map(|m| &m.headers).filter_map(|h| {
        let value = if h.raw_value.is_empty() {
            Some(h.value.as_str())
        } else {
            std::str::from_utf8(&h.raw_value).ok()
        };
        value.map(|v| (h.key.as_str(), v))
    })
}

/// An answer Envoy sends to the client in the router's name; nothing goes upstream.
pub fn refuse(local: &LocalReply) -> ProcessingResponse {
    crate::state::metrics::METRICS
        .refused(local.details.strip_prefix("trino_router_").unwrap_or(local.details));
    let mut set_headers = vec![set_header("content-type", local.content_type)];
    if let Some(seconds) = local.retry_after {
        set_headers.push(set_header("retry-after", &seconds.to_string()));
    }
    reply(Response::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus { code: i32::from(local.status) }),
        headers: Some(HeaderMutation { set_headers, remove_headers: vec![] }),
        body: local.body.clone(),
        details: local.details.to_owned(),
        ..Default::default()
    }))
}

/// The phases of a request the router can be asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    RequestHeaders,
    ResponseHeaders,
    RequestBody,
    ResponseBody,
    RequestTrailers,
    ResponseTrailers,
}

/// A reply that changes nothing, for a phase the router only observes.
pub fn pass(phase: Phase) -> ProcessingResponse {
    let headers = || HeadersResponse { response: Some(CommonResponse::default()) };
    let body = || BodyResponse { response: Some(CommonResponse::default()) };
    reply(match phase {
        Phase::RequestHeaders => Response::RequestHeaders(headers()),
        Phase::ResponseHeaders => Response::ResponseHeaders(headers()),
        Phase::RequestBody => Response::RequestBody(body()),
        Phase::ResponseBody => Response::ResponseBody(body()),
        Phase::RequestTrailers => Response::RequestTrailers(TrailersResponse::default()),
        Phase::ResponseTrailers => Response::ResponseTrailers(TrailersResponse::default()),
    })
}

fn reply(response: Response) -> ProcessingResponse {
    ProcessingResponse { response: Some(response), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[u8])]) -> HeaderMap {
        HeaderMap {
            headers: pairs
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: (*k).to_owned(),
                    raw_value: v.to_vec(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn header_lookup() {
        let m = map(&[
            (":path", b"/v1/statement"),
            ("x-trino-routing-group", b"etl"),
            ("x-bin", b"\xff\xfe"),
            ("x-dup", b"1"),
            ("x-dup", b"2"),
        ]);
        assert_eq!(header(Some(&m), ":path"), Some("/v1/statement"));
        assert_eq!(header(Some(&m), "X-Trino-Routing-Group"), Some("etl"));
        assert_eq!(header(Some(&m), "x-bin"), None);
        assert_eq!(header(Some(&m), "x-dup"), Some("1"));
        assert_eq!(header(Some(&m), "x-missing"), None);
        assert_eq!(header(None, ":path"), None);
        let old_style = HeaderMap {
            headers: vec![HeaderValue { key: ":method".into(), value: "GET".into(), ..Default::default() }],
        };
        assert_eq!(header(Some(&old_style), ":method"), Some("GET"));
    }

    #[test]
    fn route_overwrites_and_clears_route_cache() {
        let Some(Response::RequestHeaders(h)) =
            route(Phase::RequestHeaders, "x-trino-cluster", "trino-a", &[]).response
        else {
            panic!()
        };
        let common = h.response.unwrap();
        assert!(common.clear_route_cache);
        let set = &common.header_mutation.unwrap().set_headers[0];
        assert_eq!(set.append_action, HeaderAppendAction::OverwriteIfExistsOrAdd as i32);
        let header = set.header.as_ref().unwrap();
        assert_eq!(
            (header.key.as_str(), header.raw_value.as_slice()),
            ("x-trino-cluster", b"trino-a".as_slice())
        );
    }

    #[test]
    fn refuse_carries_status_and_body() {
        let local = LocalReply {
            status: 503,
            content_type: "application/json",
            body: b"{}".to_vec(),
            details: "d",
            retry_after: Some(2),
        };
        let Some(Response::ImmediateResponse(r)) = refuse(&local).response else { panic!() };
        assert_eq!(r.status.unwrap().code, 503);
        let headers: Vec<(String, Vec<u8>)> = r
            .headers
            .unwrap()
            .set_headers
            .into_iter()
            .map(|h| h.header.unwrap())
            .map(|h| (h.key, h.raw_value))
            .collect();
        assert!(headers.contains(&("retry-after".to_owned(), b"2".to_vec())), "{headers:?}");
        assert_eq!(r.body, b"{}");
        assert_eq!(r.details, "d");
    }
}
