//! The HTTP surface: axum handlers that look a query up, call its state machine ([`crate::queries`])
//! and render the answer ([`crate::results`]). No lock is held across an await: a handler that must
//! wait for a delayed page drops the query's lock, sleeps, and asks again. What each answer is, and the
//! Trino source it follows, is docs/trino-conformance.md (row ids in brackets below).
//!
//! Before any route, [`gate`] does what Trino's HTTP server does before its resources: Jetty's URI
//! compliance (400, [`crate::uri_compliance`], J1–J7), `http-server.process-forwarded` (406 under REJECT,
//! headers dropped under IGNORE, [`crate::forwarded`], F1–F3), and Jersey's matching path (matrix
//! parameters and one trailing slash dropped, [`crate::jersey`], M1–M4).
//!
//! Routes (the error bodies are Trino's `ThrowableMapper`'s: `text/plain`, `Error {code} {reason}:
//! {message}`; "bare" means no body at all):
//! - `POST /v1/statement` — body = SQL; needs a user [Q7]; empty body: 400 `SQL statement is empty` [S2].
//! - `GET|DELETE /v1/statement/queued/{id}/{slug}/{token}`: unknown query or slug 404 `Query not found`
//!   [S3], a token other than the last or next 410 `Invalid token` [S4].
//! - `GET|HEAD|DELETE /v1/statement/executing/{id}/{slug}/{token}` (`?maxWait=` honoured up to 1 s,
//!   `targetResultSize` ignored; HEAD is the spooling heartbeat: 200, no body [S9]): unknown query or slug
//!   404 `Query not found` [S5], an older token 410 bare, another unknown token 404 bare [S6].
//! - `DELETE /v1/statement/executing/partialCancel/{id}/{stage}/{slug}/{token}` — 204, no effect [S10].
//! - A path parameter Jersey cannot convert (a query id not `[_a-z0-9]+`, a token not a number): 404
//!   bare. A known resource asked with another method: 405 bare, with `Allow` [S8]; `OPTIONS`: 200 with
//!   `Allow`. No resource at all: 404 `HTTP 404 Not Found` [M4].
//! - Spooled segments ([`crate::spooling`], `--spooling-retrieval`, SP1–SP4): `GET
//!   /v1/spooled/download/{identifier}` (STORAGE: 503; COORDINATOR_STORAGE_REDIRECT: 303 to the object
//!   store; COORDINATOR_PROXY: 200 `application/octet-stream`, the rows' JSON), `GET
//!   /v1/spooled/ack/{identifier}` (200, empty; the segment is forgotten), and the object store of STORAGE
//!   mode, `GET /v1/emulator/storage/{identifier}`. Each needs the segment's `X-Trino-Emulator-Segment-Key`
//!   header: a known identifier without it (or with another key) is 400; an identifier this process did
//!   not issue, or acknowledged, or that expired is 404 `Segment not found` (text/plain, counted as
//!   `spooled_not_found`, not `not_found`).
//! - `GET|DELETE /v1/query/{id}`, `PUT /v1/query/{id}/killed|preempted` (need a user [Q7]): GET 200 with
//!   QueryInfo-like JSON [Q1], 410 bare for any id this process does not hold [Q2], 403 when
//!   `--query-access owner` and the user is not the owner [Q4]; DELETE 204 whether held or not [Q5]; PUT
//!   202, 409 when already done, 410 unknown [Q6]. `GET /ui/api/query/{id}` and its PUTs answer the same
//!   behind the web UI login [Q8].
//! - `GET /ui/query.html?{id}` — the web UI's static query page: 303 to the login page without a session,
//!   else 200 whatever the id (the page's script asks `/ui/api/query/{id}`) [U2].
//! - `GET /v1/info` (fields by `--trino-version` [N1, N2]; `starting` per `--starting-seconds` / `PUT
//!   /v1/emulator/starting`), `/v1/info/state` (the node state, ACTIVE unless `PUT /v1/emulator/state`
//!   changed it) [N3], `/v1/info/coordinator` (200, empty) [N4], `/v1/status`.
//! - While the node state is not ACTIVE, `POST /v1/statement` creates nothing: 503 `server is shutting
//!   down` (text/plain; a 503 tells the clients the query was not submitted, so they may retry
//!   elsewhere), counted as `rejected_new_queries`. Queries already known carry on normally [E1].
//! - Web UI ([`crate::ui`]): `POST /ui/login` (form; 303 + `Trino-UI-Token` cookie, or 303 to
//!   `/ui/login.html` when refused) [N6], `GET /ui/logout`, `GET /ui/login.html`, `GET /ui/` (303 to the
//!   login page without a session), `GET /ui/api/stats` (Trino's `ClusterStats` JSON; 401 with
//!   `WWW-Authenticate: Trino-Form-Login` without a valid session) [N5].
//! - Emulator-only: `GET /v1/emulator/queries` (every known query, oldest first: id, state, canceled,
//!   error name, sql, user, host, x-trino headers, session, transaction, per-query request counts, the
//!   negotiated `data_encoding` and spooled `segments` issued / downloaded / acked),
//!   `GET /v1/emulator/counters` (requests by kind), `GET /v1/emulator/info` (name, coordinator id,
//!   queries and spooled segments held, address, node state, starting, forwarded mode, Trino version,
//!   retrieval mode), `PUT /v1/emulator/state` (body: a JSON string naming a node state, e.g.
//!   `"SHUTTING_DOWN"`; 200 `{"state", "previous"}`, 400 otherwise), `PUT /v1/emulator/starting` (body
//!   `true` or `false`; 200 `{"starting"}`, 400 otherwise), `GET|PUT /v1/emulator/fault` (a coordinator
//!   that hangs, answers garbage or is slow: [`crate::fault`]).
//!
//! URIs handed out start with the request's external base ([`crate::forwarded::external_base`], U1).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use serde_json::{Value, json};

