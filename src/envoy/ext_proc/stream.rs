//! One ext_proc stream (one HTTP request through Envoy) as a small state machine: each message Envoy
//! sends goes in, at most one reply comes out. No I/O here; [`super::service`] drives it.
//!
//! Two filter roles share this machine, named by the stream's gRPC metadata ([`Role`]):
//! - **decide** (request headers only): reply with the routing header or a refusal.
//! - **learn** (enabled on the `POST /v1/statement` routes; request headers, response headers and the
//!   buffered response body): read the routing header the decide filter set, then the new query's `id`
//!   from its first answer, record the owner, and pass everything unchanged. Envoy holds the answer until
//!   the router replied, so the owner is known before the client can ask about the query.
//!
//! Where one filter sends every phase (a hand-made config), the decide role decides on the request
//! headers, passes the other phases unchanged, and learns as well. A filter in observability mode gets
//! no replies at all.

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse,
};
use serde::Deserialize;

use super::messages::{
    LearnNote, Phase, QueryLine, header, header_pairs, pass, read_note, refuse, route, with_note,
    with_response_body, with_response_headers, without_request_body,
};
use crate::domain::client_request::RequestInfo;
use crate::domain::decision::{
    Basis, Decision, Pin, RequestFacts, permitted_routing_group, pin_refused_by, split_prefixed,
};
use crate::domain::query_id::{QueryId, QueryIdError};
use crate::domain::refusal::Refusal;
use crate::domain::rules::LazyStatement;
use crate::domain::statement::Limits;
use crate::domain::target::{Target, classify};
use crate::state::metrics::METRICS;
use crate::state::router::{Router, Snapshot};

/// The routing-group header clients (and trino-gateway users) send.
pub const ROUTING_GROUP_HEADER: &str = "x-trino-routing-group";

/// The header with which a coordinator (`http-server.process-forwarded=true`) prefixes its URIs.
pub const FORWARDED_PREFIX_HEADER: &str = "x-forwarded-prefix";

/// Trino's transaction headers: the client's, and the coordinator's answers.
pub const TRANSACTION_HEADER: &str = "x-trino-transaction-id";
pub const STARTED_TRANSACTION_HEADER: &str = "x-trino-started-transaction-id";
pub const CLEAR_TRANSACTION_HEADER: &str = "x-trino-clear-transaction-id";

/// Separates the Envoy cluster from Trino's own id in a transaction id as clients see it.
pub const TRANSACTION_CLUSTER_SEPARATOR: char = '~';

/// The header Envoy's router filter adds to every answer that came from upstream.
pub const UPSTREAM_SERVICE_TIME: &str = "x-envoy-upstream-service-time";

/// How often the learn filter reads a new query's first answer on a cluster whose coordinator id is
/// known: at most one whole answer per cluster per this interval is read (and held by Envoy until read);
/// the others only have their status looked at. A restarted coordinator's new id is thus learned within
/// it (or, sooner, by discovery when a follow-up names it).
pub const LEARN_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// How much of a new query's first answer the router reads to find its `id`. Trino's first answer is
/// about 1 KiB; a larger one is not a Trino first page and is not learned from.
pub const MAX_LEARN_BODY: usize = 64 * 1024;

/// What the driver does after a message.
#[derive(Debug)]
pub enum Step {
    /// Send this reply to Envoy.
    Reply(Box<ProcessingResponse>),
    /// Nothing to send; keep reading.
    Quiet,
    /// Nothing more is needed from this stream: close it.
    Finish,
    /// The request names a query the router cannot place: look it up on the clusters, then call
    /// [`ProcessingStream::resume`].
    Locate(QueryId),
}

/// Which of the router's filters a stream comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Decide,
    Learn,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Decide => "decide",
            Role::Learn => "learn",
        }
    }

    /// From the value of the role metadata; anything but `learn` decides.
    pub fn from_metadata(value: Option<&str>) -> Role {
        match value {
            Some(v) if v.eq_ignore_ascii_case("learn") => Role::Learn,
            _ => Role::Decide,
        }
    }
}

/// The state of one stream.
pub struct ProcessingStream {
    router: Arc<Router>,
    role: Role,
    /// No message has arrived yet.
    first_message: bool,
    learning: Option<Learning>,
    /// Request headers waiting for a discovery lookup.
    waiting: Option<HttpHeaders>,
    /// A new statement waiting for its SQL (the rules need statement facts, or SQL placement is on).
    statement: Option<RequestInfo>,
    /// A follow-up of a transaction-starting query: its answer may name the transaction.
    transaction_watch: Option<(Arc<Snapshot>, usize)>,
    /// A new statement sent under the URL-placement prefix: the path to send it on.
    path_rewrite: Option<String>,
    /// A new statement (facts and SQL) waiting for the lookup of a query it names.
    waiting_statement: Option<(RequestInfo, String)>,
}

/// A new query whose owner the stream will learn from the response.
struct Learning {
    /// The snapshot the query was routed on, and the cluster's index in it.
    snapshot: Arc<Snapshot>,
    cluster: usize,
    body: Vec<u8>,
    /// The query starts a transaction: watch its follow-ups' answers.
    watch: bool,
    /// Envoy sends the body anyway (the stream's mode asked for it from the start).
    body_requested: bool,
    /// The decide filter's log line for this query, to write with its id.
    log: Option<QueryLine>,
}

impl Learning {
    /// Following a new query on `snapshot.config.clusters[cluster]`; its body not asked for yet.
    fn new(snapshot: Arc<Snapshot>, cluster: usize, watch: bool, log: Option<QueryLine>) -> Learning {
        Learning { snapshot, cluster, body: Vec::new(), watch, body_requested: false, log }
    }

    fn cluster_name(&self) -> &str {
        &self.snapshot.config.clusters[self.cluster].name
    }

    /// Whether the answer's body is worth reading: the query is watched, or its cluster's coordinator id
    /// was not confirmed within [`LEARN_REFRESH`].
    fn reads_body(&self) -> bool {
        self.watch
            || self.log.is_some()
            || !self.snapshot.clusters[self.cluster].learned_within(LEARN_REFRESH)
    }
}

/// The routing group the client asked for, when it may have it; a refusal is logged (and counted) with
/// the final decision.
fn permitted_group<'i>(snapshot: &Snapshot, info: &'i RequestInfo, final_decision: bool) -> Option<&'i str> {
    let requested = Some(info.routing_group.as_str()).filter(|g| !g.is_empty());
    let permitted = permitted_routing_group(&snapshot.config, requested, &info.user, &info.source);
    if let (Some(group), None, true) = (requested, permitted, final_decision) {
        tracing::warn!(
            group,
            user = info.user,
            source = info.source,
            "routing group refused: the group does not admit this user or source"
        );
        METRICS.refused("routing_group_not_allowed");
    }
    permitted
}

