//! One ext_proc stream (one HTTP request through Envoy) as a state machine: each message Envoy sends
//! goes in (decoded, [`Inbound`]), at most one reply comes out ([`Step`]). No I/O and no protobuf here;
//! [`super::service`] decodes, drives and encodes.
//!
//! Two filter roles share this machine, named by the stream's gRPC metadata ([`Role`]):
//! - **decide** (request headers; a new statement's body when the rules need its SQL): reply with the
//!   routing header or a refusal. A new statement is decided by
//!   [`crate::domain::decision::new_statement::decide`] (through the router, which records it);
//!   everything else by [`crate::domain::decision::follow_up::decide`].
//! - **learn** (enabled on the `POST /v1/statement` routes; the answer's headers and, when worth it, its
//!   buffered body): read the decide filter's note (or the routing header it set), then the new query's
//!   `id` from its first answer, record the owner, and pass everything unchanged. Envoy holds the answer
//!   until the router replied, so the owner is known before the client can ask about the query.
//!
//! Where one filter sends every phase (a hand-made config), the decide role decides on the request
//! headers, passes the other phases unchanged, and learns as well. A filter in observability mode gets
//! no replies at all.
//!
//! The states ([`State`]): `Start` → `Idle` (nothing to follow), `AwaitingSql` (a new statement routed
//! tentatively, its SQL on the way), `AwaitingLookup` (a query no one has placed is being looked up),
//! `WatchingTransaction` (a follow-up whose answer may name a transaction), `Following` (a new query
//! whose first answer names its id).

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use super::messages::{Body, Event, Headers, Inbound, LearnNote, ModeOverride, Phase, Reply};
use crate::coordinators::query_lookup::Found;
use crate::domain::client_request::{
    CLEAR_TRANSACTION_HEADER, ClientRequest, FORWARDED_PREFIX_HEADER, STARTED_TRANSACTION_HEADER,
    TRANSACTION_HEADER, USER_HEADER,
};
use crate::domain::decision::follow_up::{Basis, Decision, FollowUp, split_prefixed};
use crate::domain::decision::new_statement::{NewStatement, Outcome, cluster_prefixed_transaction};
use crate::domain::query_id::{QueryId, QueryIdError};
use crate::domain::refusal::Refusal;
use crate::domain::target::{Target, canonical_statement_path, classify};
use crate::state::router::{Learned, Router, Snapshot, Stage};
use crate::state::telemetry::{self, QueryLine};

/// The header Envoy's router filter adds to every answer that came from upstream.
pub const UPSTREAM_SERVICE_TIME: &str = "x-envoy-upstream-service-time";

/// How often the learn filter reads a new query's first answer on a cluster whose coordinator id is
/// known: at most one whole answer per cluster per this interval is read (and held by Envoy until read);
/// the others only have their status looked at. A restarted coordinator's new id is thus learned within
/// it (or, sooner, by a lookup when a follow-up names it).
pub const LEARN_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// How much of a new query's first answer the router reads to find its `id`. Trino's first answer is
/// about 1 KiB; a larger one is not a Trino first page and is not learned from.
pub const MAX_LEARN_BODY: usize = 64 * 1024;

/// What the driver does after a message.
#[derive(Debug)]
pub enum Step<R = Reply> {
    /// Send this reply to Envoy.
    Reply(R),
    /// Nothing to send; keep reading.
    Quiet,
    /// Nothing more is needed from this stream: close it.
    Finish,
    /// The request names a query the router cannot place: look it up on the clusters (as the request's
    /// user, when it names one), then call [`StreamMachine::resume`] with what was found.
    Locate(QueryId, Option<String>),
}

