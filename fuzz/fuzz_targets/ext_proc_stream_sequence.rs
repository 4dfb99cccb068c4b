//! Feeds arbitrary sequences of ext_proc messages — what Envoy sends one stream — to
//! [`ProcessingStream::on_message`] in both roles, on a fresh router per input (the fuzz crate's
//! config: two groups, one restricted, three clusters, statement rules; `@prefixed` as the first line
//! picks the same config with URL-carried placement). A lookup the stream asks for
//! ([`Step::Locate`]) is answered as the service does after discovery: [`ProcessingStream::resume`],
//! with the query learned first when the script said a cluster would know it.
//!
//! The input is a script (see `fuzz/README.md`), one directive per `@` line, its payload on the lines
//! that follow: `Name: value` header lines (values raw bytes), or a body (raw bytes):
//!
//! ```text
//! @stream decide | learn            a new stream on the same router (the first one: decide)
//! @request-headers [eos] [observe]  then header lines (`:method: POST`, `:path: /v1/statement`, ...)
//! @request-body [eos] [observe]     then the SQL
//! @response-headers [eos] [observe] [forward] [note=CLUSTER] [watch] [log]   then header lines;
//!                                   `forward`: the metadata of the last decide reply, as Envoy passes
//!                                   it on; `note=`: a decide note naming CLUSTER
//! @response-body [eos] [observe]    then the body
//! @request-trailers | @response-trailers [observe]
//! @empty [observe]                  a message without a phase
//! @found CLUSTER                    a lookup the next message asks for finds its query on CLUSTER
//! @resume                           resume without a lookup
//! ```
//!
//! Checks, beyond not panicking: every message gets one step; an observed message gets no reply; a
//! reply answers the phase of its message (or is an immediate 4xx/5xx answer to a request phase); a
//! route names a configured cluster's Envoy cluster, and its `:path` and `X-Forwarded-Prefix` rewrites
//! fit the cluster; a learn stream and every answer phase change nothing; a resumed stream does not
//! ask for a second lookup. `FUZZ_TRACE=1` prints each step (for reading an input by hand).

#![no_main]

use std::sync::{Arc, OnceLock};

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest, ProcessingResponse,
};
use envoy_types::pb::google::protobuf::value::Kind;
use libfuzzer_sys::fuzz_target;
use trino_router::coordinators::query_lookup::Found;
use trino_router::envoy::ext_proc::messages::{LearnNote, Phase, pass, with_note};
use trino_router::envoy::ext_proc::service::ProcessingStream;
use trino_router::envoy::ext_proc::stream::Role;
use trino_router::state::router::{Learned, Router, Snapshot};
use trino_router::state::telemetry::QueryLine;

type Step = trino_router::envoy::ext_proc::stream::Step<Box<ProcessingResponse>>;
use trino_router_fuzz::{
    Answer, answer_of, changes_anything, fresh_router, header_lines, header_map, phase_of,
};

fuzz_target!(|data: &[u8]| {
    let router = fresh_router(data.starts_with(b"@prefixed"));
    let mut script = Script { router: router.clone(), stream: None, found: None, forwarded: None };
    for directive in directives(data) {
        script.run(directive);
    }
});

/// One `@` line and the lines after it.
struct Directive<'a> {
    name: &'a [u8],
    words: Vec<&'a [u8]>,
    payload: Vec<u8>,
}

fn directives(data: &[u8]) -> Vec<Directive<'_>> {
    let mut directives: Vec<Directive<'_>> = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        match line.strip_prefix(b"@") {
            Some(rest) => {
                let mut words = rest.split(|&b| b == b' ').filter(|w| !w.is_empty());
                let name = words.next().unwrap_or_default();
                directives.push(Directive { name, words: words.collect(), payload: Vec::new() });
            }
            // Text before the first directive is ignored.
            None => {
                if let Some(directive) = directives.last_mut() {
                    if !directive.payload.is_empty() {
                        directive.payload.push(b'\n');
                    }
                    directive.payload.extend_from_slice(line);
                }
            }
        }
    }
    directives
}

/// A stream and how it began.
struct Stream {
    stream: ProcessingStream,
    role: Role,
}