use crate::auth::{self, QueryAccess};
use crate::fault::{self, Faults};
use crate::forwarded::{self, Listener, Origin};
use crate::node::{self, NodeControl, NodeState};
use crate::queries::{Page, Query, Reject, Step};
use crate::query_id::CoordinatorId;
use crate::registry::{Entry, Registry, RequestCounts, Submitted};
use crate::results::{Context, Rendered, Spooling, render};
use crate::rows::PageRows;
use crate::session::{claimed_transaction, parse_session_header};
use crate::slug::SlugContext;
use crate::spooling::{ENCODING_HEADER, KEY_HEADER, Refusal, Retrieval, STORAGE_PATH, SegmentData, Segments};
use crate::trino_version::Version;
use crate::ui::{self, LoginForm, Sessions};
use crate::{jersey, refusals, uri_compliance};

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
/// missing or wrong segment key. `uri_refused`: 400s for paths Jetty refuses; `forwarded_refused`: 406s
/// under REJECT; `unauthenticated`: 401s of resources that need a user; `forbidden`: 403s of
/// `--query-access owner`. Requests refused before a resource (400, 406) count nowhere else.
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
    uri_refused: AtomicU64,
    forwarded_refused: AtomicU64,
    unauthenticated: AtomicU64,
    forbidden: AtomicU64,
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
            "uri_refused": get(&self.uri_refused),
            "forwarded_refused": get(&self.forwarded_refused),
            "unauthenticated": get(&self.unauthenticated),
            "forbidden": get(&self.forbidden),
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
    /// `http-server.process-forwarded`.
    pub forwarded: forwarded::Mode,
    /// The Trino release the emulator answers as.
    pub version: Version,
    /// `protocol.spooling.retrieval-mode`.
    pub retrieval: Retrieval,
    /// Who may view and kill a query.
    pub query_access: QueryAccess,
    /// `https` when serving TLS (`--tls-cert`), else `http`: the scheme of URIs handed out (unless
    /// forwarded headers say otherwise).
    pub scheme: &'static str,
    /// `host:port` the emulator listens on: the base URI when a request has no Host header, and the
    /// object store of STORAGE mode.
    pub local_address: String,
}

