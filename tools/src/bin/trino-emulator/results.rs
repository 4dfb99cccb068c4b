//! Renders a [`Page`] as Trino's `QueryResults` JSON (`client/trino-client/.../QueryResults.java`):
//! `id`, `infoUri`, `nextUri` (absent on the final page), `partialCancelUri` (data pages), `columns` (every
//! executing page once known), `data` (data pages, and the result of an update), `stats`, `error`,
//! `warnings`, `updateType`.
//!
//! URIs start with `base` (`http://{Host}`, [`crate::forwarded`]), so they point at whatever the client
//! talked to; `infoUri` is `{base}/ui/query.html?{id}` before Trino 483 and `{base}/ui#/queries/{id}` from
//! 483 (Trino's `QueryInfoUrlFactory`; rows U2, U3 of docs/trino-conformance.md). An ordinary
//! query's page `p` (1-based) holds rows `(cluster, p, r)` for `r` in `1..=rows`, rendered once per shape
//! and spliced in ([`crate::rows`]). Response headers (`X-Trino-Set-Session`, ...) go only on an update's
//! final page.
//!
//! A query that negotiated the spooling protocol ([`Context::spooling`]) gets its rows as one encoded
//! segment per data page instead ([`crate::spooling`]); the segment's bytes are the same rows array.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use serde::ser::Serializer;
use serde_json::value::RawValue;

use crate::queries::{Page, Plan, Progress, Query, QueryError, ResponseHeader, State};
use crate::rows::{PageRows, shared_bytes};
use crate::slug::SlugContext;
use crate::spooling::{EncodedData, Issued, SegmentData, spools};
use crate::trino_version::Version;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Column {
    name: &'static str,
    #[serde(rename = "type")]
    type_name: &'static str,
    type_signature: TypeSignature,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TypeSignature {
    raw_type: &'static str,
    arguments: &'static [TypeArgument],
}

#[derive(Serialize)]
struct TypeArgument {
    kind: &'static str,
    value: i64,
}

const UNBOUNDED_VARCHAR: &[TypeArgument] = &[TypeArgument { kind: "LONG", value: 2_147_483_647 }];

const fn column(
    name: &'static str,
    type_name: &'static str,
    raw_type: &'static str,
    arguments: &'static [TypeArgument],
) -> Column {
    Column { name, type_name, type_signature: TypeSignature { raw_type, arguments } }
}

const ROWS_COLUMNS: &[Column] = &[
    column("cluster", "varchar", "varchar", UNBOUNDED_VARCHAR),
    column("page", "bigint", "bigint", &[]),
    column("row", "bigint", "bigint", &[]),
];
const SESSION_COLUMNS: &[Column] = &[
    column("Name", "varchar", "varchar", UNBOUNDED_VARCHAR),
    column("Value", "varchar", "varchar", UNBOUNDED_VARCHAR),
];
const UPDATE_COLUMNS: &[Column] = &[column("result", "boolean", "boolean", &[])];

/// The `data` of one page.
enum Data<'a> {
    /// An ordinary query's rows, rendered before ([`PageRows`]).
    Rows(Arc<RawValue>),
    Session(&'a [(String, String)]),
    True,
    /// Spooling protocol: the page's rows as a segment.
    Encoded(EncodedData),
}

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::Rows(array) => array.serialize(serializer),
            Data::Session(rows) => serializer.collect_seq(rows.iter().map(|(n, v)| (n, v))),
            Data::True => serializer.collect_seq([[true]]),
            Data::Encoded(encoded) => encoded.serialize(serializer),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorJson<'a> {
    message: &'a str,
    error_code: i32,
    error_name: &'a str,
    error_type: &'a str,
    failure_info: FailureInfo<'a>,
}

#[derive(Serialize)]
struct FailureInfo<'a> {
    #[serde(rename = "type")]
    type_name: &'static str,
    message: &'a str,
    suppressed: [(); 0],
    stack: [(); 0],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    state: &'static str,
    queued: bool,
    scheduled: bool,
    progress_percentage: Option<f64>,
    running_percentage: Option<f64>,
    nodes: u32,
    total_splits: u32,
    queued_splits: u32,
    running_splits: u32,
    completed_splits: u32,
    cpu_time_millis: u64,
    wall_time_millis: u64,
    queued_time_millis: u64,
    elapsed_time_millis: u64,
    processed_rows: u64,
    processed_bytes: u64,
    physical_input_bytes: u64,
    physical_written_bytes: u64,
    peak_memory_bytes: u64,
    spilled_bytes: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryResults<'a> {
    id: &'a str,
    info_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_cancel_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    columns: Option<&'static [Column]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
    stats: Stats,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorJson<'a>>,
    warnings: [(); 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    update_type: Option<&'static str>,
}