struct Script {
    router: Arc<Router>,
    stream: Option<Stream>,
    /// The cluster the next lookup finds its query on.
    found: Option<usize>,
    /// The dynamic metadata of the last decide reply that had some.
    forwarded: Option<Metadata>,
}

impl Script {
    fn run(&mut self, directive: Directive<'_>) {
        let has = |word: &str| directive.words.contains(&word.as_bytes());
        let (eos, observing) = (has("eos"), has("observe"));
        let headers = || HttpHeaders {
            headers: Some(header_map(
                header_lines(&directive.payload).iter().map(|(n, v)| (n.as_str(), v.as_slice())),
            )),
            end_of_stream: eos,
            ..Default::default()
        };
        let body = || HttpBody { body: directive.payload.clone(), end_of_stream: eos, ..Default::default() };
        let mut metadata = None;
        let request = match directive.name {
            b"stream" => {
                let role = if has("learn") { Role::Learn } else { Role::Decide };
                self.stream = Some(Stream { stream: ProcessingStream::new(self.router.clone(), role), role });
                return;
            }
            b"found" => {
                let name = directive.words.first().map(|w| String::from_utf8_lossy(w).into_owned());
                self.found = name.and_then(|n| self.router.snapshot().cluster_by_name(&n));
                return;
            }
            b"resume" => {
                // Nothing waits for a lookup here (the driver resumes after every one): a protocol error.
                match self.stream().stream.resume(Found::Nowhere) {
                    Step::Reply(reply) if matches!(answer_of(&reply), Answer::Immediate(500)) => {}
                    other => panic!("resumed without a lookup: {other:?}"),
                }
                return;
            }
            b"request-headers" => Some(Request::RequestHeaders(headers())),
            b"request-body" => Some(Request::RequestBody(body())),
            b"response-headers" => {
                metadata = self.note(&directive.words);
                Some(Request::ResponseHeaders(headers()))
            }
            b"response-body" => Some(Request::ResponseBody(body())),
            b"request-trailers" => Some(Request::RequestTrailers(HttpTrailers::default())),
            b"response-trailers" => Some(Request::ResponseTrailers(HttpTrailers::default())),
            b"empty" => None,
            _ => return, // `@prefixed`, or not a directive
        };
        let phase = request.as_ref().map(phase_of);
        let message = ProcessingRequest {
            request,
            observability_mode: observing,
            metadata_context: metadata,
            ..Default::default()
        };
        let router = self.router.clone();
        let found = self.found.take();
        let stream = self.stream();
        let role = stream.role;
        let step = stream.stream.on_message(message);
        trace(|| format!("@{} -> {}", String::from_utf8_lossy(directive.name), summary(&step)));
        let step = match step {
            Step::Locate(id, _) => {
                assert!(!observing, "an observed message asked for a lookup");
                assert!(
                    matches!(phase, Some(Phase::RequestHeaders | Phase::RequestBody)),
                    "a lookup for {phase:?}"
                );
                let outcome = match found {
                    Some(cluster) => {
                        router.learn(&router.snapshot(), Learned::QueryOwner { query: id, cluster });
                        Found::Owner
                    }
                    None => Found::Nowhere,
                };
                let resumed = stream.stream.resume(outcome);
                trace(|| format!("resumed (found: {found:?}) -> {}", summary(&resumed)));
                assert!(!matches!(resumed, Step::Locate(..)), "a resumed stream asked for a second lookup");
                resumed
            }
            step => step,
        };
        if let Step::Reply(reply) = step {
            assert!(!observing, "an observed message got a reply: {reply:?}");
            check_reply(&router.snapshot(), &reply, phase, role);
            if reply.dynamic_metadata.is_some() {
                self.forwarded = Some(forwarded(&reply));
            }
        }
    }

    fn stream(&mut self) -> &mut Stream {
        let router = &self.router;
        self.stream.get_or_insert_with(|| Stream {
            stream: ProcessingStream::new(router.clone(), Role::Decide),
            role: Role::Decide,
        })
    }