/// The `Allow` of each of Trino's resources the emulator serves (Jersey adds HEAD to GET, and OPTIONS).
const ALLOW_POST: &str = "OPTIONS,POST";
const ALLOW_GET: &str = "GET,HEAD,OPTIONS";
const ALLOW_GET_DELETE: &str = "DELETE,GET,HEAD,OPTIONS";
const ALLOW_DELETE: &str = "DELETE,OPTIONS";
const ALLOW_PUT: &str = "OPTIONS,PUT";

/// One of Trino's JAX-RS resources: `methods`, `OPTIONS` answered with `allow`, any other method 405.
fn resource(methods: MethodRouter<Arc<App>>, allow: &'static str) -> MethodRouter<Arc<App>> {
    methods
        .options(move || async move { refusals::allow(StatusCode::OK, allow) })
        .fallback(move || async move { refusals::allow(StatusCode::METHOD_NOT_ALLOWED, allow) })
}

pub fn router(app: Arc<App>) -> Router {
    let faults = Arc::new(Faults::default());
    let fault_control = Router::new()
        .route("/v1/emulator/fault", get(fault::get_fault).put(fault::put_fault))
        .with_state(faults.clone());
    let routes = Router::new()
        .route("/v1/statement", resource(post(post_statement), ALLOW_POST))
        .route(
            "/v1/statement/queued/{id}/{slug}/{token}",
            resource(get(get_queued).delete(delete_queued), ALLOW_GET_DELETE),
        )
        .route(
            "/v1/statement/executing/{id}/{slug}/{token}",
            resource(get(get_executing).head(head_executing).delete(delete_executing), ALLOW_GET_DELETE),
        )
        .route(
            "/v1/statement/executing/partialCancel/{id}/{stage}/{slug}/{token}",
            resource(delete(partial_cancel), ALLOW_DELETE),
        )
        .route("/v1/spooled/download/{identifier}", resource(get(download_segment), ALLOW_GET))
        .route("/v1/spooled/ack/{identifier}", resource(get(ack_segment), ALLOW_GET))
        .route(&format!("{STORAGE_PATH}/{{identifier}}"), get(storage_segment))
        .route("/v1/query/{id}", resource(get(query_info).delete(delete_query), ALLOW_GET_DELETE))
        .route("/v1/query/{id}/killed", resource(put(kill_query), ALLOW_PUT))
        .route("/v1/query/{id}/preempted", resource(put(kill_query), ALLOW_PUT))
        .route("/ui/api/query/{id}", resource(get(ui_query_info), ALLOW_GET))
        .route("/ui/api/query/{id}/killed", resource(put(ui_kill_query), ALLOW_PUT))
        .route("/ui/api/query/{id}/preempted", resource(put(ui_kill_query), ALLOW_PUT))
        .route("/ui/query.html", get(query_html))
        .route("/v1/info", resource(get(info), ALLOW_GET))
        .route("/v1/info/state", resource(get(info_state), ALLOW_GET))
        .route("/v1/info/coordinator", resource(get(info_coordinator), ALLOW_GET))
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
        .route("/ui/api/stats", resource(get(ui_stats), ALLOW_GET))
        .fallback(unrouted)
        .with_state(app.clone())
        .merge(fault_control);
    // The gate runs before routing (it changes the path routes are matched on): a router's own layers
    // run after its routing, so the routes sit behind an outer router that has nothing but the gate.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn_with_state(app, gate))
        .layer(axum::middleware::from_fn_with_state(faults, fault::apply))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY))
}