/// The part of Trino's `QueryResults` the router reads.
#[derive(Deserialize)]
struct FirstPage<'a> {
    #[serde(borrow)]
    id: &'a str,
}

/// The query a new query's first answer names: `Err` when the body is not a JSON object with a string
/// `id`, `Ok(Err)` when that `id` is not a query id.
pub fn first_page_query_id(body: &[u8]) -> serde_json::Result<Result<QueryId, QueryIdError>> {
    serde_json::from_slice::<FirstPage<'_>>(body).map(|page| QueryId::parse(page.id))
}

impl ProcessingStream {
    pub fn new(router: Arc<Router>, role: Role) -> ProcessingStream {
        ProcessingStream {
            router,
            role,
            first_message: true,
            learning: None,
            waiting: None,
            statement: None,
            transaction_watch: None,
            path_rewrite: None,
            waiting_statement: None,
        }
    }

    /// Feeds one message from Envoy.
    pub fn on_message(&mut self, message: ProcessingRequest) -> Step {
        let observing = message.observability_mode;
        let first_message = std::mem::replace(&mut self.first_message, false);
        let (phase, step) = match message.request {
            Some(Request::RequestHeaders(headers)) if observing || self.role == Role::Learn => {
                self.observe_request(&headers);
                // Only the answer's status matters: Envoy need not hold and send its body.
                let step = (!observing && self.learning.as_ref().is_some_and(|l| !l.reads_body()))
                    .then(|| Step::Reply(Box::new(with_response_headers(pass(Phase::RequestHeaders)))));
                (Phase::RequestHeaders, step)
            }
            Some(Request::RequestHeaders(headers)) => {
                (Phase::RequestHeaders, Some(self.decide(headers, true)))
            }
            Some(Request::ResponseHeaders(headers)) => {
                if first_message {
                    // A stream that begins with an answer is a learn stream, whatever its metadata said
                    // (Envoy Gateway's extProc cannot set the role metadata).
                    self.role = Role::Learn;
                }
                if self.role == Role::Learn && self.learning.is_none() {
                    // The learn filter's first message: the decide filter's note says what it routed.
                    self.take_note(read_note(message.metadata_context.as_ref()));
                }
                self.on_transaction_answer(&headers);
                self.on_response_headers(&headers);
                // Read the body only when it is worth it (the filter's mode leaves it out).
                let step = match self.learning.as_mut() {
                    Some(learning)
                        if self.role == Role::Learn
                            && !observing
                            && !learning.body_requested
                            && learning.reads_body() =>
                    {
                        learning.body_requested = true;
                        Some(Step::Reply(Box::new(with_response_body(pass(Phase::ResponseHeaders)))))
                    }
                    _ => None,
                };
                (Phase::ResponseHeaders, step)
            }
            Some(Request::ResponseBody(body)) => {
                self.on_response_body(body);
                (Phase::ResponseBody, None)
            }
            Some(Request::RequestBody(body)) if !observing && self.role == Role::Decide => {
                let step = self.statement.take().map(|info| {
                    let sql = String::from_utf8_lossy(&body.body);
                    self.new_statement(self.router.snapshot(), &info, &sql, Phase::RequestBody, true, true)
                });
                (Phase::RequestBody, step)
            }
            Some(Request::RequestBody(_)) => {
                tracing::debug!("request body passed unread");
                (Phase::RequestBody, None)
            }
            Some(Request::RequestTrailers(_)) => (Phase::RequestTrailers, None),
            Some(Request::ResponseTrailers(_)) => (Phase::ResponseTrailers, None),
            // A learn stream that makes no sense is dropped: Envoy then lets the request through.
            None if observing || self.role == Role::Learn => return Step::Finish,
            None => {
                let reply = Refusal::ProtocolViolation("an ext_proc message without a phase").reply();
                return Step::Reply(Box::new(refuse(&reply)));
            }
        };
        match (step, observing) {
            (Some(step), _) => step,
            (None, false) => Step::Reply(Box::new(pass(phase))),
            (None, true) if self.learning.is_some() => Step::Quiet,
            (None, true) => Step::Finish,
        }
    }

    /// After a [`Step::Locate`] lookup: decide again with what was learned.
    pub fn resume(&mut self) -> Step {
        if let Some((info, sql)) = self.waiting_statement.take() {
            return self.new_statement(self.router.snapshot(), &info, &sql, Phase::RequestBody, true, false);
        }
        match self.waiting.take() {
            Some(headers) => self.decide(headers, false),
            None => {
                Step::Reply(Box::new(refuse(&Refusal::ProtocolViolation("resumed without a lookup").reply())))
            }
        }
    }

    fn decide(&mut self, headers: HttpHeaders, may_look_up: bool) -> Step {
        let started = Instant::now();
        let snapshot = self.router.snapshot();
        let map = headers.headers.as_ref();
        let (method, path) = (header(map, ":method").unwrap_or(""), header(map, ":path").unwrap_or(""));
        let prefixed = snapshot.config.url_prefix.as_deref().and_then(|prefix| split_prefixed(prefix, path));
        // The path as the coordinator knows it.
        let path = prefixed.as_ref().map_or(path, |p| p.rest);
        if classify(method, path) == Target::NewStatement {
            let mut info = RequestInfo::from_headers(header_pairs(map), &snapshot.config.jwt_user_claim);
            info.path = path.to_owned();
            self.path_rewrite = prefixed.is_some().then(|| path.to_owned());
            let needs_sql = snapshot.config.rules.needs_statement() || snapshot.config.placement_from_sql;
            if needs_sql && !headers.end_of_stream {
                // The SQL follows in a body message (envoy-config's new-statement routes send it, and
                // Envoy holds the request until the body reply decides for good). Route tentatively now,
                // in case this Envoy was configured not to send it.
                let step = self.new_statement(snapshot, &info, "", Phase::RequestHeaders, false, false);
                self.statement = Some(info);
                return step;
            }
            return match self.new_statement(snapshot, &info, "", Phase::RequestHeaders, true, false) {
                Step::Reply(reply) => Step::Reply(Box::new(without_request_body(*reply))),
                other => other,
            };
        }
        let facts = RequestFacts {
            method,
            path,
            routing_group: header(map, ROUTING_GROUP_HEADER),
            rule_group: None,
            pinned: None,
        };
        if let Some(prefixed) = &prefixed {
            // The URL names the cluster: send it there, on the path without the prefix.
            return match self.router.decide_prefixed(&snapshot, prefixed, &facts) {
                Decision::Route { cluster, .. } => {
                    METRICS.placed("url", started.elapsed());
                    Step::Reply(Box::new(route(
                        Phase::RequestHeaders,
                        &snapshot.config.routing_header,
                        &snapshot.config.clusters[cluster].envoy_cluster,
                        &[
                            (":path".to_owned(), prefixed.rest.to_owned()),
                            // The coordinator builds its next URIs from this request: keep them prefixed.
                            (
                                FORWARDED_PREFIX_HEADER.to_owned(),
                                snapshot.config.cluster_prefix(cluster).unwrap_or_default(),
                            ),
                        ],
                    )))
                }
                Decision::Refuse(refusal) => Step::Reply(Box::new(refuse(&refusal.reply()))),
            };
        }
        let decision = self.router.decide(&snapshot, &facts);
        tracing::debug!(method = facts.method, path = facts.path, ?decision, "decided");
        match &decision {
            Decision::Route { basis: Basis::QueryOwner(_), .. } => {
                METRICS.placed("learned", started.elapsed())
            }
            Decision::Refuse(Refusal::QueryNotFound(_)) if !may_look_up => {
                METRICS.placement_misses.inc();
            }
            _ => {}
        }
        match decision {
            Decision::Route { cluster, basis } => {
                // Clients send their transaction header on every request: the coordinator gets its own id.
                let (_, rewrite) = self.transaction(&snapshot, header(map, TRANSACTION_HEADER));
                let extra: Vec<(String, String)> =
                    rewrite.map(|id| (TRANSACTION_HEADER.to_owned(), id)).into_iter().collect();
                let reply = route(
                    Phase::RequestHeaders,
                    &snapshot.config.routing_header,
                    &snapshot.config.clusters[cluster].envoy_cluster,
                    &extra,
                );
                match basis {
                    Basis::QueryOwner(id) if self.router.affinity().is_watched(&id) => {
                        // This query started a transaction: its answers may name it.
                        self.transaction_watch = Some((snapshot, cluster));
                        Step::Reply(Box::new(with_response_headers(reply)))
                    }
                    _ => Step::Reply(Box::new(reply)),
                }
            }
            Decision::Refuse(Refusal::QueryNotFound(id)) if may_look_up => {
                self.waiting = Some(headers);
                Step::Locate(id)
            }
            Decision::Refuse(refusal) => Step::Reply(Box::new(refuse(&refusal.reply()))),
        }
    }

