//! The HTTP surface: axum handlers that look a query up, call its state machine ([`crate::queries`])
//! and render the answer ([`crate::results`]). No lock is held across an await: a handler that must
//! wait for a delayed page drops the query's lock, sleeps, and asks again.
//!
//! Routes (unknown query ids, wrong slugs and unissued tokens: 404 `Query not found`, text/plain):
//! - `POST /v1/statement` — body = SQL; empty body: 400.
//! - `GET|DELETE /v1/statement/queued/{id}/{slug}/{token}`
//! - `GET|HEAD|DELETE /v1/statement/executing/{id}/{slug}/{token}` (`?maxWait=` honoured up to 1 s,
//!   `targetResultSize` ignored; HEAD is the spooling heartbeat: 200, no body).
//! - `DELETE /v1/statement/executing/partialCancel/{id}/{stage}/{slug}/{token}` — 204, no effect.
//! - Spooled segments ([`crate::spooling`], `COORDINATOR_PROXY` mode):
//!   `GET /v1/spooled/download/{identifier}` (200, `application/octet-stream`, the rows' JSON),
//!   `GET /v1/spooled/ack/{identifier}` (200, empty; the segment is forgotten), and the older
//!   `GET|DELETE /v1/spooled/segments/{identifier}` (download | ack). Each needs the segment's `X-Trino-Emulator-Segment-Key` header: a known identifier without it
//!   (or with another key) is 400; an identifier this process did not issue, or acknowledged, or that
//!   expired is 404 `Segment not found` (text/plain, counted as `spooled_not_found`, not `not_found`).
//! - `GET|DELETE /v1/query/{id}`, `PUT /v1/query/{id}/killed|preempted` (200, or 409 when already
//!   done), `GET /ui/api/query/{id}` (QueryInfo-like JSON), `GET /ui/query.html?{id}` (HTML).
//! - `GET /v1/info` (`starting` per `--starting-seconds` / `PUT /v1/emulator/starting`), `/v1/info/state`
//!   (the node state, ACTIVE unless `PUT /v1/emulator/state` changed it), `/v1/status`.
//! - While the node state is not ACTIVE, `POST /v1/statement` creates nothing: 503 `server is shutting
//!   down` (text/plain; a 503 tells the clients the query was not submitted, so they may retry
//!   elsewhere), counted as `rejected_new_queries`. Queries already known carry on normally.
//! - Web UI ([`crate::ui`]): `POST /ui/login` (form; 303 + `Trino-UI-Token` cookie, or 303 to
//!   `/ui/login.html` when refused), `GET /ui/logout`, `GET /ui/login.html`, `GET /ui/` (303 to the
//!   login page without a session), `GET /ui/api/stats` (Trino's `ClusterStats` JSON; 401 with
//!   `WWW-Authenticate: Trino-Form-Login` without a valid session).
//! - Emulator-only: `GET /v1/emulator/queries` (every known query, oldest first: id, state, canceled,
//!   error name, sql, user, host, x-trino headers, session, transaction, per-query request counts, the
//!   negotiated `data_encoding` and spooled `segments` issued / downloaded / acked),
//!   `GET /v1/emulator/counters` (requests by kind), `GET /v1/emulator/info` (name, coordinator id,
//!   queries and spooled segments held, address, node state, starting), `PUT /v1/emulator/state` (body:
//!   a JSON string naming a node state, e.g. `"SHUTTING_DOWN"`; 200 `{"state", "previous"}`, 400
//!   otherwise), `PUT /v1/emulator/starting` (body `true` or `false`; 200 `{"starting"}`, 400 otherwise),
//!   `GET|PUT /v1/emulator/fault` (a coordinator that hangs, answers garbage or is slow: [`crate::fault`]).
//! - Anything else: 404 `Not found`.
//!
//! URIs handed out start with `http://{Host}`; with `--process-forwarded`, `X-Forwarded-Proto`, `-Host`,
//! `-Port` and `-Prefix` are honoured as Trino does with `http-server.process-forwarded=true`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::{Value, json};

use crate::fault::{self, Faults};
use crate::node::{self, NodeControl, NodeState};
use crate::queries::{Page, Query, Reject, Step};
use crate::query_id::CoordinatorId;
use crate::registry::{Entry, Registry, RequestCounts, Submitted};
use crate::results::{Context, Rendered, Spooling, render};
use crate::rows::PageRows;
use crate::session::{claimed_transaction, parse_session_header};
use crate::slug::SlugContext;
use crate::spooling::{ENCODING_HEADER, KEY_HEADER, Refusal, SegmentData, Segments};
use crate::ui::{self, LoginForm, Sessions};