/// A rendered answer: the JSON body and the response headers to send with it.
pub struct Rendered<'a> {
    /// The body in pieces, to be sent one after the other: a data page's rows array is a piece of its
    /// own, shared with [`PageRows`] rather than copied.
    pub body: Vec<Bytes>,
    pub headers: &'a [ResponseHeader],
}

/// Rendering inputs that do not come from the state machine.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// `scheme://host[:port][/prefix]`, without a trailing slash.
    pub base: &'a str,
    /// The rows of data pages (the emulator's `--name` is their `cluster` column).
    pub rows: &'a PageRows,
    pub now: Instant,
    /// The release the emulator answers as (the shape of `infoUri`).
    pub version: Version,
    /// Set for a query whose client negotiated the spooling protocol.
    pub spooling: Option<&'a Spooling<'a>>,
}

/// How a query that negotiated the spooling protocol renders its data pages.
pub struct Spooling<'a> {
    /// The negotiated encoding (`json`).
    pub encoding: &'static str,
    /// The `spooled` hint.
    pub hint: Option<bool>,
    /// Where segments are downloaded from: `{download}/{identifier}`.
    pub download: &'a str,
    /// The spooled segment of data page `index` (0-based) holding `data` (the same one again when a page
    /// is repeated).
    pub segment: &'a dyn Fn(u32, SegmentData) -> Issued,
}

/// `infoUri` of query `id` as `version` builds it.
pub fn info_uri(base: &str, id: &str, version: Version) -> String {
    if version.info_uri_in_fragment() {
        format!("{base}/ui#/queries/{id}")
    } else {
        format!("{base}/ui/query.html?{id}")
    }
}

pub fn render<'q>(ctx: &Context<'_>, id: &str, query: &'q Query, page: &Page) -> Rendered<'q> {
    let base = ctx.base;
    let executing_uri = |token: u64| {
        let slug = query.slug(SlugContext::Executing, token);
        format!("{base}/v1/statement/executing/{id}/{slug}/{token}")
    };
    let next_uri = match page {
        Page::Queued { next } => {
            let slug = query.slug(SlugContext::Queued, *next);
            Some(format!("{base}/v1/statement/queued/{id}/{slug}/{next}"))
        }
        Page::Dispatched => Some(executing_uri(0)),
        Page::Running { next } | Page::Data { next, .. } => Some(executing_uri(*next)),
        Page::Finished | Page::Failed(_) => None,
    };
    let partial_cancel_uri = match page {
        Page::Data { next, .. } => {
            let token = next - 1;
            let slug = query.slug(SlugContext::Executing, token);
            Some(format!("{base}/v1/statement/executing/partialCancel/{id}/0/{slug}/{token}"))
        }
        _ => None,
    };
    let plan = query.plan();
    let executing = matches!(page, Page::Running { .. } | Page::Data { .. } | Page::Finished);
    let columns = match plan {
        _ if !executing => None,
        Plan::Rows { .. } => Some(ROWS_COLUMNS),
        Plan::Session { .. } => Some(SESSION_COLUMNS),
        Plan::Update { .. } => Some(UPDATE_COLUMNS),
        Plan::Fail(_) => None,
    };
    let (data, update_type, headers) = match (plan, page) {
        (Plan::Rows { rows, .. }, Page::Data { index, .. }) => match ctx.spooling {
            Some(spooling) => (encoded(ctx, spooling, *index, *rows), None, &[][..]),
            None => (Some(Data::Rows(ctx.rows.json(index + 1, *rows))), None, &[][..]),
        },
        (Plan::Session { rows }, Page::Data { .. }) => (Some(Data::Session(rows)), None, &[][..]),
        (Plan::Update { update_type, headers }, Page::Finished) => {
            (Some(Data::True), Some(*update_type), &headers[..])
        }
        (Plan::Update { update_type, .. }, Page::Running { .. }) => (None, Some(*update_type), &[][..]),
        _ => (None, None, &[][..]),
    };
    let error = match page {
        Page::Failed(error) => Some(error_json(error)),
        _ => None,
    };
    let results = QueryResults {
        id,
        info_uri: info_uri(base, id, ctx.version),
        partial_cancel_uri,
        next_uri,
        columns,
        data,
        stats: stats(page.state(), query.progress(ctx.now)),
        error,
        warnings: [],
        update_type,
    };
    let shared = match &results.data {
        Some(Data::Rows(array)) => Some(array.clone()),
        _ => None,
    };
    let mut body = Splice { shared, pieces: Vec::new(), current: Vec::with_capacity(1024) };
    serde_json::to_writer(&mut body, &results).expect("serialising to memory cannot fail");
    Rendered { body: body.finish(), headers }
}

