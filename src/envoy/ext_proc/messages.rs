//! The edge between ext_proc protobuf and the router's own types. A message from Envoy is decoded into
//! an [`Inbound`] ([`decode`]): its phase, its headers or body, whether Envoy only observes, and the
//! decide filter's note; the stream machine reads nothing else. What the machine answers, a [`Reply`],
//! is encoded into the `ProcessingResponse` Envoy gets ([`encode`]). The note the decide filter leaves
//! the learn filter travels as dynamic metadata ([`with_note`], [`read_note`]).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::{
    BodySendMode, HeaderSendMode,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse, ProcessingRequest,
    ProcessingResponse, TrailersResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use crate::domain::refusal::LocalReply;
use crate::envoy::protocol::{LEARN_CLUSTER_ATTRIBUTE, NOTE_NAMESPACE};
use crate::state::telemetry::QueryLine;

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

/// Request or answer headers as Envoy sent them, read by name. (The header map stays as it came: the
/// router reads a few values of most requests, so nothing is copied up front.)
#[derive(Debug, Clone, Default)]
pub struct Headers {
    map: Option<HeaderMap>,
    end_of_stream: bool,
}

impl Headers {
    /// The value of header `name` (lower-case), if present and valid UTF-8. With several values, the
    /// first wins.
    pub fn get(&self, name: &str) -> Option<&str> {
        header(self.map.as_ref(), name)
    }

    /// Every header with a UTF-8 value, as `(name, value)`, pseudo-headers included.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        header_pairs(self.map.as_ref())
    }

    /// No body follows.
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }
}

/// A request or answer body (or a part of one).
#[derive(Debug, Clone, Default)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub end_of_stream: bool,
}

/// What one message from Envoy says.
#[derive(Debug)]
pub enum Event {
    RequestHeaders(Headers),
    RequestBody(Body),
    ResponseHeaders(Headers),
    ResponseBody(Body),
    RequestTrailers,
    ResponseTrailers,
    /// A message without a phase.
    Empty,
}

/// One message from Envoy, decoded.
#[derive(Debug)]
pub struct Inbound {
    pub event: Event,
    /// Envoy only observes (observability mode): it expects no reply.
    pub observing: bool,
    /// The decide filter's note, forwarded with an answer's headers.
    pub note: Option<LearnNote>,
}

/// Decodes a message from Envoy.
pub fn decode(message: ProcessingRequest) -> Inbound {
    let headers = |h: envoy_types::pb::envoy::service::ext_proc::v3::HttpHeaders| Headers {
        map: h.headers,
        end_of_stream: h.end_of_stream,
    };
    let body = |b: envoy_types::pb::envoy::service::ext_proc::v3::HttpBody| Body {
        bytes: b.body,
        end_of_stream: b.end_of_stream,
    };
    let mut note = None;
    let event = match message.request {
        Some(Request::RequestHeaders(h)) => Event::RequestHeaders(headers(h)),
        Some(Request::RequestBody(b)) => Event::RequestBody(body(b)),
        Some(Request::ResponseHeaders(h)) => {
            note = read_note(message.metadata_context.as_ref())
                .or_else(|| note_from_attributes(&message.attributes));
            Event::ResponseHeaders(headers(h))
        }
        Some(Request::ResponseBody(b)) => Event::ResponseBody(body(b)),
        Some(Request::RequestTrailers(_)) => Event::RequestTrailers,
        Some(Request::ResponseTrailers(_)) => Event::ResponseTrailers,
        None => Event::Empty,
    };
    Inbound { event, observing: message.observability_mode, note }
}

/// How a reply changes what Envoy sends next on this stream (an override replaces the filter's whole
/// processing mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeOverride {
    /// The decide filter's mode without the request body (the rules need no SQL).
    WithoutRequestBody,
    /// The decide filter's mode plus the answer's headers (a watched follow-up's answer may name a new
    /// transaction; a learn stream that needs only the answer's status).
    WithResponseHeaders,
    /// The learn filter's mode plus the answer's body, buffered.
    WithResponseBody,
}

