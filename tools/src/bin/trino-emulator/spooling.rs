//! The spooling protocol (Trino 466+): encoding negotiation, the encoded `data` of a result page, and the
//! segments this process issued, in the retrieval mode `--spooling-retrieval` names ([`Retrieval`], rows
//! SP1–SP4 of docs/trino-conformance.md). In Trino's default mode, STORAGE, a segment's `uri` is a
//! pre-signed object-store URL the client downloads from without the coordinator: the emulator plays that
//! object store itself on its own listening address (`/v1/emulator/storage/{identifier}`, never under
//! the external URI a client was given), and the coordinator's own download resource answers 503. Acks
//! always go to the coordinator (`ackUri` under the external URI).
//!
//! Negotiation: a POST carrying `X-Trino-Query-Data-Encoding` (a comma-separated preference list) gets the
//! first encoding the emulator knows ([`select_encoding`]; only `json`, so `json+zstd,json+lz4,json`
//! selects `json`). No header, or no known encoding: the direct protocol (inline row arrays), as a Trino
//! with spooling disabled answers. As in Trino, only queries that return rows use it (`SHOW SESSION`,
//! updates and failures answer as before). No response header names the encoding: `data.encoding` does.
//!
//! A data page of such a query has `data` = `{"encoding": "json", "segments": [segment]}` (one segment per
//! page; a page without rows has no `data`). A segment is
//! - inline: `{"type": "inline", "data": base64(rows JSON), "metadata": {"rowOffset", "rowsCount",
//!   "segmentSize"}}`, or
//! - spooled: `{"type": "spooled", "uri": "{storage}/{identifier}" (STORAGE) or
//!   "{base}/v1/spooled/download/{identifier}", "ackUri": "{base}/v1/spooled/ack/{identifier}", "metadata":
//!   {"rowOffset", "rowsCount", "segmentSize", "expiresAt"}, "headers": {"X-Trino-Emulator-Segment-Key":
//!   [key]}}`.
//!
//! Spooled or inline ([`spools`]): the `spooled=1` hint spools every data page, `spooled=0` none; without
//! the hint a page is spooled when it has more than [`INLINE_MAX_ROWS`] rows (Trino's default
//! `protocol.spooling.inlining.max-rows`).
//!
//! Identifiers are 128 random bits (32 hex digits): opaque, unpredictable, and free of the query id, like
//! Trino's encrypted ones. Each spooled segment also carries a random key in a header the client must echo
//! on download and ack (as Trino's segment encryption keys travel); a known identifier with a missing or
//! wrong key is refused. [`Segments`] remembers what it issued: a download returns the rows (any number of
//! times), an ack forgets the segment, and so does expiry (`expiresAt`, `--forget-after-secs` after issue).
//! Anything else is unknown: 404.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;

/// The request header listing the encodings a client accepts.
pub const ENCODING_HEADER: &str = "x-trino-query-data-encoding";
/// The header each spooled segment asks the client to echo on download and ack.
pub const KEY_HEADER: &str = "x-trino-emulator-segment-key";
/// The header name as it appears in a segment's `headers`.
const KEY_HEADER_JSON: &str = "X-Trino-Emulator-Segment-Key";
/// Without a `spooled` hint, data pages with more rows than this are spooled, smaller ones inlined.
pub const INLINE_MAX_ROWS: u32 = 1000;

/// `protocol.spooling.retrieval-mode` (Trino's `SpoolingConfig.SegmentRetrievalMode`; WORKER_PROXY is not
/// modelled: the emulator has no workers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Retrieval {
    /// Trino's default: `uri` is the object store's (pre-signed); the coordinator's download answers 503.
    #[default]
    Storage,
    /// `uri` is the coordinator's download resource, which answers 303 to the object store.
    CoordinatorStorageRedirect,
    /// `uri` is the coordinator's download resource, which streams the bytes.
    CoordinatorProxy,
}

impl Retrieval {
    pub fn as_str(self) -> &'static str {
        match self {
            Retrieval::Storage => "STORAGE",
            Retrieval::CoordinatorStorageRedirect => "COORDINATOR_STORAGE_REDIRECT",
            Retrieval::CoordinatorProxy => "COORDINATOR_PROXY",
        }
    }
}

/// The path under which the emulator plays the object store of STORAGE mode.
pub const STORAGE_PATH: &str = "/v1/emulator/storage";

/// The encodings the emulator can produce.
const KNOWN_ENCODINGS: &[&str] = &["json"];

/// The first encoding of the client's preference list the emulator knows, as Trino's
/// `PreferredQueryDataEncoderSelector` picks it.
pub fn select_encoding(header: &str) -> Option<&'static str> {
    header
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .find_map(|wanted| KNOWN_ENCODINGS.iter().copied().find(|known| *known == wanted))
}