/// Collects serialised JSON in pieces. When the serialiser writes the very bytes of `shared` (it writes a
/// raw value with one `write_all` of its text), they become a piece of their own, by reference; everything
/// else is copied. Should a serialiser ever write them differently, they are copied too: same bytes.
struct Splice {
    shared: Option<Arc<RawValue>>,
    pieces: Vec<Bytes>,
    current: Vec<u8>,
}

impl std::io::Write for Splice {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.shared {
            Some(array) if std::ptr::eq(buf, array.get().as_bytes()) => {
                let before = std::mem::take(&mut self.current);
                self.pieces.push(before.into());
                self.pieces.push(shared_bytes(array.clone()));
            }
            _ => self.current.extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Splice {
    fn finish(mut self) -> Vec<Bytes> {
        self.pieces.push(self.current.into());
        self.pieces.retain(|piece| !piece.is_empty());
        self.pieces
    }
}

/// Data page `index` of `rows` rows as one segment, spooled or inline; no `data` for a page without rows
/// (as Trino's `SpoolingQueryDataProducer`).
fn encoded(ctx: &Context<'_>, spooling: &Spooling<'_>, index: u32, rows: u32) -> Option<Data<'static>> {
    if rows == 0 {
        return None;
    }
    let page = index + 1;
    let row_offset = u64::from(index) * u64::from(rows);
    let array = ctx.rows.json(page, rows);
    let encoded = if spools(spooling.hint, rows) {
        let size = array.get().len() as u64;
        let issued = (spooling.segment)(index, SegmentData { page, rows });
        EncodedData::spooled(spooling.encoding, spooling.download, ctx.base, row_offset, rows, size, &issued)
    } else {
        EncodedData::inline(spooling.encoding, row_offset, rows, array.get().as_bytes())
    };
    Some(Data::Encoded(encoded))
}

fn error_json(error: &QueryError) -> ErrorJson<'_> {
    ErrorJson {
        message: &error.message,
        error_code: error.code,
        error_name: error.name,
        error_type: error.error_type,
        failure_info: FailureInfo {
            type_name: "io.trino.spi.TrinoException",
            message: &error.message,
            suppressed: [],
            stack: [],
        },
    }
}