    /// A new statement: the rules pick its group (reading `sql` if they need it), then the decision picks
    /// the cluster. `final_decision`: record the dispatch (a tentative one is replaced by a later reply).
    /// `may_look_up`: a query the SQL names whose cluster is unknown is looked up on the clusters first
    /// ([`Step::Locate`], then [`Self::resume`]).
    fn new_statement(
        &mut self,
        snapshot: Arc<Snapshot>,
        info: &RequestInfo,
        sql: &str,
        phase: Phase,
        final_decision: bool,
        may_look_up: bool,
    ) -> Step {
        let started = Instant::now();
        let limits = Limits { max_bytes: snapshot.config.max_sql_bytes };
        let mut statement = LazyStatement::new(sql, info, limits);
        let rule = self
            .router
            .apply_rules_to(&snapshot, info, &mut statement)
            .map(|i| &snapshot.config.rules.rules()[i]);
        // A statement of a known transaction runs where the transaction lives.
        let (transaction_owner, transaction_rewrite) =
            self.transaction(&snapshot, info.header(TRANSACTION_HEADER));
        let mut pinned = transaction_owner.map(|owner| (owner, Pin::Transaction));
        let mut watch = false;
        if phase == Phase::RequestBody && snapshot.config.placement_from_sql {
            let (starts_transaction, query_ids) = statement.placement();
            watch = starts_transaction;
            if pinned.is_none() {
                let named: Vec<QueryId> = query_ids.iter().filter_map(|id| QueryId::parse(id).ok()).collect();
                pinned = named
                    .iter()
                    .find_map(|id| self.router.affinity().owner_of(id))
                    .map(|owner| (owner, Pin::NamedQuery));
                if let (None, Some(id), true) = (&pinned, named.first(), may_look_up) {
                    // A restarted router or another replica: ask the clusters, then decide.
                    self.waiting_statement = Some((info.clone(), sql.to_owned()));
                    return Step::Locate(id.clone());
                }
            }
        }
        let refused_pin = pinned.as_ref().and_then(|(cluster, pin)| {
            pin_refused_by(&snapshot.config, cluster, &info.user, &info.source)
                .map(|group| (cluster, pin, group))
        });
        if let Some((cluster, pin, group)) = refused_pin {
            tracing::warn!(
                %cluster, %group, ?pin, user = info.user, source = info.source,
                "pinned statement refused: its cluster's group does not admit this user or source"
            );
            METRICS.refused("pinned_group_not_allowed");
            let refusal = Refusal::PinnedGroupNotAllowed { cluster: cluster.clone(), group, pin: *pin };
            return Step::Reply(Box::new(refuse(&refusal.reply())));
        }
        let facts = RequestFacts {
            method: &info.method,
            path: &info.path,
            routing_group: permitted_group(&snapshot, info, final_decision),
            rule_group: rule.map(|r| r.group),
            pinned,
        };
        let decision = if final_decision {
            self.router.decide(&snapshot, &facts)
        } else {
            self.router.decide_tentatively(&snapshot, &facts)
        };
        tracing::debug!(user = %info.user, rule = rule.map(|r| r.name.as_str()), ?decision, final_decision, "new statement");
        match decision {
            Decision::Route { cluster, .. } => {
                let mut log = None;
                if final_decision {
                    let chosen = &snapshot.config.clusters[cluster];
                    let took = started.elapsed();
                    METRICS.new_query(&chosen.group, &chosen.name, rule.map(|r| r.name.as_str()), took);
                    let query_log = snapshot.config.query_log;
                    let line = QueryLine {
                        user: info.user.clone(),
                        source: info.source.clone(),
                        group: chosen.group.to_string(),
                        cluster: chosen.name.to_string(),
                        rule: rule.map(|r| r.name.clone()).unwrap_or_default(),
                        decision_us: took.as_micros() as u64,
                        sql: query_log.sql.then(|| sql.to_owned()),
                    };
                    if query_log.query_ids {
                        log = Some(line); // written by the learn filter, with the query id
                    } else {
                        line.log("");
                    }
                }
                // A rule's headers go only with the final decision: a tentative reply's headers would
                // stay on the request even when the statement's SQL leads elsewhere.
                let mut extra = match rule {
                    Some(rule) if final_decision => rule.set_headers.clone(),
                    _ => Vec::new(),
                };
                if let Some(cluster_prefix) = snapshot.config.cluster_prefix(cluster) {
                    // The coordinator builds every URI it hands out under this prefix, so every later
                    // request of the query names its cluster (and replaces any prefix the client sent).
                    extra.push((FORWARDED_PREFIX_HEADER.to_owned(), cluster_prefix));
                }
                if let Some(path) = &self.path_rewrite {
                    extra.push((":path".to_owned(), path.clone()));
                }
                if let Some(id) = &transaction_rewrite {
                    extra.push((TRANSACTION_HEADER.to_owned(), id.clone()));
                }
                let envoy_cluster = &snapshot.config.clusters[cluster].envoy_cluster;
                let reply = route(phase, &snapshot.config.routing_header, envoy_cluster, &extra);
                // The learn filter reads what was decided (and whether to watch) from this note.
                let note = LearnNote { envoy_cluster: envoy_cluster.to_string(), watch, log };
                let reply = with_note(reply, &note);
                if final_decision {
                    // A decide stream sees the answer only in observability mode, where Envoy sends it all.
                    self.learning = Some(Learning::new(snapshot.clone(), cluster, false, None));
                }
                Step::Reply(Box::new(reply))
            }
            Decision::Refuse(refusal) => Step::Reply(Box::new(refuse(&refusal.reply()))),
        }
    }