/// The largest request body read (axum's default is 2 MB). Trino's HTTP server sets no limit of its own;
/// statements are limited by `query.max-length`, which the emulator does not apply (as when it is raised).
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// Trino caps `maxWait` at one second (`MAX_WAIT_TIME`), and waits that long by default.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Requests served, by kind (`/v1/emulator/counters`). `statement_post` counts every POST, also the
/// ones refused: `rejected_new_queries` (node not ACTIVE) and `starting_queries` (accepted while
/// `/v1/info` said `starting`) are subsets of it. `ui_logins` / `ui_login_failures`: accepted / refused
/// `POST /ui/login`; `ui_stats`: stats answered; `ui_unauthorized`: 401s from `/ui/api/`; `ui_pages`:
/// the login page, `/ui/` and logout. `spooled_downloads` / `spooled_acks`: segments served /
/// acknowledged; `spooled_not_found`: segment requests answered 404; `spooled_bad_key`: 400s for a
/// missing or wrong segment key.
#[derive(Debug, Default)]
pub struct Counters {
    statement_posts: AtomicU64,
    queued_gets: AtomicU64,
    executing_gets: AtomicU64,
    executing_heads: AtomicU64,
    statement_deletes: AtomicU64,
    partial_cancels: AtomicU64,
    query_api: AtomicU64,
    node_api: AtomicU64,
    emulator_api: AtomicU64,
    not_found: AtomicU64,
    gone: AtomicU64,
    unrouted: AtomicU64,
    rejected_new_queries: AtomicU64,
    starting_queries: AtomicU64,
    ui_logins: AtomicU64,
    ui_login_failures: AtomicU64,
    ui_stats: AtomicU64,
    ui_unauthorized: AtomicU64,
    ui_pages: AtomicU64,
    spooled_downloads: AtomicU64,
    spooled_acks: AtomicU64,
    spooled_not_found: AtomicU64,
    spooled_bad_key: AtomicU64,
}

impl Counters {
    fn to_json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "statement_post": get(&self.statement_posts),
            "queued_get": get(&self.queued_gets),
            "executing_get": get(&self.executing_gets),
            "executing_head": get(&self.executing_heads),
            "statement_delete": get(&self.statement_deletes),
            "partial_cancel": get(&self.partial_cancels),
            "query_api": get(&self.query_api),
            "node_api": get(&self.node_api),
            "emulator_api": get(&self.emulator_api),
            "not_found": get(&self.not_found),
            "gone": get(&self.gone),
            "unrouted": get(&self.unrouted),
            "rejected_new_queries": get(&self.rejected_new_queries),
            "starting_queries": get(&self.starting_queries),
            "ui_logins": get(&self.ui_logins),
            "ui_login_failures": get(&self.ui_login_failures),
            "ui_stats": get(&self.ui_stats),
            "ui_unauthorized": get(&self.ui_unauthorized),
            "ui_pages": get(&self.ui_pages),
            "spooled_downloads": get(&self.spooled_downloads),
            "spooled_acks": get(&self.spooled_acks),
            "spooled_not_found": get(&self.spooled_not_found),
            "spooled_bad_key": get(&self.spooled_bad_key),
        })
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct App {
    pub name: String,
    pub coordinator_id: CoordinatorId,
    pub registry: Registry,
    pub counters: Counters,
    pub started: Instant,
    /// Node state and `starting`.
    pub node: NodeControl,
    /// Web UI sessions.
    pub sessions: Sessions,
    /// Spooled segments handed out and not yet acknowledged.
    pub segments: Segments,
    /// The rows of data pages (and spooled segments), rendered once per shape.
    pub rows: PageRows,
    pub process_forwarded: bool,
    /// `https` when serving TLS (`--tls-cert`), else `http`: the scheme of URIs handed out (unless
    /// forwarded headers say otherwise).
    pub scheme: &'static str,
    /// `host:port` the emulator listens on: the base URI when a request has no Host header.
    pub local_address: String,
}