impl<R> Step<R> {
    /// The same step with its reply turned into another type.
    pub fn map<S>(self, f: impl FnOnce(R) -> S) -> Step<S> {
        match self {
            Step::Reply(reply) => Step::Reply(f(reply)),
            Step::Quiet => Step::Quiet,
            Step::Finish => Step::Finish,
            Step::Locate(id, user) => Step::Locate(id, user),
        }
    }
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

/// Where a stream is.
enum State {
    /// No message yet.
    Start,
    /// Nothing to wait for or follow.
    Idle,
    /// A new statement routed tentatively on its headers: its SQL decides for good.
    AwaitingSql(PendingStatement),
    /// A request waits for the lookup of a query no one has placed.
    AwaitingLookup(Pending),
    /// A follow-up of a transaction-starting query: its answer may name (or end) the transaction.
    WatchingTransaction { snapshot: Arc<Snapshot>, cluster: usize },
    /// A new query whose owner the stream learns from its first answer.
    Following(Learning),
}

/// What waits for a lookup.
enum Pending {
    /// A request naming the query.
    FollowUp(Headers),
    /// A new statement whose SQL names the query.
    Statement { statement: Box<PendingStatement>, sql: String },
}

/// A new statement not decided for good yet.
#[derive(Clone)]
struct PendingStatement {
    request: ClientRequest,
    /// The canonical path to send it on, when the client spelled it otherwise (or under the URL prefix).
    path_rewrite: Option<String>,
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

    /// Whether the answer's body is worth reading: the query is watched, its line waits for its id, or
    /// its cluster's coordinator id was not confirmed within [`LEARN_REFRESH`].
    fn reads_body(&self) -> bool {
        self.watch
            || self.log.is_some()
            || !self.snapshot.clusters[self.cluster].learned_within(LEARN_REFRESH)
    }
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

/// The state machine of one stream.
pub struct StreamMachine {
    router: Arc<Router>,
    /// Set by the stream's metadata, or (when that named none and `envoy_auth` is off) by its first
    /// message (a stream that begins with an answer learns); fixed from then on.
    role: Role,
    /// The role came from the metadata (or must, with `envoy_auth`): the first message cannot change it.
    role_known: bool,
    state: State,
}

impl StreamMachine {
    pub fn new(router: Arc<Router>, role: Role, role_known: bool) -> StreamMachine {
        StreamMachine { router, role, role_known, state: State::Start }
    }

    /// Feeds one message from Envoy.
    pub fn on_message(&mut self, message: Inbound) -> Step {
        let Inbound { event, observing, note } = message;
        if matches!(self.state, State::Start) {
            self.state = State::Idle;
            if matches!(event, Event::ResponseHeaders(_)) && !self.role_known {
                // Envoy Gateway's extProc cannot set the role metadata.
                self.role = Role::Learn;
            }
        }
        let learn = self.role == Role::Learn;
        let (phase, step) = match event {
            Event::RequestHeaders(headers) if observing || learn => {
                self.observe_request(&headers);
                // Only the answer's status matters: Envoy need not hold and send its body.
                let status_only = matches!(&self.state, State::Following(l) if !l.reads_body());
                let step = (!observing && status_only).then(|| {
                    Step::Reply(
                        Reply::pass(Phase::RequestHeaders).with_mode(ModeOverride::WithResponseHeaders),
                    )
                });
                (Phase::RequestHeaders, step)
            }
            Event::RequestHeaders(headers) => (Phase::RequestHeaders, Some(self.decide(headers, None))),
            Event::ResponseHeaders(headers) => {
                (Phase::ResponseHeaders, self.on_response_headers(&headers, note, observing))
            }
            Event::ResponseBody(body) => {
                self.on_response_body(body);
                (Phase::ResponseBody, None)
            }
            Event::RequestBody(body) if !observing && !learn => {
                let step = match std::mem::replace(&mut self.state, State::Idle) {
                    State::AwaitingSql(statement) => {
                        let sql = String::from_utf8_lossy(&body.bytes);
                        Some(self.new_statement(
                            self.router.snapshot(),
                            &statement,
                            Some(&sql),
                            Stage::Final,
                            true,
                        ))
                    }
                    other => {
                        self.state = other;
                        None
                    }
                };
                (Phase::RequestBody, step)
            }
            Event::RequestBody(_) => {
                tracing::debug!("request body passed unread");
                (Phase::RequestBody, None)
            }
            Event::RequestTrailers => (Phase::RequestTrailers, None),
            Event::ResponseTrailers => (Phase::ResponseTrailers, None),
            // A learn stream that makes no sense is dropped: Envoy then lets the request through.
            Event::Empty if observing || learn => return Step::Finish,
            Event::Empty => {
                return self.refuse(&Refusal::ProtocolViolation("an ext_proc message without a phase"));
            }
        };
        match (step, observing) {
            (Some(step), _) => step,
            (None, false) => Step::Reply(Reply::pass(phase)),
            (None, true) if matches!(self.state, State::Following(_)) => Step::Quiet,
            (None, true) => Step::Finish,
        }
    }