fn stats(state: State, progress: Progress) -> Stats {
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let scheduled = state != State::Queued;
    let done = matches!(state, State::Finished | State::Failed);
    let percentage = (progress.total_splits > 0 && scheduled)
        .then(|| f64::from(progress.completed_splits) * 100.0 / f64::from(progress.total_splits));
    Stats {
        state: state.as_str(),
        queued: state == State::Queued,
        scheduled,
        progress_percentage: percentage,
        running_percentage: scheduled.then_some(0.0),
        nodes: u32::from(scheduled),
        total_splits: progress.total_splits,
        queued_splits: if scheduled || done { 0 } else { progress.total_splits },
        running_splits: 0,
        completed_splits: progress.completed_splits,
        cpu_time_millis: 0,
        wall_time_millis: millis(progress.elapsed.saturating_sub(progress.queued_time)),
        queued_time_millis: millis(progress.queued_time),
        elapsed_time_millis: millis(progress.elapsed),
        processed_rows: progress.processed_rows,
        processed_bytes: progress.processed_rows * 24,
        physical_input_bytes: progress.processed_rows * 24,
        physical_written_bytes: 0,
        peak_memory_bytes: 0,
        spilled_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::slug::Slug;
    use crate::spooling::SegmentData;

    const ID: &str = "20250101_000000_00000_abcde";

    fn rendered(plan: Plan, page: &Page) -> (Value, Vec<ResponseHeader>) {
        rendered_as(plan, page, "482".parse().unwrap())
    }

    fn rendered_as(plan: Plan, page: &Page, version: Version) -> (Value, Vec<ResponseHeader>) {
        let now = Instant::now();
        let query = Query::new(plan, Slug::with_key(1), 1, Duration::ZERO, now);
        let page_rows = PageRows::new("east");
        let ctx = Context { base: "http://envoy:8080", rows: &page_rows, now, version, spooling: None };
        let out = render(&ctx, ID, &query, page);
        (serde_json::from_slice(&out.body.concat()).unwrap(), out.headers.to_vec())
    }

    fn slug(context: SlugContext, token: u64) -> String {
        Slug::with_key(1).make(context, token)
    }

    // conformance: U2, U3
    #[test]
    fn info_uri_by_version() {
        for (version, expected) in [
            ("441", format!("http://envoy:8080/ui/query.html?{ID}")),
            ("482", format!("http://envoy:8080/ui/query.html?{ID}")),
            ("483", format!("http://envoy:8080/ui#/queries/{ID}")),
        ] {
            let (v, _) = rendered_as(
                Plan::Rows { pages: 1, rows: 1 },
                &Page::Queued { next: 1 },
                version.parse().unwrap(),
            );
            assert_eq!(v["infoUri"], expected, "{version}");
        }
    }

    // conformance: S1
    #[test]
    fn queued_page() {
        let (v, headers) = rendered(Plan::Rows { pages: 1, rows: 1 }, &Page::Queued { next: 1 });
        assert_eq!(v["id"], ID);
        assert_eq!(v["infoUri"], format!("http://envoy:8080/ui/query.html?{ID}"));
        let next = format!("http://envoy:8080/v1/statement/queued/{ID}/{}/1", slug(SlugContext::Queued, 1));
        assert_eq!(v["nextUri"], next);
        assert_eq!(
            (v["stats"]["state"].clone(), v["stats"]["queued"].clone()),
            (json!("QUEUED"), json!(true))
        );
        for key in ["columns", "data", "error", "partialCancelUri", "updateType"] {
            assert!(v.get(key).is_none(), "{key}");
        }
        for key in [
            "scheduled",
            "nodes",
            "totalSplits",
            "queuedSplits",
            "runningSplits",
            "completedSplits",
            "cpuTimeMillis",
            "wallTimeMillis",
            "queuedTimeMillis",
            "elapsedTimeMillis",
            "processedRows",
            "processedBytes",
            "physicalInputBytes",
            "peakMemoryBytes",
            "spilledBytes",
        ] {
            assert!(v["stats"].get(key).is_some(), "stats.{key}");
        }
        assert!(headers.is_empty());
    }

    #[test]
    fn dispatched_page_points_at_executing_zero() {
        let (v, _) = rendered(Plan::Rows { pages: 1, rows: 1 }, &Page::Dispatched);
        let next =
            format!("http://envoy:8080/v1/statement/executing/{ID}/{}/0", slug(SlugContext::Executing, 0));
        assert_eq!(v["nextUri"], next);
    }

    #[test]
    fn data_page() {
        let (v, _) = rendered(Plan::Rows { pages: 3, rows: 2 }, &Page::Data { index: 1, next: 2 });
        assert_eq!(v["data"], json!([["east", 2, 1], ["east", 2, 2]]));
        assert_eq!(v["columns"][0]["typeSignature"]["rawType"], "varchar");
        assert_eq!(v["columns"][1]["type"], "bigint");
        assert_eq!(v["stats"]["state"], "RUNNING");
        let pc = format!(
            "http://envoy:8080/v1/statement/executing/partialCancel/{ID}/0/{}/1",
            slug(SlugContext::Executing, 1)
        );
        assert_eq!(v["partialCancelUri"], pc);
    }

    #[test]
    fn data_page_rows_are_shared_not_copied() {
        let now = Instant::now();
        let query = Query::new(Plan::Rows { pages: 1, rows: 3 }, Slug::with_key(1), 1, Duration::ZERO, now);
        let page_rows = PageRows::new("east");
        let ctx = Context {
            base: "http://envoy:8080",
            rows: &page_rows,
            now,
            version: Version::NEWEST,
            spooling: None,
        };
        let out = render(&ctx, ID, &query, &Page::Data { index: 0, next: 1 });
        let array = page_rows.json(1, 3);
        assert_eq!(out.body.len(), 3);
        assert_eq!(out.body[1].as_ptr(), array.get().as_ptr());
        assert!(out.body[0].ends_with(b"\"data\":") && out.body[2].starts_with(b",\"stats\":"));
        let v: Value = serde_json::from_slice(&out.body.concat()).unwrap();
        assert_eq!(v["data"], json!([["east", 1, 1], ["east", 1, 2], ["east", 1, 3]]));
        // Other pages are one piece.
        assert_eq!(render(&ctx, ID, &query, &Page::Finished).body.len(), 1);
    }

    #[test]
    fn final_pages() {
        let (v, _) = rendered(Plan::Rows { pages: 1, rows: 1 }, &Page::Finished);
        assert!(v.get("nextUri").is_none() && v.get("data").is_none());
        assert_eq!(v["stats"]["state"], "FINISHED");

        let header = ResponseHeader { name: "x-trino-set-session", value: "a=1".to_owned() };
        let plan = Plan::Update { update_type: "SET SESSION", headers: vec![header.clone()] };
        let (v, headers) = rendered(plan, &Page::Finished);
        assert_eq!((v["updateType"].clone(), v["data"].clone()), (json!("SET SESSION"), json!([[true]])));
        assert_eq!(headers, vec![header]);

        let (v, _) =
            rendered(Plan::Fail(QueryError::internal("boom")), &Page::Failed(QueryError::internal("boom")));
        assert_eq!(v["stats"]["state"], "FAILED");
        assert_eq!(v["error"]["errorName"], "GENERIC_INTERNAL_ERROR");
        assert_eq!(v["error"]["errorType"], "INTERNAL_ERROR");
        assert_eq!(v["error"]["errorCode"], 65536);
        assert_eq!(v["error"]["message"], "boom");
    }

    /// A data page rendered for a client that negotiated `json`, with the `spooled` hint; also returns
    /// the segments issued.
    fn encoded_page(hint: Option<bool>, rows: u32, page: &Page) -> (Value, Vec<(u32, SegmentData)>) {
        let now = Instant::now();
        let query = Query::new(Plan::Rows { pages: 3, rows }, Slug::with_key(1), 1, Duration::ZERO, now);
        let issued = std::cell::RefCell::new(Vec::new());
        let segment = |index, data| {
            issued.borrow_mut().push((index, data));
            Issued { identifier: "ab".repeat(16), key: "k".to_owned(), expires_unix_ms: 0 }
        };
        let spooling = Spooling {
            encoding: "json",
            hint,
            download: "http://127.0.0.1:9/v1/emulator/storage",
            segment: &segment,
        };
        let page_rows = PageRows::new("east");
        let ctx = Context {
            base: "http://envoy:8080",
            rows: &page_rows,
            now,
            version: Version::NEWEST,
            spooling: Some(&spooling),
        };
        let out = render(&ctx, ID, &query, page);
        (serde_json::from_slice(&out.body.concat()).unwrap(), issued.into_inner())
    }

    // conformance: SP1, SP4
    #[test]
    fn encoded_data_pages() {
        let page = Page::Data { index: 1, next: 2 };
        let rows = br#"[["east",2,1],["east",2,2]]"#;
        let (v, issued) = encoded_page(None, 2, &page);
        let segment = &v["data"]["segments"][0];
        assert_eq!(
            (v["data"]["encoding"].as_str(), segment["type"].as_str()),
            (Some("json"), Some("inline"))
        );
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(segment["data"].as_str().unwrap());
        assert_eq!(decoded.unwrap(), rows);
        assert_eq!(segment["metadata"], json!({"rowOffset": 2, "rowsCount": 2, "segmentSize": rows.len()}));
        assert!(issued.is_empty());
        assert_eq!(v["columns"][0]["name"], "cluster");

        let (v, issued) = encoded_page(Some(true), 2, &page);
        let segment = &v["data"]["segments"][0];
        assert_eq!(segment["type"], "spooled");
        let id = "ab".repeat(16);
        // Downloaded where the retrieval mode says, acknowledged at the coordinator's external URI.
        assert_eq!(segment["uri"], format!("http://127.0.0.1:9/v1/emulator/storage/{id}"));
        assert_eq!(segment["ackUri"], format!("http://envoy:8080/v1/spooled/ack/{id}"));
        assert_eq!(segment["metadata"]["segmentSize"], rows.len());
        assert_eq!(segment["headers"], json!({"X-Trino-Emulator-Segment-Key": ["k"]}));
        assert_eq!(issued, vec![(1, SegmentData { page: 2, rows: 2 })]);
        assert_eq!(PageRows::new("east").json(2, 2).get().as_bytes(), rows);

        // Big pages spool without a hint; `spooled=0` inlines them; a page without rows has no data.
        let big = crate::spooling::INLINE_MAX_ROWS + 1;
        assert_eq!(encoded_page(None, big, &page).0["data"]["segments"][0]["type"], "spooled");
        assert_eq!(encoded_page(Some(false), big, &page).0["data"]["segments"][0]["type"], "inline");
        let (v, issued) = encoded_page(Some(true), 0, &page);
        assert!(v.get("data").is_none() && issued.is_empty());
        // Pages without data are as in the direct protocol.
        let (v, _) = encoded_page(Some(true), 2, &Page::Finished);
        assert!(v.get("data").is_none());
    }

    #[test]
    fn session_rows() {
        let plan = Plan::Session { rows: vec![("a".to_owned(), "1".to_owned())] };
        let (v, _) = rendered(plan, &Page::Data { index: 0, next: 1 });
        assert_eq!(v["data"], json!([["a", "1"]]));
        assert_eq!(v["columns"][0]["name"], "Name");
    }
}