/// What Trino's HTTP server does before its resources see a request: Jetty's URI compliance (400),
/// `http-server.process-forwarded` (406 under REJECT; under IGNORE the headers are dropped), then the
/// path Jersey matches on.
async fn gate(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if let Some(reason) = uri_compliance::refusal(&path) {
        bump(&app.counters.uri_refused);
        tracing::debug!(path, reason, "URI refused");
        return refusals::jetty(StatusCode::BAD_REQUEST, &reason, &path);
    }
    if let Some(header) = forwarded::rejected_header(app.forwarded, request.headers()) {
        bump(&app.counters.forwarded_refused);
        tracing::debug!(path, header, "forwarded header refused");
        return refusals::jetty(StatusCode::NOT_ACCEPTABLE, &forwarded::rejection_message(&header), &path);
    }
    if app.forwarded == forwarded::Mode::Ignore {
        let doomed: Vec<HeaderName> = request
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("x-forwarded-"))
            .cloned()
            .collect();
        for name in doomed {
            request.headers_mut().remove(name);
        }
    }
    if let Some(matching) = jersey::matching_path(&path) {
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{matching}?{query}"),
            None => matching,
        };
        let mut parts = request.uri().clone().into_parts();
        if let Ok(rewritten) = path_and_query.parse() {
            parts.path_and_query = Some(rewritten);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    next.run(request).await
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
        Reject::QueuedGone => {
            bump(&app.counters.gone);
            refusals::mapped(StatusCode::GONE, "Invalid token")
        }
        Reject::Gone => {
            bump(&app.counters.gone);
            refusals::bare(StatusCode::GONE)
        }
        Reject::UnknownToken => {
            bump(&app.counters.not_found);
            refusals::bare(StatusCode::NOT_FOUND)
        }
    }
}

/// An unknown query or a slug that does not fit: `NotFoundException("Query not found")`.
fn not_found(app: &App) -> Response {
    bump(&app.counters.not_found);
    refusals::mapped(StatusCode::NOT_FOUND, "Query not found")
}

/// A path parameter Jersey could not convert (a query id outside `[_a-z0-9]+`, a token not a number).
fn unconvertible(app: &App) -> Response {
    bump(&app.counters.not_found);
    refusals::bare(StatusCode::NOT_FOUND)
}

/// A request answered before it reached what it asks for: the answer (boxed: a `Response` is large).
type Refused = Box<Response>;

/// Trino's `QueryId` accepts `[_a-z0-9]+` (`QueryId.validateId`).
fn is_query_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b == b'_' || b.is_ascii_lowercase() || b.is_ascii_digit())
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

/// The base of every URI handed out for a request (U1, F2–F5).
fn base_uri(app: &App, headers: &HeaderMap) -> String {
    let listener = Listener { address: &app.local_address, scheme: app.scheme };
    forwarded::external_base(app.forwarded, app.version, &Origin::from_headers(headers), listener)
}