/// What the router answers one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Change nothing.
    Pass { phase: Phase, mode: Option<ModeOverride> },
    /// Set these headers on the request (the routing header first, replacing any value the client
    /// sent) and make Envoy pick the route again; a request-body reply overrides what the headers reply
    /// set (Envoy holds a buffered request until then).
    Route {
        phase: Phase,
        headers: Vec<(String, String)>,
        note: Option<LearnNote>,
        mode: Option<ModeOverride>,
    },
    /// Answer the client in the router's name; nothing goes upstream.
    Refuse(LocalReply),
}

impl Reply {
    /// A reply that changes nothing.
    pub fn pass(phase: Phase) -> Reply {
        Reply::Pass { phase, mode: None }
    }

    /// This reply with a processing-mode override (a refusal ends the stream and takes none).
    pub fn with_mode(self, mode: ModeOverride) -> Reply {
        match self {
            Reply::Pass { phase, .. } => Reply::Pass { phase, mode: Some(mode) },
            Reply::Route { phase, headers, note, .. } => {
                Reply::Route { phase, headers, note, mode: Some(mode) }
            }
            refuse => refuse,
        }
    }
}

/// Encodes a reply for Envoy.
pub fn encode(reply: Reply) -> ProcessingResponse {
    match reply {
        Reply::Pass { phase, mode } => with_mode(pass(phase), mode),
        Reply::Route { phase, headers, note, mode } => {
            let response = route(phase, headers);
            let response = match &note {
                Some(note) => with_note(response, note),
                None => response,
            };
            with_mode(response, mode)
        }
        Reply::Refuse(local) => refuse(&local),
    }
}

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

fn set_header(name: String, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: name, raw_value: value.into_bytes(), ..Default::default() }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// A reply to the request-headers or request-body phase that sets `headers` (replacing any value the
/// client sent) and makes Envoy pick the route again.
fn route(phase: Phase, headers: Vec<(String, String)>) -> ProcessingResponse {
    let set_headers = headers.into_iter().map(|(name, value)| set_header(name, value)).collect();
    let common = CommonResponse {
        header_mutation: Some(HeaderMutation { set_headers, remove_headers: vec![] }),
        clear_route_cache: true,
        ..Default::default()
    };
    response(match phase {
        Phase::RequestBody => Response::RequestBody(BodyResponse { response: Some(common) }),
        _ => Response::RequestHeaders(HeadersResponse { response: Some(common) }),
    })
}

/// An answer Envoy sends to the client in the router's name; nothing goes upstream.
fn refuse(local: &LocalReply) -> ProcessingResponse {
    let mut set_headers = vec![set_header("content-type".to_owned(), local.content_type.to_owned())];
    if let Some(seconds) = local.retry_after {
        set_headers.push(set_header("retry-after".to_owned(), seconds.to_string()));
    }
    response(Response::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus { code: i32::from(local.status) }),
        headers: Some(HeaderMutation { set_headers, remove_headers: vec![] }),
        body: local.body.clone(),
        details: local.details.to_owned(),
        ..Default::default()
    }))
}

/// A reply that changes nothing, for a phase the router only observes.
pub fn pass(phase: Phase) -> ProcessingResponse {
    let headers = || HeadersResponse { response: Some(CommonResponse::default()) };
    let body = || BodyResponse { response: Some(CommonResponse::default()) };
    response(match phase {
        Phase::RequestHeaders => Response::RequestHeaders(headers()),
        Phase::ResponseHeaders => Response::ResponseHeaders(headers()),
        Phase::RequestBody => Response::RequestBody(body()),
        Phase::ResponseBody => Response::ResponseBody(body()),
        Phase::RequestTrailers => Response::RequestTrailers(TrailersResponse::default()),
        Phase::ResponseTrailers => Response::ResponseTrailers(TrailersResponse::default()),
    })
}