    /// After a [`Step::Locate`] lookup: decide again with what was learned. A query still unplaced
    /// after a lookup that could not tell ([`Found::Unknown`]) gets a retryable refusal.
    pub fn resume(&mut self, found: Found) -> Step {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::AwaitingLookup(Pending::Statement { statement, sql }) => {
                self.new_statement(self.router.snapshot(), &statement, Some(&sql), Stage::Final, false)
            }
            State::AwaitingLookup(Pending::FollowUp(headers)) => self.decide(headers, Some(found)),
            other => {
                self.state = other;
                self.refuse(&Refusal::ProtocolViolation("resumed without a lookup"))
            }
        }
    }

    /// Every refusal leaves the stream here: counted, and turned into an answer.
    fn refuse(&self, refusal: &Refusal) -> Step {
        let reply = refusal.reply();
        telemetry::refused(&reply);
        Step::Reply(Reply::Refuse(reply))
    }

    /// Decide role, request headers: a new statement, or any other request. `looked_up`: what a lookup
    /// of the query the request names found (`None`: no lookup yet, one may be made).
    fn decide(&mut self, headers: Headers, looked_up: Option<Found>) -> Step {
        let may_look_up = looked_up.is_none();
        let started = Instant::now();
        let snapshot = self.router.snapshot();
        let config = &snapshot.config;
        let (method, raw_path) = (headers.get(":method").unwrap_or(""), headers.get(":path").unwrap_or(""));
        let prefixed = config.url_prefix.as_deref().and_then(|prefix| split_prefixed(prefix, raw_path));
        // The path as the coordinator knows it.
        let path = prefixed.as_ref().map_or(raw_path, |p| p.rest);
        let target = classify(method, path);
        if target == Target::NewStatement {
            // One path for every spelling of a new statement (`/v1/statement/`, `;x=1`, under the URL
            // prefix): what the rules see, and what the coordinator gets.
            let canonical = canonical_statement_path(path);
            let mut request = ClientRequest::from_headers(headers.pairs(), &config.jwt_user_claim);
            request.path = canonical.clone();
            let statement =
                PendingStatement { request, path_rewrite: (canonical != raw_path).then_some(canonical) };
            if (config.rules.needs_statement() || config.placement_from_sql) && !headers.end_of_stream() {
                // The SQL follows in a body message (envoy-config's new-statement routes send it, and
                // Envoy holds the request until the body reply decides for good). Route tentatively now,
                // in case this Envoy was configured not to send it.
                let step = self.new_statement(snapshot.clone(), &statement, None, Stage::Tentative, false);
                self.state = State::AwaitingSql(statement);
                return step;
            }
            let step = self.new_statement(snapshot.clone(), &statement, None, Stage::Final, false);
            return step.map(|reply| reply.with_mode(ModeOverride::WithoutRequestBody));
        }
        let request = FollowUp { method, path, target, url_cluster: prefixed.as_ref().map(|p| p.cluster) };
        let decision = self.router.decide_follow_up(&snapshot, &request);
        telemetry::follow_up(&request, &decision, may_look_up, started.elapsed());
        let routing = |cluster: usize| {
            (config.routing_header.clone(), config.clusters[cluster].envoy_cluster.to_string())
        };
        match decision {
            Decision::Route { cluster, .. } if prefixed.is_some() => {
                // The URL names the cluster: send it there, on the path without the prefix; the
                // coordinator builds its next URIs from this request, so keep them prefixed.
                let headers = vec![
                    routing(cluster),
                    (":path".to_owned(), path.to_owned()),
                    (FORWARDED_PREFIX_HEADER.to_owned(), config.cluster_prefix(cluster).unwrap_or_default()),
                ];
                Step::Reply(Reply::Route { phase: Phase::RequestHeaders, headers, note: None, mode: None })
            }
            Decision::Route { cluster, basis } => {
                let mut set = vec![routing(cluster)];
                // Clients send their transaction header on every request: the coordinator gets its own id.
                if let Some((_, id)) = cluster_prefixed_transaction(config, headers.get(TRANSACTION_HEADER)) {
                    set.push((TRANSACTION_HEADER.to_owned(), id.to_owned()));
                }
                let reply =
                    Reply::Route { phase: Phase::RequestHeaders, headers: set, note: None, mode: None };
                match basis {
                    Basis::QueryOwner(id) if self.router.affinity().is_watched(&id) => {
                        // This query started a transaction: its answers may name it.
                        self.state = State::WatchingTransaction { snapshot: snapshot.clone(), cluster };
                        Step::Reply(reply.with_mode(ModeOverride::WithResponseHeaders))
                    }
                    _ => Step::Reply(reply),
                }
            }
            Decision::Refuse(refusal) => match (refusal.unplaced_query(), looked_up) {
                (Some(id), None) => {
                    let id = id.clone();
                    let user = headers.get(USER_HEADER).map(str::to_owned);
                    self.state = State::AwaitingLookup(Pending::FollowUp(headers));
                    Step::Locate(id, user)
                }
                (Some(id), Some(Found::Unknown)) => self.refuse(&Refusal::QueryOwnerUnknown(id.clone())),
                _ => self.refuse(&refusal),
            },
        }
    }