    /// The metadata a response-headers message carries: `forward` (what the last decide reply left),
    /// `note=CLUSTER [watch] [log]`, or none.
    fn note(&self, words: &[&[u8]]) -> Option<Metadata> {
        if words.contains(&&b"forward"[..]) {
            return self.forwarded.clone();
        }
        let cluster = words.iter().find_map(|w| w.strip_prefix(b"note="))?;
        let note = LearnNote {
            envoy_cluster: String::from_utf8_lossy(cluster).into_owned(),
            watch: words.contains(&&b"watch"[..]),
            log: words.contains(&&b"log"[..]).then(QueryLine::default),
        };
        Some(forwarded(&with_note(pass(Phase::RequestBody), &note)))
    }
}

/// With `FUZZ_TRACE` set (when running one input by hand), prints each step to standard error.
fn trace(line: impl FnOnce() -> String) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some()) {
        eprintln!("{}", line());
    }
}

/// The headers a reply sets.
fn headers_set(common: Option<&CommonResponse>) -> Vec<(&str, &[u8])> {
    let set = common.and_then(|c| c.header_mutation.as_ref()).map(|m| m.set_headers.as_slice());
    set.unwrap_or_default()
        .iter()
        .filter_map(|option| option.header.as_ref())
        .map(|h| (h.key.as_str(), h.raw_value.as_slice()))
        .collect()
}

/// A step in a line: the phase answered and the headers set, the immediate status, or the step.
fn summary(step: &Step) -> String {
    let Step::Reply(reply) = step else { return format!("{step:?}") };
    match answer_of(reply) {
        Answer::Phase(phase, common) => {
            let set: Vec<String> = headers_set(common)
                .into_iter()
                .map(|(name, value)| format!("{name}={}", String::from_utf8_lossy(value)))
                .collect();
            let mode = if reply.mode_override.is_some() { " (mode override)" } else { "" };
            format!("{phase:?} reply{mode} {}", set.join(" "))
        }
        other => format!("{other:?}"),
    }
}

/// What Envoy forwards to the next filter's stream from a reply's dynamic metadata, by namespace.
fn forwarded(reply: &ProcessingResponse) -> Metadata {
    let fields = reply.dynamic_metadata.clone().map(|s| s.fields).unwrap_or_default();
    let filter_metadata = fields
        .into_iter()
        .filter_map(|(namespace, value)| match value.kind {
            Some(Kind::StructValue(s)) => Some((namespace, s)),
            _ => None,
        })
        .collect();
    Metadata { filter_metadata, ..Default::default() }
}

/// A reply to a message of `phase` (`None`: a message without one) on a stream that began as `role`.
fn check_reply(snapshot: &Snapshot, reply: &ProcessingResponse, phase: Option<Phase>, role: Role) {
    let config = &snapshot.config;
    match answer_of(reply) {
        Answer::Phase(answered, common) => {
            assert_eq!(Some(answered), phase, "a reply answers its message's phase");
            let request_phase = matches!(answered, Phase::RequestHeaders | Phase::RequestBody);
            if role == Role::Learn || !request_phase {
                assert!(!changes_anything(common), "{role:?} changed {answered:?}: {reply:?}");
            }
            let set = headers_set(common);
            let Some(routed) = set.iter().find(|(name, _)| *name == config.routing_header) else {
                assert!(set.is_empty(), "headers set without a route: {set:?}");
                return;
            };
            let value = std::str::from_utf8(routed.1).expect("an Envoy cluster name is UTF-8");
            let cluster = snapshot
                .cluster_by_header_value(value)
                .unwrap_or_else(|| panic!("routed to {value:?}, not a configured cluster"));
            for (name, value) in &set {
                match *name {
                    ":path" => assert!(value.starts_with(b"/"), "{set:?}"),
                    "x-forwarded-prefix" => assert_eq!(
                        Some(String::from_utf8_lossy(value).into_owned()),
                        config.cluster_prefix(cluster),
                        "{set:?}"
                    ),
                    _ => {}
                }
            }
        }
        Answer::Immediate(status) => {
            assert!((400..600).contains(&status), "immediate answer {status}");
            assert!(
                matches!(phase, None | Some(Phase::RequestHeaders | Phase::RequestBody)),
                "an answer's phase {phase:?} was refused"
            );
        }
        Answer::Other => panic!("a reply without a response the router sends: {reply:?}"),
    }
}