fn response(response: Response) -> ProcessingResponse {
    ProcessingResponse { response: Some(response), ..Default::default() }
}

/// Adds a processing-mode override. An override replaces the whole mode, so every field is set.
fn with_mode(mut reply: ProcessingResponse, mode: Option<ModeOverride>) -> ProcessingResponse {
    let (request_headers, response_headers, response_body) = match mode {
        None => return reply,
        Some(ModeOverride::WithoutRequestBody) => {
            (HeaderSendMode::Send, HeaderSendMode::Skip, BodySendMode::None)
        }
        Some(ModeOverride::WithResponseHeaders) => {
            (HeaderSendMode::Send, HeaderSendMode::Send, BodySendMode::None)
        }
        Some(ModeOverride::WithResponseBody) => {
            (HeaderSendMode::Skip, HeaderSendMode::Send, BodySendMode::Buffered)
        }
    };
    reply.mode_override = Some(ProcessingMode {
        request_header_mode: request_headers as i32,
        response_header_mode: response_headers as i32,
        request_body_mode: BodySendMode::None as i32,
        response_body_mode: response_body as i32,
        request_trailer_mode: HeaderSendMode::Skip as i32,
        response_trailer_mode: HeaderSendMode::Skip as i32,
    });
    reply
}

/// What the decide filter tells the learn filter about a new statement: the Envoy cluster it chose
/// and whether to watch the query's answers for the transaction it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnNote {
    pub envoy_cluster: String,
    pub watch: bool,
    /// The new query's log line, for the learn filter to write with the query id (`query_log.query_ids`).
    pub log: Option<QueryLine>,
}

fn query_line_to_struct(line: &QueryLine) -> Struct {
    let text = |s: &str| Value { kind: Some(Kind::StringValue(s.to_owned())) };
    let mut fields: Vec<(String, Value)> = vec![
        ("user".into(), text(&line.user)),
        ("source".into(), text(&line.source)),
        ("group".into(), text(&line.group)),
        ("cluster".into(), text(&line.cluster)),
        ("rule".into(), text(&line.rule)),
        ("decision_us".into(), Value { kind: Some(Kind::NumberValue(line.decision_us as f64)) }),
    ];
    if let Some(sql) = &line.sql {
        fields.push(("sql".into(), text(sql)));
    }
    Struct { fields: fields.into_iter().collect() }
}