pub fn router(app: Arc<App>) -> Router {
    let faults = Arc::new(Faults::default());
    let fault_control = Router::new()
        .route("/v1/emulator/fault", get(fault::get_fault).put(fault::put_fault))
        .with_state(faults.clone());
    Router::new()
        .route("/v1/statement", post(post_statement))
        .route("/v1/statement/queued/{id}/{slug}/{token}", get(get_queued).delete(delete_queued))
        .route(
            "/v1/statement/executing/{id}/{slug}/{token}",
            get(get_executing).head(head_executing).delete(delete_executing),
        )
        .route("/v1/statement/executing/partialCancel/{id}/{stage}/{slug}/{token}", delete(partial_cancel))
        .route("/v1/spooled/download/{identifier}", get(download_segment))
        .route("/v1/spooled/ack/{identifier}", get(ack_segment))
        .route("/v1/spooled/segments/{identifier}", get(download_segment).delete(ack_segment))
        .route("/v1/query/{id}", get(query_info).delete(delete_query))
        .route("/v1/query/{id}/{action}", put(kill_query))
        .route("/ui/api/query/{id}", get(query_info))
        .route("/ui/query.html", get(query_html))
        .route("/v1/info", get(info))
        .route("/v1/info/state", get(info_state))
        .route("/v1/status", get(status))
        .route("/v1/emulator/queries", get(emulator_queries))
        .route("/v1/emulator/counters", get(emulator_counters))
        .route("/v1/emulator/info", get(emulator_info))
        .route("/v1/emulator/state", put(put_state))
        .route("/v1/emulator/starting", put(put_starting))
        .route("/ui/login", post(ui_login))
        .route("/ui/logout", get(ui_logout))
        .route("/ui/login.html", get(ui_login_page))
        .route("/ui/", get(ui_home))
        .route("/ui/api/stats", get(ui_stats))
        .fallback(unrouted)
        .with_state(app)
        .merge(fault_control)
        .layer(axum::middleware::from_fn_with_state(faults, fault::apply))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY))
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn reject(app: &App, reason: Reject) -> Response {
    match reason {
        Reject::NotFound => not_found(app),
        Reject::Gone => {
            bump(&app.counters.gone);
            text(StatusCode::GONE, "Gone")
        }
    }
}

fn not_found(app: &App) -> Response {
    bump(&app.counters.not_found);
    text(StatusCode::NOT_FOUND, "Query not found")
}