/// Whether a data page of `rows` rows is spooled, given the `spooled` hint.
pub fn spools(hint: Option<bool>, rows: u32) -> bool {
    rows > 0 && hint.unwrap_or(rows > INLINE_MAX_ROWS)
}

/// What a spooled segment holds: data page `page` (1-based) of `rows` rows, regenerated on download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentData {
    pub page: u32,
    pub rows: u32,
}

/// A spooled segment as handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub identifier: String,
    /// The value of [`KEY_HEADER`] the client must send back.
    pub key: String,
    /// Milliseconds since the epoch.
    pub expires_unix_ms: u128,
}

/// Per-query segment counts, for `/v1/emulator/queries`.
#[derive(Debug, Default)]
pub struct SegmentCounts {
    pub issued: AtomicU64,
    pub downloaded: AtomicU64,
    pub acked: AtomicU64,
}

impl SegmentCounts {
    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "issued": get(&self.issued),
            "downloaded": get(&self.downloaded),
            "acked": get(&self.acked),
        })
    }
}

/// The spooling state of one query that negotiated an encoding.
#[derive(Debug)]
pub struct QuerySpooling {
    pub encoding: &'static str,
    /// The `spooled` hint.
    pub hint: Option<bool>,
    pub counts: Arc<SegmentCounts>,
    /// The last page's segment: a repeated page (same token) names the same segment.
    last: Mutex<Option<(u32, Issued)>>,
}

impl QuerySpooling {
    pub fn new(encoding: &'static str, hint: Option<bool>) -> Self {
        Self { encoding, hint, counts: Arc::default(), last: Mutex::default() }
    }

    /// The segment of data page `index`: the one issued before for the same page, else a new one.
    pub fn segment_for(&self, index: u32, issue: impl FnOnce() -> Issued) -> Issued {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match &*last {
            Some((i, issued)) if *i == index => issued.clone(),
            _ => {
                let issued = issue();
                self.counts.issued.fetch_add(1, Ordering::Relaxed);
                *last = Some((index, issued.clone()));
                issued
            }
        }
    }
}

/// Why a segment request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 404: never issued here, acknowledged, or expired.
    NotFound,
    /// 400: a known segment, but the request lacks the key header or carries a wrong one.
    BadKey,
}

#[derive(Debug)]
struct Segment {
    data: SegmentData,
    key: String,
    counts: Arc<SegmentCounts>,
    expires: Instant,
}

/// Every spooled segment this process issued and nobody acknowledged yet.
#[derive(Debug)]
pub struct Segments {
    map: Mutex<HashMap<String, Segment>>,
    ttl: Duration,
}

impl Segments {
    /// Segments expire `ttl` after they are issued.
    pub fn new(ttl: Duration) -> Self {
        Self { map: Mutex::default(), ttl }
    }

    /// Issues a segment for `data` at `now` (`unix_ms` on the wall clock), counted in `counts`.
    pub fn issue(
        &self,
        data: SegmentData,
        counts: &Arc<SegmentCounts>,
        now: Instant,
        unix_ms: u128,
    ) -> Issued {
        let key = random_hex();
        let segment = Segment { data, key: key.clone(), counts: counts.clone(), expires: now + self.ttl };
        let mut map = self.lock();
        let identifier = loop {
            let candidate = random_hex();
            if !map.contains_key(&candidate) {
                break candidate;
            }
        };
        map.insert(identifier.clone(), segment);
        Issued { identifier, key, expires_unix_ms: unix_ms + self.ttl.as_millis() }
    }

    /// A download: the segment's rows, when `identifier` is live and `key` is its key.
    pub fn download(
        &self,
        identifier: &str,
        key: Option<&str>,
        now: Instant,
    ) -> Result<SegmentData, Refusal> {
        let map = self.lock();
        let segment = live(&map, identifier, key, now)?;
        segment.counts.downloaded.fetch_add(1, Ordering::Relaxed);
        Ok(segment.data)
    }