fn query_line_from_struct(s: &Struct) -> QueryLine {
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

/// Adds `note` to a decide reply as dynamic metadata (Envoy forwards it to the learn filter's stream).
pub fn with_note(mut reply: ProcessingResponse, note: &LearnNote) -> ProcessingResponse {
    let mut fields = vec![
        ("cluster".to_owned(), Value { kind: Some(Kind::StringValue(note.envoy_cluster.clone())) }),
        ("watch".to_owned(), Value { kind: Some(Kind::BoolValue(note.watch)) }),
    ];
    if let Some(line) = &note.log {
        fields.push(("log".to_owned(), Value { kind: Some(Kind::StructValue(query_line_to_struct(line))) }));
    }
    let inner = Struct { fields: fields.into_iter().collect() };
    let outer = [(NOTE_NAMESPACE.to_owned(), Value { kind: Some(Kind::StructValue(inner)) })];
    reply.dynamic_metadata = Some(Struct { fields: outer.into_iter().collect() });
    reply
}

/// A new statement Envoy placed by itself has no note: the cluster that answered, from the attribute
/// the learn filter sends ([`LEARN_CLUSTER_ATTRIBUTE`], under the filter's name), is all there is.
pub fn note_from_attributes(attributes: &HashMap<String, Struct>) -> Option<LearnNote> {
    attributes.values().find_map(|fields| {
        match fields.fields.get(LEARN_CLUSTER_ATTRIBUTE)?.kind.as_ref()? {
            Kind::StringValue(cluster) if !cluster.is_empty() => {
                Some(LearnNote { envoy_cluster: cluster.clone(), watch: false, log: None })
            }
            _ => None,
        }
    })
}

/// The decide filter's note, from the metadata Envoy forwards with a learn stream's message.
pub fn read_note(metadata: Option<&Metadata>) -> Option<LearnNote> {
    let note = metadata?.filter_metadata.get(NOTE_NAMESPACE)?;
    let envoy_cluster = match note.fields.get("cluster")?.kind.as_ref()? {
        Kind::StringValue(cluster) => cluster.clone(),
        _ => return None,
    };
    let watch = matches!(note.fields.get("watch").and_then(|v| v.kind.as_ref()), Some(Kind::BoolValue(true)));
    let log = match note.fields.get("log").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(line)) => Some(query_line_from_struct(line)),
        _ => None,
    };
    Some(LearnNote { envoy_cluster, watch, log })
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
            route(Phase::RequestHeaders, vec![("x-trino-cluster".into(), "trino-a".into())]).response
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
    fn notes_round_trip() {
        let line = QueryLine {
            user: "u".into(),
            decision_us: 7,
            sql: Some("SELECT 1".into()),
            ..Default::default()
        };
        for note in [
            LearnNote { envoy_cluster: "trino-a".into(), watch: false, log: None },
            LearnNote { envoy_cluster: "outbound|1||etl".into(), watch: true, log: Some(line) },
        ] {
            let reply = with_note(pass(Phase::RequestBody), &note);
            let forwarded = Metadata {
                filter_metadata: reply
                    .dynamic_metadata
                    .unwrap()
                    .fields
                    .into_iter()
                    .filter_map(|(k, v)| match v.kind {
                        Some(Kind::StructValue(s)) => Some((k, s)),
                        _ => None,
                    })
                    .collect(),
                ..Default::default()
            };
            assert_eq!(read_note(Some(&forwarded)), Some(note));
        }
        assert_eq!(read_note(None), None);
    }

    #[test]
    fn without_a_note_the_cluster_comes_from_the_attribute() {
        let text = |s: &str| Value { kind: Some(Kind::StringValue(s.to_owned())) };
        let attributes = |value: Value| {
            let fields = [(LEARN_CLUSTER_ATTRIBUTE.to_owned(), value)].into_iter().collect();
            [("envoy.filters.http.ext_proc".to_owned(), Struct { fields })].into_iter().collect()
        };
        assert_eq!(
            note_from_attributes(&attributes(text("trino-b"))),
            Some(LearnNote { envoy_cluster: "trino-b".into(), watch: false, log: None })
        );
        assert_eq!(note_from_attributes(&attributes(text(""))), None);
        assert_eq!(note_from_attributes(&attributes(Value { kind: Some(Kind::BoolValue(true)) })), None);
        assert_eq!(note_from_attributes(&HashMap::new()), None);
    }

    #[test]
    fn modes_replace_the_whole_processing_mode() {
        let mode =
            |m| encode(Reply::Pass { phase: Phase::RequestHeaders, mode: Some(m) }).mode_override.unwrap();
        let body = mode(ModeOverride::WithResponseBody);
        assert_eq!(
            (body.request_header_mode, body.response_body_mode),
            (HeaderSendMode::Skip as i32, BodySendMode::Buffered as i32)
        );
        let watch = mode(ModeOverride::WithResponseHeaders);
        assert_eq!(watch.response_header_mode, HeaderSendMode::Send as i32);
        let skip = mode(ModeOverride::WithoutRequestBody);
        assert_eq!(
            (skip.request_header_mode, skip.response_header_mode),
            (HeaderSendMode::Send as i32, HeaderSendMode::Skip as i32)
        );
        assert!(encode(Reply::pass(Phase::RequestHeaders)).mode_override.is_none());
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