    /// Learn role, with request headers (a learn filter configured to send them, or observability
    /// mode): a new statement, already routed by the decide filter, is worth following.
    fn observe_request(&mut self, headers: &HttpHeaders) {
        let map = headers.headers.as_ref();
        let method = header(map, ":method").unwrap_or("");
        let path = header(map, ":path").unwrap_or("");
        if classify(method, path) != Target::NewStatement {
            return;
        }
        let snapshot = self.router.snapshot();
        let routed_to = header(map, &snapshot.config.routing_header).unwrap_or("");
        match snapshot.cluster_by_header_value(routed_to) {
            Some(cluster) => self.learning = Some(Learning::new(snapshot, cluster, false, None)),
            None => tracing::warn!(
                routing_header = routed_to,
                "a new statement reached the learn filter without a routing header the router set; \
                 is the decide filter placed before it?"
            ),
        }
    }

    /// Learn role, no request headers seen: follow the new statement the decide filter's note names.
    fn take_note(&mut self, note: Option<LearnNote>) {
        let Some(note) = note else {
            // The decide filter answered itself (a refusal), or it is not configured to leave notes
            // (`metadata_options`, as envoy-config writes them).
            tracing::debug!("a learn stream began without the decide filter's note: nothing to learn");
            return;
        };
        let snapshot = self.router.snapshot();
        match snapshot.cluster_by_header_value(&note.envoy_cluster) {
            Some(cluster) => self.learning = Some(Learning::new(snapshot, cluster, note.watch, note.log)),
            None => tracing::warn!(cluster = note.envoy_cluster, "the decide filter's note names no cluster"),
        }
    }