fn json_value(value: &Value) -> Response {
    (StatusCode::OK, [(CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// A response body sent as a few pieces, one after the other, with its exact length (so it goes out with
/// `Content-Length`, as one piece would).
struct Pieces(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.get_mut().0.pop_front().map(|piece| Ok(hyper::body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0.iter().map(|piece| piece.len() as u64).sum())
    }
}

fn query_results(rendered: Rendered<'_>) -> Response {
    let body = match <[Bytes; 1]>::try_from(rendered.body) {
        Ok([one]) => Body::from(one),
        Err(pieces) => Body::new(Pieces(pieces.into())),
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for header in rendered.headers {
        if let Ok(value) = HeaderValue::from_str(&header.value) {
            headers.append(HeaderName::from_static(header.name), value);
        }
    }
    response
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The base of every URI handed out, from the request's Host (and forwarded headers when enabled).
fn base_uri(app: &App, headers: &HeaderMap) -> String {
    let forwarded = |name| {
        app.process_forwarded
            .then(|| header(headers, name))
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    base_from(
        header(headers, HOST.as_str()),
        &app.local_address,
        app.scheme,
        [
            forwarded("x-forwarded-proto"),
            forwarded("x-forwarded-host"),
            forwarded("x-forwarded-port"),
            forwarded("x-forwarded-prefix"),
        ],
    )
}

/// `scheme://host[:port][/prefix]` from the Host header (or `fallback`), the listener's own scheme and
/// forwarded `[proto, host, port, prefix]`.
fn base_from(
    host: Option<&str>,
    fallback: &str,
    own_scheme: &str,
    [proto, fwd_host, port, prefix]: [Option<&str>; 4],
) -> String {
    let scheme = proto.unwrap_or(own_scheme);
    let mut authority = fwd_host.or(host).unwrap_or(fallback).to_owned();
    if let Some(port) = port {
        let host_only = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => {
                h.to_owned()
            }
            _ => authority.clone(),
        };
        authority = format!("{host_only}:{port}");
    }
    let prefix = prefix.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
    match prefix {
        Some(p) => format!("{scheme}://{authority}/{p}"),
        None => format!("{scheme}://{authority}"),
    }
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn render_page(app: &App, base: &str, entry: &Entry, query: &Query, page: &Page) -> Response {
    let now = Instant::now();
    let Some(spooling) = &entry.spooling else {
        let ctx = Context { base, rows: &app.rows, now, spooling: None };
        return query_results(render(&ctx, &entry.id, query, page));
    };
    let segment = |index: u32, data: SegmentData| {
        spooling.segment_for(index, || app.segments.issue(data, &spooling.counts, now, unix_ms()))
    };
    let spooling = Spooling { encoding: spooling.encoding, hint: spooling.hint, segment: &segment };
    let ctx = Context { base, rows: &app.rows, now, spooling: Some(&spooling) };
    query_results(render(&ctx, &entry.id, query, page))
}

async fn post_statement(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    bump(&app.counters.statement_posts);
    if !app.node.accepts_queries() {
        bump(&app.counters.rejected_new_queries);
        tracing::debug!(state = app.node.state().as_str(), "new query refused");
        return text(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
    }
    if body.is_empty() {
        return text(StatusCode::BAD_REQUEST, "SQL statement is empty");
    }
    let Ok(sql) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "SQL statement is not valid UTF-8");
    };
    let trino_headers = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-trino-"))
        .map(|(name, value)| {
            (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .collect();
    let submitted = Submitted {
        sql,
        user: header(&headers, "x-trino-user").map(str::to_owned),
        host: header(&headers, HOST.as_str()).map(str::to_owned),
        headers: trino_headers,
        session: header(&headers, "x-trino-session").map(parse_session_header).unwrap_or_default(),
        transaction: claimed_transaction(header(&headers, "x-trino-transaction-id")).map(str::to_owned),
        data_encoding: header(&headers, ENCODING_HEADER).map(str::to_owned),
    };
    if app.node.starting(app.started.elapsed()) {
        bump(&app.counters.starting_queries);
    }
    let entry = app.registry.create(submitted, Instant::now(), unix_ms());
    tracing::debug!(id = %entry.id, "query created");
    let base = base_uri(&app, &headers);
    let query = entry.lock();
    render_page(&app, &base, &entry, &query, &Query::first_page())
}

/// A statement URI's parts, with the token parsed; `None` when the token is not a number.
fn statement_uri(
    app: &App,
    (id, slug, token): (String, String, String),
) -> Option<(Arc<Entry>, String, u64)> {
    let token = token.parse().ok()?;
    Some((app.registry.get(&id)?, slug, token))
}

async fn get_queued(
    State(app): State<Arc<App>>,
    Path(parts): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    bump(&app.counters.queued_gets);
    let Some((entry, slug, token)) = statement_uri(&app, parts) else {
        return not_found(&app);
    };
    RequestCounts::bump(&entry.requests.queued_gets);
    let base = base_uri(&app, &headers);
    let mut query = entry.lock();
    match query.queued(&slug, token, Instant::now()) {
        Ok(page) => render_page(&app, &base, &entry, &query, &page),
        Err(reason) => reject(&app, reason),
    }
}

/// The `maxWait` query parameter (airlift duration: `500ms`, `1s`, ...), capped at [`MAX_WAIT`].
fn max_wait(raw_query: Option<&str>) -> Duration {
    raw_query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("maxWait="))
        .and_then(parse_duration)
        .map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let value: f64 = text[..split].trim().parse().ok()?;
    let unit = match &text[split..] {
        "ns" => 1e-9,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(value * unit).ok()
}

async fn get_executing(
    State(app): State<Arc<App>>,
    Path(parts): Path<(String, String, String)>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    bump(&app.counters.executing_gets);
    let Some((entry, slug, token)) = statement_uri(&app, parts) else {
        return not_found(&app);
    };
    RequestCounts::bump(&entry.requests.executing_gets);
    let base = base_uri(&app, &headers);
    let wait_until = Instant::now() + max_wait(raw_query.as_deref());
    loop {
        let ready_at = {
            let mut query = entry.lock();
            match query.executing(&slug, token, Instant::now(), wait_until) {
                Ok(Step::Page(page)) => return render_page(&app, &base, &entry, &query, &page),
                Ok(Step::Wait(at)) => at,
                Err(reason) => return reject(&app, reason),
            }
        };
        tokio::time::sleep_until(ready_at.into()).await;
    }
}

async fn head_executing(
    State(app): State<Arc<App>>,
    Path(parts): Path<(String, String, String)>,
) -> Response {
    bump(&app.counters.executing_heads);
    let Some((entry, slug, token)) = statement_uri(&app, parts) else {
        return not_found(&app);
    };
    RequestCounts::bump(&entry.requests.heads);
    let mut query = entry.lock();
    match query.check(SlugContext::Executing, &slug, token) {
        Ok(()) => {
            query.touch(Instant::now());
            StatusCode::OK.into_response()
        }
        Err(reason) => reject(&app, reason),
    }
}

fn cancel_statement(app: &App, context: SlugContext, parts: (String, String, String)) -> Response {
    bump(&app.counters.statement_deletes);
    let Some((entry, slug, token)) = statement_uri(app, parts) else {
        return not_found(app);
    };
    RequestCounts::bump(&entry.requests.deletes);
    let mut query = entry.lock();
    match query.check(context, &slug, token) {
        Ok(()) => {
            if query.cancel(Instant::now()) {
                tracing::debug!(id = %entry.id, "query canceled");
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(reason) => reject(app, reason),
    }
}

async fn delete_queued(State(app): State<Arc<App>>, Path(parts): Path<(String, String, String)>) -> Response {
    cancel_statement(&app, SlugContext::Queued, parts)
}

async fn delete_executing(
    State(app): State<Arc<App>>,
    Path(parts): Path<(String, String, String)>,
) -> Response {
    cancel_statement(&app, SlugContext::Executing, parts)
}

async fn partial_cancel(
    State(app): State<Arc<App>>,
    Path((id, stage, slug, token)): Path<(String, String, String, String)>,
) -> Response {
    bump(&app.counters.partial_cancels);
    if stage.parse::<u32>().is_err() {
        return not_found(&app);
    }
    let Some((entry, slug, token)) = statement_uri(&app, (id, slug, token)) else {
        return not_found(&app);
    };
    RequestCounts::bump(&entry.requests.deletes);
    match entry.lock().check(SlugContext::Executing, &slug, token) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(reason) => reject(&app, reason),
    }
}

fn segment_refused(app: &App, refusal: Refusal) -> Response {
    match refusal {
        Refusal::NotFound => {
            bump(&app.counters.spooled_not_found);
            text(StatusCode::NOT_FOUND, "Segment not found")
        }
        Refusal::BadKey => {
            bump(&app.counters.spooled_bad_key);
            text(StatusCode::BAD_REQUEST, "Segment key header missing or wrong")
        }
    }
}

/// `GET /v1/spooled/download/{identifier}` and `GET /v1/spooled/segments/{identifier}`.
async fn download_segment(
    State(app): State<Arc<App>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
) -> Response {
    match app.segments.download(&identifier, header(&headers, KEY_HEADER), Instant::now()) {
        Ok(data) => {
            bump(&app.counters.spooled_downloads);
            let body = app.rows.bytes(data.page, data.rows);
            (StatusCode::OK, [(CONTENT_TYPE, "application/octet-stream")], body).into_response()
        }
        Err(refusal) => segment_refused(&app, refusal),
    }
}

/// `GET /v1/spooled/ack/{identifier}` and `DELETE /v1/spooled/segments/{identifier}`.
async fn ack_segment(
    State(app): State<Arc<App>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
) -> Response {
    match app.segments.ack(&identifier, header(&headers, KEY_HEADER), Instant::now()) {
        Ok(()) => {
            bump(&app.counters.spooled_acks);
            StatusCode::OK.into_response()
        }
        Err(refusal) => segment_refused(&app, refusal),
    }
}

/// QueryInfo-like JSON for `/v1/query/{id}` and `/ui/api/query/{id}`.
fn query_info_json(app: &App, base: &str, entry: &Entry) -> Value {
    let mut query = entry.lock();
    query.touch(Instant::now());
    let progress = query.progress(Instant::now());
    let submitted = &entry.submitted;
    let session: serde_json::Map<String, Value> =
        submitted.session.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
    let header = |name: &str| submitted.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    json!({
        "queryId": &*entry.id,
        "state": query.state().as_str(),
        "query": submitted.sql,
        "self": format!("{base}/v1/query/{}", entry.id),
        "session": {
            "queryId": &*entry.id,
            "user": submitted.user,
            "source": header("x-trino-source"),
            "catalog": header("x-trino-catalog"),
            "schema": header("x-trino-schema"),
            "transactionId": submitted.transaction,
            "systemProperties": session,
        },
        "queryStats": {
            "elapsedTime": node::succinct(progress.elapsed),
            "queuedTime": node::succinct(progress.queued_time),
            "processedInputPositions": progress.processed_rows,
        },
        "emulator": {"name": app.name, "canceled": query.is_canceled()},
    })
}

async fn query_info(State(app): State<Arc<App>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    bump(&app.counters.query_api);
    let Some(entry) = app.registry.get(&id) else {
        return not_found(&app);
    };
    RequestCounts::bump(&entry.requests.info_gets);
    json_value(&query_info_json(&app, &base_uri(&app, &headers), &entry))
}

async fn delete_query(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    bump(&app.counters.query_api);
    let Some(entry) = app.registry.get(&id) else {
        return not_found(&app);
    };
    RequestCounts::bump(&entry.requests.deletes);
    entry.lock().cancel(Instant::now());
    StatusCode::NO_CONTENT.into_response()
}

async fn kill_query(State(app): State<Arc<App>>, Path((id, action)): Path<(String, String)>) -> Response {
    bump(&app.counters.query_api);
    let Some(entry) = app.registry.get(&id).filter(|_| action == "killed" || action == "preempted") else {
        return not_found(&app);
    };
    RequestCounts::bump(&entry.requests.deletes);
    if entry.lock().cancel(Instant::now()) {
        StatusCode::OK.into_response()
    } else {
        StatusCode::CONFLICT.into_response()
    }
}

async fn query_html(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    bump(&app.counters.query_api);
    let Some(entry) = raw.as_deref().and_then(|id| app.registry.get(id)) else {
        return not_found(&app);
    };
    RequestCounts::bump(&entry.requests.info_gets);
    let state = entry.lock().state().as_str();
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>Query {id}</title></head>\
         <body><h1>Query {id}</h1><p>state: {state}</p><p>emulator: {name}</p></body></html>\n",
        id = entry.id,
        name = html_escape(&app.name),
    );
    (StatusCode::OK, [(CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn info(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.node_api);
    let uptime = app.started.elapsed();
    json_value(&node::info(uptime, app.node.starting(uptime)))
}

async fn info_state(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.node_api);
    json_value(&Value::from(app.node.state().as_str()))
}

async fn status(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.node_api);
    json_value(&node::status(&app.name, &app.local_address, app.started.elapsed()))
}

async fn emulator_queries(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.emulator_api);
    let queries: Vec<Value> = app
        .registry
        .all()
        .iter()
        .map(|entry| {
            let (state, canceled, error) = {
                let query = entry.lock();
                (query.state().as_str(), query.is_canceled(), query.error_name())
            };
            let submitted = &entry.submitted;
            let mut headers = serde_json::Map::new();
            for (name, value) in &submitted.headers {
                match headers.get_mut(name) {
                    Some(Value::String(existing)) => *existing = format!("{existing}, {value}"),
                    _ => {
                        headers.insert(name.clone(), Value::from(value.as_str()));
                    }
                }
            }
            json!({
                "id": &*entry.id,
                "state": state,
                "canceled": canceled,
                "error": error,
                "sql": submitted.sql,
                "user": submitted.user,
                "host": submitted.host,
                "headers": headers,
                "session": submitted.session.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                "transaction": submitted.transaction,
                "created_unix_ms": u64::try_from(entry.created_unix_ms).unwrap_or(u64::MAX),
                "requests": entry.requests.to_json(),
                "data_encoding": entry.spooling.as_ref().map(|s| s.encoding),
                "segments": entry.spooling.as_ref().map(|s| s.counts.to_json()),
            })
        })
        .collect();
    json_value(&Value::from(queries))
}

async fn emulator_counters(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.emulator_api);
    json_value(&app.counters.to_json())
}

async fn emulator_info(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.emulator_api);
    json_value(&json!({
        "name": app.name,
        "coordinatorId": app.coordinator_id.as_str(),
        "queries": app.registry.len(),
        "spooled_segments": app.segments.len(),
        "address": app.local_address,
        "state": app.node.state().as_str(),
        "starting": app.node.starting(app.started.elapsed()),
    }))
}

async fn put_state(State(app): State<Arc<App>>, body: Bytes) -> Response {
    bump(&app.counters.emulator_api);
    let Some(state) = NodeState::parse_body(&body) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected a JSON string: ACTIVE, INACTIVE, DRAINING, DRAINED, SHUTTING_DOWN or INVALID",
        );
    };
    let previous = app.node.set_state(state);
    tracing::info!(state = state.as_str(), previous = previous.as_str(), "node state set");
    json_value(&json!({"state": state.as_str(), "previous": previous.as_str()}))
}

async fn put_starting(State(app): State<Arc<App>>, body: Bytes) -> Response {
    bump(&app.counters.emulator_api);
    let starting = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Bool(starting)) => starting,
        _ => return text(StatusCode::BAD_REQUEST, "expected true or false"),
    };
    app.node.set_starting(starting);
    tracing::info!(starting, "starting flag set");
    json_value(&json!({"starting": starting}))
}

/// The `Cookie` header values of a request.
fn cookie_headers(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok())
}

fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(LOCATION, location);
    }
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(SET_COOKIE, cookie);
    }
    response
}