    /// A new statement: decided by the router (the pure decision over the live state), written down by
    /// telemetry, turned into a reply here. `sql`: the body, once read. `Stage::Tentative`: a reply a
    /// later one replaces (nothing recorded, no rule headers).
    fn new_statement(
        &mut self,
        snapshot: Arc<Snapshot>,
        pending: &PendingStatement,
        sql: Option<&str>,
        stage: Stage,
        may_look_up: bool,
    ) -> Step {
        let started = Instant::now();
        let statement = NewStatement { request: &pending.request, sql, may_look_up, trace_rules: false };
        let decision = self.router.decide_new_statement(&snapshot, &statement, stage);
        let config = &snapshot.config;
        let log =
            telemetry::new_statement(config, &pending.request, sql, &decision, stage, started.elapsed());
        let cluster = match decision.outcome {
            Outcome::Route { cluster, .. } => cluster,
            Outcome::Refuse(refusal) => return self.refuse(&refusal),
            Outcome::LookUp(id) => {
                let sql = sql.unwrap_or_default().to_owned();
                self.state =
                    State::AwaitingLookup(Pending::Statement { statement: Box::new(pending.clone()), sql });
                let user = Some(pending.request.user.clone()).filter(|u| !u.is_empty());
                return Step::Locate(id, user);
            }
        };
        let envoy_cluster = config.clusters[cluster].envoy_cluster.to_string();
        let mut headers = vec![(config.routing_header.clone(), envoy_cluster.clone())];
        // A rule's headers go only with the final decision: a tentative reply's headers would stay on
        // the request even when the statement's SQL leads elsewhere.
        if let (Some(rule), Stage::Final) = (decision.rules.matched, stage) {
            headers.extend(config.rules.rules()[rule].set_headers.iter().cloned());
        }
        if let Some(cluster_prefix) = config.cluster_prefix(cluster) {
            // The coordinator builds every URI it hands out under this prefix, so every later request of
            // the query names its cluster (and replaces any prefix the client sent).
            headers.push((FORWARDED_PREFIX_HEADER.to_owned(), cluster_prefix));
        }
        if let Some(path) = &pending.path_rewrite {
            headers.push((":path".to_owned(), path.clone()));
        }
        if let Some(id) = decision.transaction_rewrite {
            headers.push((TRANSACTION_HEADER.to_owned(), id));
        }
        if stage == Stage::Final {
            // A decide stream sees the answer only in observability mode, where Envoy sends it all.
            self.state = State::Following(Learning::new(snapshot.clone(), cluster, false, None));
        }
        let phase = if sql.is_some() { Phase::RequestBody } else { Phase::RequestHeaders };
        // The learn filter reads what was decided (and whether to watch) from this note.
        let note = LearnNote { envoy_cluster, watch: decision.starts_transaction, log };
        Step::Reply(Reply::Route { phase, headers, note: Some(note), mode: None })
    }