    /// The cluster that owns the transaction a request names, and the id to send the coordinator. Envoy
    /// (envoy-config's `response_headers_to_add`) prefixes every `X-Trino-Started-Transaction-Id` with the
    /// Envoy cluster that answered, `{cluster}~{id}`, so the client's later `X-Trino-Transaction-Id` names
    /// the cluster and any replica places it with no memory; the prefix is stripped for the coordinator. An
    /// id without a known prefix is looked up in what this router learned.
    fn transaction(&self, snapshot: &Snapshot, value: Option<&str>) -> (Option<Arc<str>>, Option<String>) {
        let Some(value) = value.map(str::trim).filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("NONE"))
        else {
            return (None, None);
        };
        if let Some((cluster, id)) = value.rsplit_once(TRANSACTION_CLUSTER_SEPARATOR)
            && let Some(index) = snapshot.cluster_by_header_value(cluster)
        {
            return (Some(snapshot.config.clusters[index].name.clone()), Some(id.to_owned()));
        }
        (self.router.affinity().transaction_owner(value), None)
    }

    /// Decide role, a watched follow-up: its answer may start (or end) a transaction.
    fn on_transaction_answer(&mut self, headers: &HttpHeaders) {
        let Some((snapshot, cluster)) = self.transaction_watch.take() else { return };
        let map = headers.headers.as_ref();
        if let Some(id) = header(map, STARTED_TRANSACTION_HEADER).map(str::trim).filter(|t| !t.is_empty()) {
            self.router.affinity().learn_transaction(id, snapshot.config.clusters[cluster].name.clone());
        }
        if let Some(id) = header(map, CLEAR_TRANSACTION_HEADER).map(str::trim).filter(|t| !t.is_empty()) {
            self.router.affinity().forget_transaction(id);
        }
    }

    fn on_response_headers(&mut self, headers: &HttpHeaders) {
        let Some(learning) = self.learning.as_ref() else { return };
        let map = headers.headers.as_ref();
        let status = header(map, ":status").unwrap_or("");
        if matches!(status, "502" | "503" | "504") {
            // Stop sending new queries there at once; the poller brings the cluster back. Envoy marks
            // answers that came from upstream with its service-time header: without it, Envoy answered
            // itself because it could not deliver the query (refused, reset, timed out) — the cluster is
            // down. With it, the coordinator refused (shutting down, overloaded) — alive, its running
            // queries go on.
            if header(map, UPSTREAM_SERVICE_TIME).is_some() {
                self.router.coordinator_refused(&learning.snapshot, learning.cluster, status);
            } else {
                self.router.delivery_failed(&learning.snapshot, learning.cluster, status);
            }
        }
        // Only a successful first page names a query that now exists.
        if status != "200" || headers.end_of_stream {
            self.learning = None;
        }
    }

    fn on_response_body(&mut self, body: HttpBody) {
        let Some(learning) = self.learning.as_mut() else { return };
        if learning.body.len() + body.body.len() > MAX_LEARN_BODY {
            tracing::warn!(
                cluster = learning.cluster_name(),
                "first answer of a new query is too large to learn from"
            );
            self.learning = None;
            return;
        }
        if learning.body.is_empty() && body.end_of_stream {
            learning.body = body.body; // the common case: the whole page in one message, no copy
        } else {
            learning.body.extend_from_slice(&body.body);
        }
        if body.end_of_stream {
            let learning = self.learning.take().expect("checked above");
            self.learn_from(learning);
        }
    }

    fn learn_from(&self, learning: Learning) {
        match first_page_query_id(&learning.body) {
            Ok(Ok(id)) => {
                if let Some(line) = &learning.log {
                    line.log(id.as_str());
                }
                if learning.watch {
                    self.router.affinity().watch(id.clone());
                }
                self.router.learn(&learning.snapshot, id, learning.cluster)
            }
            Ok(Err(e)) => {
                tracing::warn!(cluster = learning.cluster_name(), "first answer names no valid query id: {e}")
            }
            Err(e) => {
                tracing::warn!(
                    cluster = learning.cluster_name(),
                    "first answer is not a Trino QueryResults: {e}"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::{Config, Overrides};
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
    use std::path::Path;

    const ID: &str = "20260101_120000_00001_abcde";

    fn router() -> Arc<Router> {
        let text = "
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-b, url: 'http://127.0.0.1:2', group: adhoc}
  - {name: trino-etl, url: 'http://127.0.0.1:3', group: etl, envoy_cluster: 'outbound|1||etl'}
";
        router_from(text)
    }

    fn router_from(yaml: &str) -> Arc<Router> {
        Arc::new(Router::new(Config::from_yaml(Path::new("t"), yaml, &Overrides::default()).unwrap()))
    }

    fn headers(pairs: &[(&str, &str)], end_of_stream: bool) -> HttpHeaders {
        let headers = pairs
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).into(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect();
        HttpHeaders { headers: Some(HeaderMap { headers }), end_of_stream, ..Default::default() }
    }

    fn msg(request: Request, observing: bool) -> ProcessingRequest {
        ProcessingRequest { request: Some(request), observability_mode: observing, ..Default::default() }
    }

    fn request(method: &str, path: &str, extra: &[(&str, &str)], observing: bool) -> ProcessingRequest {
        let mut pairs = vec![(":method", method), (":path", path)];
        pairs.extend_from_slice(extra);
        msg(Request::RequestHeaders(headers(&pairs, method != "POST")), observing)
    }

    fn status(code: &str, observing: bool) -> ProcessingRequest {
        msg(Request::ResponseHeaders(headers(&[(":status", code)], false)), observing)
    }

    fn body(bytes: &[u8], end: bool, observing: bool) -> ProcessingRequest {
        msg(
            Request::ResponseBody(HttpBody {
                body: bytes.to_vec(),
                end_of_stream: end,
                ..Default::default()
            }),
            observing,
        )
    }

    /// The routing header value a reply sets, or the status of an immediate reply.
    fn summary(step: Step) -> String {
        let Step::Reply(reply) = step else { return format!("{step:?}") };
        match reply.response {
            Some(Response::RequestHeaders(h)) => {
                let mutation = h.response.unwrap().header_mutation.unwrap_or_default();
                match mutation.set_headers.first().and_then(|s| s.header.as_ref()) {
                    Some(h) => format!("route {}", String::from_utf8_lossy(&h.raw_value)),
                    None => "pass request headers".to_owned(),
                }
            }
            Some(Response::ImmediateResponse(r)) => format!("refuse {}", r.status.unwrap().code),
            Some(Response::ResponseHeaders(_)) => "pass response headers".to_owned(),
            Some(Response::ResponseBody(_)) => "pass response body".to_owned(),
            Some(Response::RequestBody(_)) => "pass request body".to_owned(),
            other => format!("{other:?}"),
        }
    }

    /// What Envoy forwards to the learn filter from a decide reply: its dynamic metadata, by namespace.
    fn forwarded(reply: &ProcessingResponse) -> envoy_types::pb::envoy::config::core::v3::Metadata {
        use envoy_types::pb::google::protobuf::value::Kind;
        let note = reply.dynamic_metadata.clone().expect("a routed new statement leaves a note");
        let filter_metadata = note
            .fields
            .into_iter()
            .filter_map(|(namespace, value)| match value.kind {
                Some(Kind::StructValue(s)) => Some((namespace, s)),
                _ => None,
            })
            .collect();
        envoy_types::pb::envoy::config::core::v3::Metadata { filter_metadata, ..Default::default() }
    }

    /// A learn stream's first message: the answer's status, with the note `reply` left.
    fn answer_with_note(reply: &ProcessingResponse) -> ProcessingRequest {
        let mut answer = status("200", false);
        answer.metadata_context = Some(forwarded(reply));
        answer
    }

    fn first_page() -> Vec<u8> {
        format!(r#"{{"id":"{ID}","infoUri":"http://x/ui/query.html?{ID}","nextUri":"http://x/v1/statement/queued/{ID}/y/1","stats":{{"state":"QUEUED"}}}}"#).into_bytes()
    }

    /// A follow-up of a query the router has not placed: it asks for a lookup, and (nothing learned
    /// meanwhile) refuses when resumed.
    fn unplaced_follow_up(router: &Arc<Router>) -> String {
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        let first = summary(s.on_message(follow_up()));
        format!("{first}, then {}", summary(s.resume()))
    }

    fn follow_up() -> ProcessingRequest {
        request("GET", &format!("/v1/statement/queued/{ID}/y/1"), &[], false)
    }

    #[test]
    fn decide_role_replies_once_per_phase() {
        let router = router();
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(summary(s.on_message(request("POST", "/v1/statement", &[], false))), "route trino-a");
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(
            summary(s.on_message(request(
                "POST",
                "/v1/statement",
                &[("x-trino-routing-group", "etl")],
                false
            ))),
            "route outbound|1||etl"
        );
        // The POSTs above were routed tentatively (their SQL never came): no turn was taken.
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(summary(s.on_message(request("GET", "/v1/info", &[], false))), "route trino-a");
        assert_eq!(
            unplaced_follow_up(&router),
            "Locate(QueryId(20260101_120000_00001_abcde)), then refuse 404"
        );
    }

    #[test]
    fn a_lookup_that_finds_the_owner_routes_the_waiting_request() {
        let router = router();
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(summary(s.on_message(follow_up())), "Locate(QueryId(20260101_120000_00001_abcde))");
        router.learn(&router.snapshot(), QueryId::parse(ID).unwrap(), 1); // what discovery does
        assert_eq!(summary(s.resume()), "route trino-b");
    }

    #[test]
    fn resume_without_a_lookup_is_a_protocol_error() {
        let mut s = ProcessingStream::new(router(), Role::Decide);
        assert_eq!(summary(s.resume()), "refuse 500");
    }

    #[test]
    fn client_sent_routing_header_is_overwritten() {
        let router = router();
        let mut s = ProcessingStream::new(router, Role::Decide);
        let spoofed = request("POST", "/v1/statement", &[("x-trino-cluster", "outbound|1||etl")], false);
        assert_eq!(summary(s.on_message(spoofed)), "route trino-a");
    }

    #[test]
    fn learn_role_learns_owner_from_first_page() {
        let router = router();
        let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
        let routed = request("POST", "/v1/statement", &[("x-trino-cluster", "outbound|1||etl")], false);
        assert_eq!(summary(learn.on_message(routed)), "pass request headers");
        assert_eq!(summary(learn.on_message(status("200", false))), "pass response headers");
        assert_eq!(summary(learn.on_message(body(&first_page(), true, false))), "pass response body");
        let mut s = ProcessingStream::new(router, Role::Decide);
        assert_eq!(summary(s.on_message(follow_up())), "route outbound|1||etl");
    }

    #[test]
    fn learn_role_reads_one_body_per_cluster_per_refresh() {
        let router = router();
        let body_mode = |step: Step| {
            let Step::Reply(reply) = step else { panic!("{step:?}") };
            reply.mode_override.map(|m| m.response_body_mode)
        };
        let new_statement = |cluster: &str, extra: &[(&str, &str)]| {
            let mut headers = vec![("x-trino-cluster", cluster)];
            headers.extend_from_slice(extra);
            request("POST", "/v1/statement", &headers, false)
        };
        let mut first = ProcessingStream::new(router.clone(), Role::Learn);
        assert_eq!(body_mode(first.on_message(new_statement("trino-a", &[]))), None, "never learned: read");
        first.on_message(status("200", false));
        first.on_message(body(&first_page(), true, false));
        let none = Some(envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode::None as i32);
        let mut second = ProcessingStream::new(router.clone(), Role::Learn);
        assert_eq!(body_mode(second.on_message(new_statement("trino-a", &[]))), none, "learned just now");
        assert_eq!(summary(second.on_message(status("503", false))), "pass response headers");
        let mut other = ProcessingStream::new(router.clone(), Role::Learn);
        assert_eq!(body_mode(other.on_message(new_statement("trino-b", &[]))), None, "another cluster");
        let mut watched = ProcessingStream::new(router.clone(), Role::Learn);
        let note = LearnNote { envoy_cluster: "trino-a".into(), watch: true, log: None };
        let step = watched.on_message(answer_with_note(&with_note(pass(Phase::RequestBody), &note)));
        assert_eq!(
            body_mode(step),
            Some(envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode::Buffered as i32),
            "a watched query is always read"
        );
    }

    #[test]
    fn a_stream_that_begins_with_an_answer_learns() {
        let router = router();
        let (mut decide, mut learn) = (
            ProcessingStream::new(router.clone(), Role::Decide),
            ProcessingStream::new(router.clone(), Role::Decide),
        );
        decide.on_message(request("POST", "/v1/statement", &[], false));
        let Step::Reply(reply) = decide.on_message(sql_body("SELECT 1")) else { panic!() };
        // No role metadata (Envoy Gateway): still a learn stream, which asks for the first answer's body.
        let Step::Reply(asked) = learn.on_message(answer_with_note(&reply)) else { panic!() };
        assert!(asked.mode_override.is_some(), "{asked:?}");
        learn.on_message(body(&first_page(), true, false));
        assert_eq!(router.affinity().coordinator_ids(), 1, "learned");
    }

    #[test]
    fn observing_learn_role_never_replies() {
        let router = router();
        let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
        let routed = request("POST", "/v1/statement", &[("x-trino-cluster", "trino-b")], true);
        assert_eq!(summary(learn.on_message(routed)), "Quiet");
        assert_eq!(summary(learn.on_message(status("200", true))), "Quiet");
        let page = first_page();
        assert_eq!(summary(learn.on_message(body(&page[..10], false, true))), "Quiet");
        assert_eq!(summary(learn.on_message(body(&page[10..], true, true))), "Finish");
        let mut s = ProcessingStream::new(router, Role::Decide);
        assert_eq!(summary(s.on_message(follow_up())), "route trino-b");
    }

    #[test]
    fn failed_delivery_stops_new_queries_at_once() {
        let router = router();
        let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
        learn.on_message(request("POST", "/v1/statement", &[("x-trino-cluster", "trino-a")], false));
        assert_eq!(summary(learn.on_message(status("503", false))), "pass response headers");
        for _ in 0..4 {
            let mut s = ProcessingStream::new(router.clone(), Role::Decide);
            assert_eq!(summary(s.on_message(request("POST", "/v1/statement", &[], false))), "route trino-b");
        }
        // A coordinator's own 503 (it answered: Envoy's service-time header) means "no new queries here",
        // but its running queries go on.
        let router = self::tests::router();
        let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
        learn.on_message(request("POST", "/v1/statement", &[("x-trino-cluster", "trino-a")], false));
        let refused = headers(&[(":status", "503"), (UPSTREAM_SERVICE_TIME, "3")], false);
        learn.on_message(msg(Request::ResponseHeaders(refused), false));
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(summary(s.on_message(request("POST", "/v1/statement", &[], false))), "route trino-b");
        router.learn(&router.snapshot(), QueryId::parse(ID).unwrap(), 0);
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(summary(s.on_message(follow_up())), "route trino-a", "its queries still reach it");
        // A coordinator's own 4xx says nothing about its health.
        let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
        learn.on_message(request("POST", "/v1/statement", &[("x-trino-cluster", "trino-b")], false));
        learn.on_message(status("400", false));
        let mut s = ProcessingStream::new(router, Role::Decide);
        assert_eq!(summary(s.on_message(request("POST", "/v1/statement", &[], false))), "route trino-b");
    }

    fn router_with_rules() -> Arc<Router> {
        let text = r#"
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-etl, url: 'http://127.0.0.1:3', group: etl}
rules:
  - name: writes
    when: 'statement.kind == "insert"'
    group: etl
    set_headers: {X-Trino-Client-Tags: etl-write}
"#;
        router_from(text)
    }

    fn sql_body(sql: &str) -> ProcessingRequest {
        msg(
            Request::RequestBody(HttpBody {
                body: sql.as_bytes().to_vec(),
                end_of_stream: true,
                ..Default::default()
            }),
            false,
        )
    }

    /// The routing header and extra headers a headers- or body-phase reply sets.
    fn routed(step: Step) -> String {
        let Step::Reply(reply) = step else { return format!("{step:?}") };
        let common = match reply.response {
            Some(Response::RequestHeaders(h)) => h.response,
            Some(Response::RequestBody(b)) => b.response,
            other => return format!("{other:?}"),
        };
        let headers: Vec<String> = common
            .and_then(|c| c.header_mutation)
            .map(|m| m.set_headers)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|h| h.header)
            .map(|h| format!("{}={}", h.key, String::from_utf8_lossy(&h.raw_value)))
            .collect();
        headers.join(" ")
    }

    #[test]
    fn statement_rules_decide_on_the_body() {
        let router = router_with_rules();
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        let post = request("POST", "/v1/statement", &[], false);
        assert_eq!(routed(s.on_message(post)), "x-trino-cluster=trino-a", "tentative, before the SQL");
        assert_eq!(
            routed(s.on_message(sql_body("INSERT INTO hive.s.t VALUES (1)"))),
            "x-trino-cluster=trino-etl x-trino-client-tags=etl-write"
        );
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        s.on_message(request("POST", "/v1/statement", &[], false));
        assert_eq!(routed(s.on_message(sql_body("SELECT 1"))), "x-trino-cluster=trino-a");
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        s.on_message(request("POST", "/v1/statement", &[], false));
        assert_eq!(
            routed(s.on_message(sql_body("\u{0}\u{1}((((' binary"))),
            "x-trino-cluster=trino-a",
            "unreadable SQL routes"
        );
        // Dispatches are counted once per statement, at the final decision.
        assert_eq!(
            router.snapshot().clusters[0].queries_routed() + router.snapshot().clusters[1].queries_routed(),
            3
        );
    }

    /// Regression: the tentative headers reply (SQL not read yet, kind `unknown`) carried the headers of a
    /// rule that matched `unknown`; they stayed on the request though the SQL then led elsewhere.
    #[test]
    fn a_tentative_reply_sets_no_rule_headers() {
        let text = r#"
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-etl, url: 'http://127.0.0.1:3', group: etl}
rules:
  - {name: not-select, when: 'statement.kind != "select"', group: etl, set_headers: {X-Trino-Client-Tags: batch}}
"#;
        let router = router_from(text);
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(
            routed(s.on_message(request("POST", "/v1/statement", &[], false))),
            "x-trino-cluster=trino-etl"
        );
        assert_eq!(routed(s.on_message(sql_body("SELECT 1"))), "x-trino-cluster=trino-a");
        let mut s = ProcessingStream::new(router, Role::Decide);
        s.on_message(request("POST", "/v1/statement", &[], false));
        assert_eq!(
            routed(s.on_message(sql_body("INSERT INTO a.b.c VALUES 1"))),
            "x-trino-cluster=trino-etl x-trino-client-tags=batch"
        );
    }

    #[test]
    fn without_sql_needs_the_headers_decide_and_the_body_is_not_asked_for() {
        let text = "
listen: 127.0.0.1:1
default_group: adhoc
placement_from_sql: false
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
";
        let router = router_from(text);
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        let Step::Reply(reply) = s.on_message(request("POST", "/v1/statement", &[], false)) else { panic!() };
        assert!(
            reply.mode_override.is_some_and(|m| m.request_body_mode == 0),
            "Envoy is told to skip the body"
        );
        assert_eq!(routed(Step::Reply(reply)), "x-trino-cluster=trino-a");
        // Should Envoy send it anyway, it is passed unread.
        assert_eq!(summary(s.on_message(sql_body("INSERT INTO x VALUES 1"))), "pass request body");
        assert_eq!(router.snapshot().clusters[0].queries_routed(), 1);
    }

    /// Runs a new statement through both filters (decide with its SQL, then learn with the first page of
    /// query `id`); returns the cluster it went to.
    fn submit(router: &Arc<Router>, headers: &[(&str, &str)], sql: &str, id: &str) -> String {
        let mut decide = ProcessingStream::new(router.clone(), Role::Decide);
        decide.on_message(request("POST", "/v1/statement", headers, false));
        let Step::Reply(reply) = decide.on_message(sql_body(sql)) else { panic!("no body reply") };
        let metadata = forwarded(&reply);
        let Some(Response::RequestBody(routed)) = reply.response else { panic!("{reply:?}") };
        let set: Vec<(String, String)> = routed
            .response
            .unwrap()
            .header_mutation
            .unwrap()
            .set_headers
            .into_iter()
            .filter_map(|h| h.header)
            .map(|h| (h.key, String::from_utf8_lossy(&h.raw_value).into_owned()))
            .collect();
        let cluster = set[0].1.clone();
        let note = read_note(Some(&metadata)).unwrap();
        assert_eq!(note.envoy_cluster, cluster);
        assert_eq!(note.watch, sql.starts_with("START TRANSACTION"), "{sql}");
        let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
        let mut answer = status("200", false);
        answer.metadata_context = Some(metadata);
        let step = learn.on_message(answer);
        let wants_body = matches!(&step, Step::Reply(r) if r.mode_override.is_some());
        if note.watch {
            assert!(wants_body, "a watched query's answer is read");
        }
        if wants_body {
            let page = format!(r#"{{"id":"{id}","stats":{{}}}}"#);
            learn.on_message(body(page.as_bytes(), true, false));
        }
        cluster
    }

    #[test]
    fn transactions_stay_on_the_cluster_that_started_them() {
        let router = router();
        let start = "20260101_120000_00007_bbbbb";
        assert_eq!(submit(&router, &[], "START TRANSACTION", start), "trino-a");
        // The client polls the query; its answer names the transaction.
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        let poll = request("GET", &format!("/v1/statement/executing/{start}/y/1"), &[], false);
        let Step::Reply(reply) = s.on_message(poll) else { panic!() };
        assert!(
            reply.mode_override.is_some_and(|m| m.response_header_mode == 1),
            "asks for the answer's headers"
        );
        let answer = headers(&[(":status", "200"), ("x-trino-started-transaction-id", "tx-1")], false);
        assert_eq!(
            summary(s.on_message(msg(Request::ResponseHeaders(answer), false))),
            "pass response headers"
        );
        // Every statement of the transaction goes to trino-a, whatever the turn.
        for n in 0..4 {
            let id = format!("20260101_120000_0001{n}_bbbbb");
            assert_eq!(submit(&router, &[("X-Trino-Transaction-Id", "tx-1")], "SELECT 1", &id), "trino-a");
        }
        let others: Vec<String> = (0..4)
            .map(|n| submit(&router, &[], "SELECT 1", &format!("20260101_120000_0002{n}_bbbbb")))
            .collect();
        assert!(others.contains(&"trino-b".to_owned()), "other sessions still spread: {others:?}");
        assert_eq!(
            submit(&router, &[("X-Trino-Transaction-Id", "NONE")], "SELECT 1", "20260101_120000_00031_bbbbb")
                .len(),
            7
        );
    }

    #[test]
    fn kill_query_of_an_unplaced_query_is_looked_up_first() {
        let router = router();
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        s.on_message(request("POST", "/v1/statement", &[], false));
        let sql = "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_eeeee')";
        assert_eq!(summary(s.on_message(sql_body(sql))), "Locate(QueryId(20260101_120000_00001_eeeee))");
        router.learn(&router.snapshot(), QueryId::parse("20260101_120000_00001_eeeee").unwrap(), 1); // discovery
        assert_eq!(routed(s.resume()), "x-trino-cluster=trino-b");
        // Nothing found: placed like any statement, no second lookup.
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        s.on_message(request("POST", "/v1/statement", &[], false));
        let sql = "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_fffff')";
        assert!(matches!(s.on_message(sql_body(sql)), Step::Locate(_)));
        assert!(routed(s.resume()).starts_with("x-trino-cluster=trino-"));
    }

    #[test]
    fn a_cluster_prefixed_transaction_id_is_placed_by_any_replica() {
        // A router that never saw the transaction start (another replica, or restarted).
        let router = router();
        for n in 0..3 {
            let id = format!("20260101_120000_0004{n}_bbbbb");
            let mut decide = ProcessingStream::new(router.clone(), Role::Decide);
            decide.on_message(request(
                "POST",
                "/v1/statement",
                &[("x-trino-transaction-id", "outbound|1||etl~tx-9")],
                false,
            ));
            assert_eq!(
                routed(decide.on_message(sql_body("SELECT 1"))),
                "x-trino-cluster=outbound|1||etl x-trino-transaction-id=tx-9",
                "statement {id} goes to the transaction's cluster with the coordinator's own id"
            );
        }
        // Follow-ups carry the header too: the coordinator gets its own id.
        router.learn(&router.snapshot(), QueryId::parse(ID).unwrap(), 2);
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        let poll = request(
            "GET",
            &format!("/v1/statement/executing/{ID}/y/1"),
            &[("x-trino-transaction-id", "outbound|1||etl~tx-9")],
            false,
        );
        assert_eq!(routed(s.on_message(poll)), "x-trino-cluster=outbound|1||etl x-trino-transaction-id=tx-9");
        // An unknown prefix is not a placement: the id is left as is.
        let mut decide = ProcessingStream::new(router, Role::Decide);
        decide.on_message(request(
            "POST",
            "/v1/statement",
            &[("x-trino-transaction-id", "nope~tx-1")],
            false,
        ));
        assert!(!routed(decide.on_message(sql_body("SELECT 1"))).contains("x-trino-transaction-id"));
    }

    #[test]
    fn kill_query_goes_to_the_query_s_cluster() {
        let router = router();
        router.learn(&router.snapshot(), QueryId::parse("20260101_120000_00001_ccccc").unwrap(), 1);
        for n in 0..3 {
            let sql =
                "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_ccccc', message => 'x')";
            assert_eq!(submit(&router, &[], sql, &format!("20260101_120000_0000{n}_ddddd")), "trino-b");
        }
    }

    #[test]
    fn url_placement_names_the_cluster_in_every_uri() {
        let text = "
listen: 127.0.0.1:1
default_group: adhoc
url_prefix: /_trino/
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-b, url: 'http://127.0.0.1:2', group: adhoc}
";
        let router = router_from(text);
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        s.on_message(request("POST", "/v1/statement", &[("x-forwarded-prefix", "/evil")], false));
        assert_eq!(
            routed(s.on_message(sql_body("SELECT 1"))),
            "x-trino-cluster=trino-a x-forwarded-prefix=/_trino/trino-a"
        );
        // Follow-ups and spooled segments name their cluster: no lookup, the prefix is stripped.
        for path in [
            "/_trino/trino-b/v1/statement/executing/20260101_120000_00001_zzzzz/y/1",
            "/_trino/trino-b/v1/spooled/download/s3cr3t",
        ] {
            let mut s = ProcessingStream::new(router.clone(), Role::Decide);
            let rest = path.strip_prefix("/_trino/trino-b").unwrap();
            assert_eq!(
                routed(s.on_message(request("GET", path, &[], false))),
                format!("x-trino-cluster=trino-b :path={rest} x-forwarded-prefix=/_trino/trino-b")
            );
        }
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(summary(s.on_message(request("GET", "/_trino/nope/v1/info", &[], false))), "refuse 404");
        // A new statement under a cluster's prefix is still placed by the router, not by its URL.
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        s.on_message(request("POST", "/_trino/trino-a/v1/statement", &[], false));
        assert_eq!(
            routed(s.on_message(sql_body("SELECT 1"))),
            "x-trino-cluster=trino-b x-forwarded-prefix=/_trino/trino-b :path=/v1/statement"
        );
    }

    #[test]
    fn roles_from_metadata() {
        assert_eq!(Role::from_metadata(Some("learn")), Role::Learn);
        assert_eq!(Role::from_metadata(Some("LEARN")), Role::Learn);
        assert_eq!(Role::from_metadata(Some("decide")), Role::Decide);
        assert_eq!(Role::from_metadata(Some("other")), Role::Decide);
        assert_eq!(Role::from_metadata(None), Role::Decide);
    }

    #[test]
    fn one_filter_with_every_phase_decides_and_learns() {
        let router = router();
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(summary(s.on_message(request("POST", "/v1/statement", &[], false))), "route trino-a");
        assert_eq!(
            summary(s.on_message(msg(Request::RequestBody(HttpBody::default()), false))),
            "pass request body"
        );
        assert_eq!(summary(s.on_message(status("200", false))), "pass response headers");
        assert_eq!(summary(s.on_message(body(&first_page(), true, false))), "pass response body");
        let mut s = ProcessingStream::new(router, Role::Decide);
        assert_eq!(summary(s.on_message(follow_up())), "route trino-a");
    }

    #[test]
    fn nothing_is_learned_from_failures_and_garbage() {
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("503", first_page()),                                   // Envoy's or the coordinator's error
            ("400", first_page()),
            ("200", b"".to_vec()),                                   // empty
            ("200", b"\xff\xfe\x00garbage".to_vec()),               // binary
            ("200", br#"{"id": 7}"#.to_vec()),                       // wrong type
            ("200", br#"{"id": "../../x"}"#.to_vec()),               // not a query id
            ("200", br#"{"nextUri": "x"}"#.to_vec()),                // no id
            ("200", format!(r#"{{"id":"{ID}""#).into_bytes()),       // truncated
            ("200", vec![b' '; MAX_LEARN_BODY + 1]),                 // too large
        ];
        for (code, page) in cases {
            let router = router();
            let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
            learn.on_message(request("POST", "/v1/statement", &[("x-trino-cluster", "trino-a")], false));
            learn.on_message(status(code, false));
            learn.on_message(body(&page, true, false));
            assert_eq!(
                unplaced_follow_up(&router),
                "Locate(QueryId(20260101_120000_00001_abcde)), then refuse 404",
                "status {code}, body {:?}",
                String::from_utf8_lossy(&page[..page.len().min(40)])
            );
        }
    }

    #[test]
    fn learn_role_ignores_what_it_need_not_follow() {
        let router = router();
        // Not a new statement: the learn stream closes at once.
        let mut learn = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(summary(learn.on_message(request("GET", "/v1/info", &[], true))), "Finish");
        // A new statement without a routing header the router knows: nothing to learn.
        let mut learn = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(
            summary(learn.on_message(request(
                "POST",
                "/v1/statement",
                &[("x-trino-cluster", "elsewhere")],
                true
            ))),
            "Finish"
        );
        // A stream that ends before the body.
        let mut learn = ProcessingStream::new(router, Role::Decide);
        learn.on_message(request("POST", "/v1/statement", &[("x-trino-cluster", "trino-a")], true));
        assert_eq!(
            summary(
                learn.on_message(msg(Request::ResponseHeaders(headers(&[(":status", "200")], true)), true))
            ),
            "Finish"
        );
    }

    #[test]
    fn malformed_messages_get_defined_answers() {
        let router = router();
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(summary(s.on_message(ProcessingRequest::default())), "refuse 500");
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        let empty = msg(Request::RequestHeaders(HttpHeaders::default()), false);
        assert_eq!(summary(s.on_message(empty)), "route trino-a"); // no path: the default group
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        let binary = msg(
            Request::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![HeaderValue {
                        key: ":path".into(),
                        raw_value: b"/v1/query/\xff".to_vec(),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            false,
        );
        assert_eq!(summary(s.on_message(binary)), "route trino-b"); // a path that is not UTF-8 names no query
        let mut s = ProcessingStream::new(router, Role::Decide);
        assert_eq!(
            summary(s.on_message(ProcessingRequest { observability_mode: true, ..Default::default() })),
            "Finish"
        );
    }
}