    /// An acknowledgement: forgets the segment.
    pub fn ack(&self, identifier: &str, key: Option<&str>, now: Instant) -> Result<(), Refusal> {
        let mut map = self.lock();
        live(&map, identifier, key, now)?;
        if let Some(segment) = map.remove(identifier) {
            segment.counts.acked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Forgets the segments expired at `now`; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, segment| segment.expires > now);
        before - map.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Segment>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn live<'m>(
    map: &'m HashMap<String, Segment>,
    identifier: &str,
    key: Option<&str>,
    now: Instant,
) -> Result<&'m Segment, Refusal> {
    let segment = map.get(identifier).filter(|s| s.expires > now).ok_or(Refusal::NotFound)?;
    if key != Some(segment.key.as_str()) {
        return Err(Refusal::BadKey);
    }
    Ok(segment)
}

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The encoded `data` of one page (`EncodedQueryData` in Trino's client).
#[derive(Debug, Serialize)]
pub struct EncodedData {
    encoding: &'static str,
    segments: [SegmentJson; 1],
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum SegmentJson {
    Inline {
        data: String,
        metadata: Metadata,
    },
    Spooled {
        uri: String,
        #[serde(rename = "ackUri")]
        ack_uri: String,
        metadata: Metadata,
        headers: HashMap<&'static str, [String; 1]>,
    },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    row_offset: u64,
    rows_count: u64,
    segment_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

impl EncodedData {
    /// One inline segment of `bytes` (the rows' JSON), holding `rows` rows from `row_offset` on.
    pub fn inline(encoding: &'static str, row_offset: u64, rows: u32, bytes: &[u8]) -> Self {
        let metadata = Metadata {
            row_offset,
            rows_count: u64::from(rows),
            segment_size: bytes.len() as u64,
            expires_at: None,
        };
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        Self { encoding, segments: [SegmentJson::Inline { data, metadata }] }
    }

    /// One spooled segment of `size` bytes, downloaded from `{download}/{identifier}` and acknowledged
    /// at `{base}/v1/spooled/ack/{identifier}` (`base`: `scheme://host[:port][/prefix]`).
    pub fn spooled(
        encoding: &'static str,
        download: &str,
        base: &str,
        row_offset: u64,
        rows: u32,
        size: u64,
        issued: &Issued,
    ) -> Self {
        let id = &issued.identifier;
        let metadata = Metadata {
            row_offset,
            rows_count: u64::from(rows),
            segment_size: size,
            expires_at: Some(iso_instant(issued.expires_unix_ms)),
        };
        Self {
            encoding,
            segments: [SegmentJson::Spooled {
                uri: format!("{download}/{id}"),
                ack_uri: format!("{base}/v1/spooled/ack/{id}"),
                metadata,
                headers: HashMap::from([(KEY_HEADER_JSON, [issued.key.clone()])]),
            }],
        }
    }
}

/// `yyyy-MM-ddTHH:mm:ss.SSSZ`, as Java's `Instant.toString()` prints whole milliseconds.
fn iso_instant(unix_ms: u128) -> String {
    let secs = u64::try_from(unix_ms / 1000).unwrap_or(u64::MAX);
    let (year, month, day) = crate::query_id::civil_from_days(secs / 86_400);
    let day_secs = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DATA: SegmentData = SegmentData { page: 2, rows: 3 };

    fn issue(segments: &Segments, counts: &Arc<SegmentCounts>, now: Instant) -> Issued {
        segments.issue(DATA, counts, now, 1_735_689_600_000)
    }

    fn counts(c: &SegmentCounts) -> (u64, u64, u64) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (get(&c.issued), get(&c.downloaded), get(&c.acked))
    }

    #[test]
    fn encoding_negotiation() {
        for (header, expected) in [
            ("json", Some("json")),
            ("json+zstd,json+lz4,json", Some("json")),
            (" json+zstd , json ", Some("json")),
            ("json+zstd,json+lz4", None),
            ("JSON", None),
            ("", None),
            (",,", None),
            ("arrow-ipc,json", Some("json")),
        ] {
            assert_eq!(select_encoding(header), expected, "{header:?}");
        }
    }

    #[test]
    fn spooled_or_inline() {
        for (hint, rows, expected) in [
            (None, 1, false),
            (None, INLINE_MAX_ROWS, false),
            (None, INLINE_MAX_ROWS + 1, true),
            (Some(true), 1, true),
            (Some(false), 100_000, false),
            (Some(true), 0, false),
            (None, 0, false),
        ] {
            assert_eq!(spools(hint, rows), expected, "{hint:?} {rows}");
        }
    }

    #[test]
    fn issue_download_ack() {
        let segments = Segments::new(Duration::from_secs(60));
        let c = Arc::new(SegmentCounts::default());
        let now = Instant::now();
        let a = issue(&segments, &c, now);
        let b = issue(&segments, &c, now);
        assert_ne!(a.identifier, b.identifier);
        assert_ne!(a.key, b.key);
        for id in [&a.identifier, &a.key] {
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        assert_eq!(a.expires_unix_ms, 1_735_689_660_000);
        // Downloads may repeat until the ack.
        assert_eq!(segments.download(&a.identifier, Some(&a.key), now), Ok(DATA));
        assert_eq!(segments.download(&a.identifier, Some(&a.key), now), Ok(DATA));
        assert_eq!(segments.ack(&a.identifier, Some(&a.key), now), Ok(()));
        assert_eq!(segments.download(&a.identifier, Some(&a.key), now), Err(Refusal::NotFound));
        assert_eq!(segments.ack(&a.identifier, Some(&a.key), now), Err(Refusal::NotFound));
        // `issued` is counted by `QuerySpooling`, the rest here.
        assert_eq!(counts(&c), (0, 2, 1));
        assert_eq!(segments.len(), 1);
    }

    #[test]
    fn unknown_identifiers_and_wrong_keys() {
        let segments = Segments::new(Duration::from_secs(60));
        let c = Arc::new(SegmentCounts::default());
        let now = Instant::now();
        let a = issue(&segments, &c, now);
        let forged = format!("{:032x}", u128::from_str_radix(&a.identifier, 16).unwrap() ^ 1);
        for id in [forged.as_str(), "", "../x", &a.identifier[..31]] {
            assert_eq!(segments.download(id, Some(&a.key), now), Err(Refusal::NotFound), "{id}");
            assert_eq!(segments.ack(id, Some(&a.key), now), Err(Refusal::NotFound), "{id}");
        }
        // Another Segments (another emulator) never heard of it.
        let other = Segments::new(Duration::from_secs(60));
        assert_eq!(other.download(&a.identifier, Some(&a.key), now), Err(Refusal::NotFound));
        for key in [None, Some(""), Some(a.identifier.as_str())] {
            assert_eq!(segments.download(&a.identifier, key, now), Err(Refusal::BadKey), "{key:?}");
            assert_eq!(segments.ack(&a.identifier, key, now), Err(Refusal::BadKey), "{key:?}");
        }
        // Refusals neither count nor forget.
        assert_eq!(counts(&c), (0, 0, 0));
        assert_eq!(segments.download(&a.identifier, Some(&a.key), now), Ok(DATA));
    }

    #[test]
    fn segments_expire() {
        let segments = Segments::new(Duration::from_secs(60));
        let c = Arc::new(SegmentCounts::default());
        let t0 = Instant::now();
        let a = issue(&segments, &c, t0);
        let b = issue(&segments, &c, t0 + Duration::from_secs(30));
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(segments.download(&a.identifier, Some(&a.key), t1), Err(Refusal::NotFound));
        assert_eq!(segments.download(&b.identifier, Some(&b.key), t1), Ok(DATA));
        assert_eq!(segments.expire(t1), 1);
        assert_eq!(segments.len(), 1);
        assert_eq!(segments.expire(t0 + Duration::from_secs(91)), 1);
        assert_eq!(segments.len(), 0);
    }

    #[test]
    fn a_repeated_page_names_the_same_segment() {
        let segments = Segments::new(Duration::from_secs(60));
        let spooling = QuerySpooling::new("json", Some(true));
        let now = Instant::now();
        let segment = |index| spooling.segment_for(index, || issue(&segments, &spooling.counts, now));
        let first = segment(0);
        assert_eq!(segment(0), first);
        let second = segment(1);
        assert_ne!(second, first);
        assert_eq!(segment(1), second);
        assert_eq!(counts(&spooling.counts).0, 2);
        assert_eq!(segments.len(), 2);
    }

    #[test]
    fn wire_shapes() {
        let inline = EncodedData::inline("json", 6, 2, br#"[["east",3,1],["east",3,2]]"#);
        assert_eq!(
            serde_json::to_value(&inline).unwrap(),
            json!({"encoding": "json", "segments": [{
                "type": "inline",
                "data": "W1siZWFzdCIsMywxXSxbImVhc3QiLDMsMl1d",
                "metadata": {"rowOffset": 6, "rowsCount": 2, "segmentSize": 27},
            }]})
        );
        let issued = Issued {
            identifier: "0123456789abcdef0123456789abcdef".to_owned(),
            key: "k".to_owned(),
            expires_unix_ms: 1_735_689_600_123,
        };
        let base = "http://envoy:8080/p";
        let spooled =
            EncodedData::spooled("json", &format!("{base}/v1/spooled/download"), base, 0, 2, 27, &issued);
        assert_eq!(
            serde_json::to_value(&spooled).unwrap(),
            json!({"encoding": "json", "segments": [{
                "type": "spooled",
                "uri": "http://envoy:8080/p/v1/spooled/download/0123456789abcdef0123456789abcdef",
                "ackUri": "http://envoy:8080/p/v1/spooled/ack/0123456789abcdef0123456789abcdef",
                "metadata": {
                    "rowOffset": 0, "rowsCount": 2, "segmentSize": 27,
                    "expiresAt": "2025-01-01T00:00:00.123Z",
                },
                "headers": {"X-Trino-Emulator-Segment-Key": ["k"]},
            }]})
        );
    }
}