    /// Learn role, with request headers (a learn filter configured to send them, or observability
    /// mode): a new statement, already routed by the decide filter, is worth following.
    fn observe_request(&mut self, headers: &Headers) {
        let method = headers.get(":method").unwrap_or("");
        let path = headers.get(":path").unwrap_or("");
        if classify(method, path) != Target::NewStatement {
            return;
        }
        let snapshot = self.router.snapshot();
        let routed_to = headers.get(&snapshot.config.routing_header).unwrap_or("");
        match snapshot.cluster_by_header_value(routed_to) {
            Some(cluster) => self.state = State::Following(Learning::new(snapshot, cluster, false, None)),
            None => tracing::warn!(
                routing_header = routed_to,
                "a new statement reached the learn filter without a routing header the router set; \
                 is the decide filter placed before it?"
            ),
        }
    }

    /// An answer's headers: the learn filter's first message (with the decide filter's note), a watched
    /// transaction's answer, or a followed query's status. Asks for the body when it is worth reading.
    fn on_response_headers(
        &mut self,
        headers: &Headers,
        note: Option<LearnNote>,
        observing: bool,
    ) -> Option<Step> {
        if self.role == Role::Learn && !matches!(self.state, State::Following(_)) {
            self.take_note(note);
        }
        self.on_transaction_answer(headers);
        self.on_status(headers);
        match &mut self.state {
            State::Following(learning)
                if self.role == Role::Learn
                    && !observing
                    && !learning.body_requested
                    && learning.reads_body() =>
            {
                learning.body_requested = true;
                Some(Step::Reply(
                    Reply::pass(Phase::ResponseHeaders).with_mode(ModeOverride::WithResponseBody),
                ))
            }
            _ => None,
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
            Some(cluster) => {
                self.state = State::Following(Learning::new(snapshot, cluster, note.watch, note.log))
            }
            None => tracing::warn!(cluster = note.envoy_cluster, "the decide filter's note names no cluster"),
        }
    }

    /// A watched follow-up's answer: it may start (or end) a transaction.
    fn on_transaction_answer(&mut self, headers: &Headers) {
        let State::WatchingTransaction { snapshot, cluster } = &self.state else { return };
        let (snapshot, cluster) = (snapshot.clone(), *cluster);
        self.state = State::Idle;
        let named = |name| headers.get(name).map(str::trim).filter(|t| !t.is_empty());
        if let Some(id) = named(STARTED_TRANSACTION_HEADER) {
            self.router.learn(&snapshot, Learned::TransactionStarted { id: id.to_owned(), cluster });
        }
        if let Some(id) = named(CLEAR_TRANSACTION_HEADER) {
            self.router.learn(&snapshot, Learned::TransactionEnded(id.to_owned()));
        }
    }

    /// A followed query's answer status: a failed delivery or a refusing coordinator takes the cluster
    /// out of rotation; only a successful first page names a query that now exists.
    fn on_status(&mut self, headers: &Headers) {
        let State::Following(learning) = &self.state else { return };
        let status = headers.get(":status").unwrap_or("");
        if matches!(status, "502" | "503" | "504") {
            // Stop sending new queries there at once; the poller brings the cluster back. Envoy marks
            // answers that came from upstream with its service-time header: without it, Envoy answered
            // itself because it could not deliver the query (refused, reset, timed out) — the cluster is
            // down. With it, the coordinator refused (shutting down, overloaded) — alive, its running
            // queries go on.
            if headers.get(UPSTREAM_SERVICE_TIME).is_some() {
                self.router.coordinator_refused(&learning.snapshot, learning.cluster, status);
            } else {
                self.router.delivery_failed(&learning.snapshot, learning.cluster, status);
            }
        }
        if status != "200" || headers.end_of_stream() {
            self.state = State::Idle;
        }
    }

    fn on_response_body(&mut self, body: Body) {
        let State::Following(learning) = &mut self.state else { return };
        if learning.body.len() + body.bytes.len() > MAX_LEARN_BODY {
            tracing::warn!(
                cluster = learning.cluster_name(),
                "first answer of a new query is too large to learn from"
            );
            self.state = State::Idle;
            return;
        }
        if learning.body.is_empty() && body.end_of_stream {
            learning.body = body.bytes; // the common case: the whole page in one message, no copy
        } else {
            learning.body.extend_from_slice(&body.bytes);
        }
        if body.end_of_stream
            && let State::Following(learning) = std::mem::replace(&mut self.state, State::Idle)
        {
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
                    self.router.learn(&learning.snapshot, Learned::TransactionStarting(id.clone()));
                }
                self.router
                    .learn(&learning.snapshot, Learned::QueryOwner { query: id, cluster: learning.cluster })
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
mod tests;