/// Where the object store of STORAGE mode serves segments: the emulator's own address, whatever the
/// client talked to.
fn storage_base(app: &App) -> String {
    format!("{}://{}{STORAGE_PATH}", app.scheme, app.local_address)
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn render_page(app: &App, base: &str, entry: &Entry, query: &Query, page: &Page) -> Response {
    let now = Instant::now();
    let Some(spooling) = &entry.spooling else {
        let ctx = Context { base, rows: &app.rows, now, version: app.version, spooling: None };
        return query_results(render(&ctx, &entry.id, query, page));
    };
    let segment = |index: u32, data: SegmentData| {
        spooling.segment_for(index, || app.segments.issue(data, &spooling.counts, now, unix_ms()))
    };
    let download = match app.retrieval {
        Retrieval::Storage => storage_base(app),
        Retrieval::CoordinatorProxy | Retrieval::CoordinatorStorageRedirect => {
            format!("{base}/v1/spooled/download")
        }
    };
    let spooling =
        Spooling { encoding: spooling.encoding, hint: spooling.hint, download: &download, segment: &segment };
    let ctx = Context { base, rows: &app.rows, now, version: app.version, spooling: Some(&spooling) };
    query_results(render(&ctx, &entry.id, query, page))
}

/// The user of a request to a resource that needs one, or the authentication filter's 401 (Q7).
fn authenticated(app: &App, headers: &HeaderMap) -> Result<String, Refused> {
    auth::authenticated_user(headers).map_err(|reason| {
        bump(&app.counters.unauthenticated);
        Box::new(refusals::unauthorized(&reason))
    })
}

async fn post_statement(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    bump(&app.counters.statement_posts);
    let user = match authenticated(&app, &headers) {
        Ok(user) => user,
        Err(refused) => return *refused,
    };
    if !app.node.accepts_queries() {
        bump(&app.counters.rejected_new_queries);
        tracing::debug!(state = app.node.state().as_str(), "new query refused");
        return text(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
    }
    if body.is_empty() {
        return refusals::mapped(StatusCode::BAD_REQUEST, "SQL statement is empty");
    }
    // Jersey reads the body as UTF-8, replacing what is not.
    let sql = String::from_utf8_lossy(&body).into_owned();
    let trino_headers = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-trino-"))
        .map(|(name, value)| {
            (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .collect();
    let submitted = Submitted {
        sql,
        user: Some(header(&headers, "x-trino-user").map_or(user, str::to_owned)),
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

/// A statement URI's query and parts, with the token parsed; else Trino's answer: 404 without a body
/// when Jersey cannot convert the query id or the token (a `long`), 404 `Query not found` when no such
/// query is held (or the token is negative: no slug fits it).
fn statement_uri(
    app: &App,
    (id, slug, token): (String, String, String),
) -> Result<(Arc<Entry>, String, u64), Refused> {
    let token: i64 = token.parse().map_err(|_| Box::new(unconvertible(app)))?;
    if !is_query_id(&id) {
        return Err(Box::new(unconvertible(app)));
    }
    let token = u64::try_from(token).map_err(|_| Box::new(not_found(app)))?;
    let entry = app.registry.get(&id).ok_or_else(|| Box::new(not_found(app)))?;
    Ok((entry, slug, token))
}

async fn get_queued(
    State(app): State<Arc<App>>,
    Path(parts): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    bump(&app.counters.queued_gets);
    let (entry, slug, token) = match statement_uri(&app, parts) {
        Ok(parts) => parts,
        Err(refused) => return *refused,
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
    let (entry, slug, token) = match statement_uri(&app, parts) {
        Ok(parts) => parts,
        Err(refused) => return *refused,
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
    let (entry, slug, token) = match statement_uri(&app, parts) {
        Ok(parts) => parts,
        Err(refused) => return *refused,
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
    let (entry, slug, token) = match statement_uri(app, parts) {
        Ok(parts) => parts,
        Err(refused) => return *refused,
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
    // `int stage`: Jersey cannot convert anything else.
    if stage.parse::<i32>().is_err() {
        return unconvertible(&app);
    }
    let (entry, slug, token) = match statement_uri(&app, (id, slug, token)) {
        Ok(parts) => parts,
        Err(refused) => return *refused,
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

/// `GET /v1/spooled/download/{identifier}`, as the retrieval mode has it (Trino's
/// `CoordinatorSegmentResource.download`, SP1–SP3).
async fn download_segment(
    State(app): State<Arc<App>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
) -> Response {
    match app.retrieval {
        Retrieval::Storage => refusals::mapped(
            StatusCode::SERVICE_UNAVAILABLE,
            "Retrieval mode is STORAGE but segment resource was called",
        ),
        Retrieval::CoordinatorStorageRedirect => {
            let location = format!("{}/{identifier}", storage_base(&app));
            let mut response = StatusCode::SEE_OTHER.into_response();
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(LOCATION, location);
            }
            response
        }
        Retrieval::CoordinatorProxy => serve_segment(&app, &identifier, &headers),
    }
}

/// `GET /v1/emulator/storage/{identifier}`: the object store of STORAGE (and COORDINATOR_STORAGE_REDIRECT)
/// mode, at the emulator's own address.
async fn storage_segment(
    State(app): State<Arc<App>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve_segment(&app, &identifier, &headers)
}

fn serve_segment(app: &App, identifier: &str, headers: &HeaderMap) -> Response {
    match app.segments.download(identifier, header(headers, KEY_HEADER), Instant::now()) {
        Ok(data) => {
            bump(&app.counters.spooled_downloads);
            let body = app.rows.bytes(data.page, data.rows);
            (StatusCode::OK, [(CONTENT_TYPE, "application/octet-stream")], body).into_response()
        }
        Err(refusal) => segment_refused(app, refusal),
    }
}

/// `GET /v1/spooled/ack/{identifier}`: always at the coordinator (SP2).
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

/// Which of Trino's query resources a request is for: `/v1/query` (`QueryResource`, needs an
/// authenticated user) or `/ui/api/query` (`UiQueryResource`, needs a web UI session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueryApi {
    V1,
    Ui,
}

impl QueryApi {
    /// Who asks, or the answer for nobody (Q7, Q8).
    fn asker(self, app: &App, headers: &HeaderMap) -> Result<String, Refused> {
        match self {
            QueryApi::V1 => authenticated(app, headers),
            QueryApi::Ui => {
                app.sessions.user(cookie_headers(headers)).ok_or_else(|| Box::new(ui_unauthorized(app)))
            }
        }
    }

    /// 410 for a query this process does not hold: `QueryResource` answers it bare, `UiQueryResource`
    /// throws `GoneException()`.
    fn gone(self, app: &App) -> Response {
        bump(&app.counters.gone);
        match self {
            QueryApi::V1 => refusals::bare(StatusCode::GONE),
            QueryApi::Ui => refusals::mapped(StatusCode::GONE, &refusals::default_message(StatusCode::GONE)),
        }
    }
}

/// The query a query-resource request names, once its asker may see it: else 404 bare (an id Jersey
/// cannot convert), `gone` (not held), or 403 (`ForbiddenException()`, Q4).
fn visible_query(
    app: &App,
    id: &str,
    user: &str,
    gone: impl FnOnce() -> Response,
) -> Result<Arc<Entry>, Refused> {
    if !is_query_id(id) {
        return Err(Box::new(unconvertible(app)));
    }
    let entry = app.registry.get(id).ok_or_else(|| Box::new(gone()))?;
    if !app.query_access.allows(user, entry.submitted.user.as_deref()) {
        bump(&app.counters.forbidden);
        let message = refusals::default_message(StatusCode::FORBIDDEN);
        return Err(Box::new(refusals::mapped(StatusCode::FORBIDDEN, &message)));
    }
    Ok(entry)
}

async fn query_info(State(app): State<Arc<App>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    answer_query_info(&app, QueryApi::V1, &id, &headers)
}

async fn ui_query_info(State(app): State<Arc<App>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    answer_query_info(&app, QueryApi::Ui, &id, &headers)
}

/// `GET /v1/query/{id}` (Q1, Q2, Q4) and `GET /ui/api/query/{id}` (Q8).
fn answer_query_info(app: &App, api: QueryApi, id: &str, headers: &HeaderMap) -> Response {
    bump(&app.counters.query_api);
    let entry = match api.asker(app, headers).and_then(|user| visible_query(app, id, &user, || api.gone(app)))
    {
        Ok(entry) => entry,
        Err(refused) => return *refused,
    };
    RequestCounts::bump(&entry.requests.info_gets);
    json_value(&query_info_json(app, &base_uri(app, headers), &entry))
}

/// `DELETE /v1/query/{id}`: 204 whether or not the query is held (Q5).
async fn delete_query(State(app): State<Arc<App>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    bump(&app.counters.query_api);
    let no_content = || StatusCode::NO_CONTENT.into_response();
    let entry =
        match authenticated(&app, &headers).and_then(|user| visible_query(&app, &id, &user, no_content)) {
            Ok(entry) => entry,
            Err(answer) => return *answer,
        };
    RequestCounts::bump(&entry.requests.deletes);
    entry.lock().cancel(Instant::now());
    no_content()
}

async fn kill_query(State(app): State<Arc<App>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    answer_kill(&app, QueryApi::V1, &id, &headers)
}

async fn ui_kill_query(State(app): State<Arc<App>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    answer_kill(&app, QueryApi::Ui, &id, &headers)
}

/// `PUT .../{id}/killed|preempted`: 202, 409 when the query is already done, 410 when not held (Q6).
fn answer_kill(app: &App, api: QueryApi, id: &str, headers: &HeaderMap) -> Response {
    bump(&app.counters.query_api);
    let entry = match api.asker(app, headers).and_then(|user| visible_query(app, id, &user, || api.gone(app)))
    {
        Ok(entry) => entry,
        Err(refused) => return *refused,
    };
    RequestCounts::bump(&entry.requests.deletes);
    if entry.lock().cancel(Instant::now()) {
        StatusCode::ACCEPTED.into_response()
    } else {
        StatusCode::CONFLICT.into_response()
    }
}

/// `GET /ui/query.html?{id}`: the web UI's static query page, for any id, behind the login (U2).
async fn query_html(State(app): State<Arc<App>>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Response {
    bump(&app.counters.ui_pages);
    if !app.sessions.is_valid(cookie_headers(&headers)) {
        return see_other(ui::LOGIN_FORM, None);
    }
    let known = raw.as_deref().and_then(|id| app.registry.get(id));
    if let Some(entry) = &known {
        RequestCounts::bump(&entry.requests.info_gets);
    }
    let state = known.as_ref().map_or("unknown to this emulator", |entry| entry.lock().state().as_str());
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>Query details</title></head>\
         <body><h1>Query {id}</h1><p>state: {state}</p><p>emulator: {name}</p></body></html>\n",
        id = html_escape(raw.as_deref().unwrap_or_default()),
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
    let identity = node::Identity {
        node_id: &app.name,
        coordinator_id: app.coordinator_id.as_str(),
        state: app.node.state(),
    };
    json_value(&node::info(app.version, uptime, app.node.starting(uptime), identity))
}

/// `GET /v1/info/coordinator`: 200 on a coordinator (a worker answers 404), no body (N4).
async fn info_coordinator(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.node_api);
    StatusCode::OK.into_response()
}

async fn info_state(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.node_api);
    json_value(&Value::from(app.node.state().as_str()))
}

async fn status(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.node_api);
    json_value(&node::status(app.version, &app.name, &app.local_address, app.started.elapsed()))
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
        "forwarded": app.forwarded.as_str(),
        "trinoVersion": app.version.number(),
        "spoolingRetrieval": app.retrieval.as_str(),
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

/// The web UI filter's answer to a `/ui/api/` call without a session (`FormWebUiAuthenticationFilter`).
fn ui_unauthorized(app: &App) -> Response {
    bump(&app.counters.ui_unauthorized);
    (
        StatusCode::UNAUTHORIZED,
        [(CONTENT_TYPE, "text/plain; charset=utf-8"), (WWW_AUTHENTICATE, ui::CHALLENGE)],
        "Unauthorized",
    )
        .into_response()
}

async fn ui_stats(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !app.sessions.is_valid(cookie_headers(&headers)) {
        return ui_unauthorized(&app);
    }
    bump(&app.counters.ui_stats);
    json_value(&node::cluster_stats(&app.registry.load(Instant::now()), app.node.state()))
}

/// No resource matches: Jersey's `NotFoundException` through Trino's `ThrowableMapper` (M4).
async fn unrouted(State(app): State<Arc<App>>) -> Response {
    bump(&app.counters.unrouted);
    refusals::mapped(StatusCode::NOT_FOUND, &refusals::default_message(StatusCode::NOT_FOUND))
}

#[cfg(test)]
mod tests {
    use super::*;

    // conformance: S11
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