fn html(body: &'static str) -> Response {
    (StatusCode::OK, [(CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn ui_login(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let form = LoginForm::parse(&String::from_utf8_lossy(&body));
    match app.sessions.login(&form) {
        Some(token) => {
            bump(&app.counters.ui_logins);
            tracing::debug!(user = %form.username, "web UI login");
            see_other(form.redirect_target(), Some(ui::session_cookie(&token)))
        }
        None => {
            bump(&app.counters.ui_login_failures);
            tracing::debug!(user = %form.username, "web UI login refused");
            see_other(ui::LOGIN_FORM, None)
        }
    }
}

async fn ui_logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    bump(&app.counters.ui_pages);
    app.sessions.logout(cookie_headers(&headers));
    see_other(ui::LOGIN_FORM, Some(ui::expired_cookie()))
}

async fn ui_login_page(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.ui_pages);
    html(ui::LOGIN_PAGE)
}

async fn ui_home(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    bump(&app.counters.ui_pages);
    if !app.sessions.is_valid(cookie_headers(&headers)) {
        return see_other(ui::LOGIN_FORM, None);
    }
    html(
        "<!DOCTYPE html>\n<html><head><title>Trino emulator</title></head><body><p>Trino emulator</p></body></html>\n",
    )
}

async fn ui_stats(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !app.sessions.is_valid(cookie_headers(&headers)) {
        bump(&app.counters.ui_unauthorized);
        return (
            StatusCode::UNAUTHORIZED,
            [(CONTENT_TYPE, "text/plain; charset=utf-8"), (WWW_AUTHENTICATE, ui::CHALLENGE)],
            "Unauthorized",
        )
            .into_response();
    }
    bump(&app.counters.ui_stats);
    json_value(&node::cluster_stats(&app.registry.load(Instant::now()), app.node.state()))
}

async fn unrouted(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.unrouted);
    text(StatusCode::NOT_FOUND, "Not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_uris() {
        for (host, forwarded, expected) in [
            (Some("envoy:8080"), [None; 4], "http://envoy:8080"),
            (Some("tls-envoy:8443"), [None; 4], "https://tls-envoy:8443"),
            (None, [None; 4], "http://127.0.0.1:9"),
            (Some("h"), [Some("https"), None, None, None], "https://h"),
            (Some("h:1"), [None, Some("gw.example"), None, None], "http://gw.example"),
            (Some("h:1"), [None, None, Some("443"), None], "http://h:443"),
            (Some("[::1]:1"), [None, None, Some("2"), None], "http://[::1]:2"),
            (Some("h"), [None, None, None, Some("/trino/")], "http://h/trino"),
            (Some("h"), [None, None, None, Some("/")], "http://h"),
        ] {
            // The listener's own scheme counts only when nothing is forwarded (the `tls-` hosts: https).
            let own = if host.is_some_and(|h| h.starts_with("tls-")) { "https" } else { "http" };
            assert_eq!(base_from(host, "127.0.0.1:9", own, forwarded), expected, "{host:?} {forwarded:?}");
        }
    }

    #[test]
    fn max_wait_parsing() {
        for (query, expected_ms) in [
            (None, 1000),
            (Some("maxWait=200ms"), 200),
            (Some("targetResultSize=1MB&maxWait=0s"), 0),
            (Some("maxWait=5s"), 1000),
            (Some("maxWait=0.5s"), 500),
            (Some("maxWait=bogus"), 1000),
            (Some("maxWait=10x"), 1000),
        ] {
            assert_eq!(max_wait(query), Duration::from_millis(expected_ms), "{query:?}");
        }
    }
}
