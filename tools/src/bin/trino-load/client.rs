//! One virtual client: a single keep-alive HTTP/1.1 connection of its own (hyper's `client::conn::http1`
//! over one `TcpStream`), running whole query lifecycles in a loop: `POST` the statement, then `GET`
//! every `nextUri` until there is none.
//!
//! Answers are read only as far as the load needs: `nextUri`, `error` (its message) and the number of
//! rows in `data`. `data` (megabytes on big pages) is only skimmed: a structural scan finds where it
//! ends and counts its elements ([`find_data`]); serde reads the rest (a borrowed struct, everything
//! else skipped). A `nextUri` is followed on the client's own connection by its path and query (its
//! scheme and authority are not looked at).
//!
//! At the end of the run a request still in flight is abandoned, and the query it belonged to gets a
//! best-effort `DELETE` on its current `nextUri` (not counted) so the server does not keep it.

use std::borrow::Cow;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::stats::{Kind, Recorder};

/// How long a client waits after a transport error before it tries again.
const BACKOFF: Duration = Duration::from_millis(50);
/// How long the final best-effort `DELETE` may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Where a `--url` points: the address to connect to, the Host header, and the statement path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    connect: String,
    host: HeaderValue,
    statement: Uri,
}

impl Target {
    /// `http://host[:port][/prefix]`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("--url {url}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("--url {url}: only http:// URLs are supported"));
        }
        let authority = uri.authority().ok_or_else(|| format!("--url {url}: no host"))?;
        let connect = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{}:80", authority.host()),
        };
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| format!("--url {url}: {e}"))?;
        let prefix = uri.path().trim_end_matches('/');
        let statement = format!("{prefix}/v1/statement").parse().map_err(|e| format!("--url {url}: {e}"))?;
        Ok(Target { connect, host, statement })
    }
}

/// The parts of a `QueryResults` the load looks at (`data` is skimmed separately).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<'a> {
    #[serde(borrow)]
    next_uri: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error: Option<QueryError<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryError<'a> {
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error_name: Option<Cow<'a, str>>,
}

/// Where the value of the top-level key `"data"` of a JSON object is, and how many elements it has
/// when it is an array (0 otherwise). A quick structural scan: strings are skipped whole (so brackets and
/// commas inside them do not count), nothing is validated; `None` when there is no such key or the text
/// does not look like an object (serde then reads the whole answer, and reports what is wrong).
fn find_data(body: &[u8]) -> Option<(Range<usize>, u64)> {
    let mut i = skip_whitespace(body, 0);
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_whitespace(body, i);
        if body.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(body, i)?;
        let key = &body[i + 1..key_end - 1];
        i = skip_whitespace(body, key_end);
        if body.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_whitespace(body, i + 1);
        let (end, elements) = skip_value(body, start)?;
        if key == b"data" {
            return Some((start..end, elements));
        }
        i = skip_whitespace(body, end);
        if body.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

fn skip_whitespace(body: &[u8], mut i: usize) -> usize {
    while body.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// From the opening quote at `i`: the index after the closing quote.
fn skip_string(body: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match *body.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The value starting at `start`: the index after it, and its number of elements if it is an array.
fn skip_value(body: &[u8], start: usize) -> Option<(usize, u64)> {
    let mut depth = 0u32;
    let mut commas = 0u64;
    let mut i = start;
    loop {
        match *body.get(i)? {
            b'"' => {
                i = skip_string(body, i)?;
                if depth == 0 {
                    return Some((i, 0));
                }
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' if depth == 0 => return Some((i, 0)),
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 0 => return Some((i, 0)),
            b',' if depth == 1 => commas += 1,
            _ => {}
        }
        i += 1;
    }
    let empty = body.get(skip_whitespace(body, start + 1)) == Some(&body[i]);
    let elements = if body[start] == b'[' && !empty { commas + 1 } else { 0 };
    Some((i + 1, elements))
}

/// What one answer means for the query.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Next(Uri),
    Finished,
    Failed(String),
}

/// Reads an answer body: the outcome and the rows it carried.
fn read_page(body: &[u8]) -> (Outcome, u64) {
    let without_data;
    let (json, rows) = match find_data(body) {
        Some((range, rows)) => {
            without_data = [&body[..range.start], b"null", &body[range.end..]].concat();
            (&without_data[..], rows)
        }
        None => (body, 0),
    };
    let page: Page = match serde_json::from_slice(json) {
        Ok(page) => page,
        Err(e) => return (Outcome::Failed(format!("unreadable answer: {e}")), 0),
    };
    let outcome = match (page.error, page.next_uri) {
        (Some(error), _) => Outcome::Failed(format!(
            "query failed: {}: {}",
            error.error_name.as_deref().unwrap_or("?"),
            error.message.as_deref().unwrap_or("")
        )),
        (None, Some(next)) => match origin_form(&next) {
            Ok(uri) => Outcome::Next(uri),
            Err(e) => Outcome::Failed(format!("bad nextUri {next:?}: {e}")),
        },
        (None, None) => Outcome::Finished,
    };
    (outcome, rows)
}

/// The path and query of an absolute URI, as a request target on an open connection.
fn origin_form(uri: &str) -> Result<Uri, http::Error> {
    let uri: Uri = uri.parse()?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Ok(Uri::try_from(path)?)
}

pub struct Client {
    target: Target,
    /// Sent with every request (the Host header included).
    headers: HeaderMap,
    sql: Bytes,
    end: Instant,
    connection: Option<SendRequest<Full<Bytes>>>,
    body: Vec<u8>,
    record: Recorder,
}

impl Client {
    pub fn new(target: Target, mut headers: HeaderMap, sql: Bytes, record: Recorder, end: Instant) -> Self {
        headers.insert(HOST, target.host.clone());
        Self { target, headers, sql, end, connection: None, body: Vec::new(), record }
    }

    /// Runs queries until the end of the run; returns what it measured.
    pub async fn run(mut self) -> Recorder {
        while Instant::now() < self.end {
            self.query().await;
        }
        self.record
    }

    /// One query, from its POST to its final page (or an error, or the end of the run).
    async fn query(&mut self) {
        let mut next: Option<Uri> = None;
        loop {
            let (kind, method, uri, body) = match &next {
                None => (Kind::Post, Method::POST, self.target.statement.clone(), self.sql.clone()),
                Some(uri) => (Kind::Followup, Method::GET, uri.clone(), Bytes::new()),
            };
            let sent = Instant::now();
            if sent >= self.end {
                return self.cancel(next).await;
            }
            let status =
                match tokio::time::timeout_at(self.end.into(), self.exchange(method, uri, body)).await {
                    Err(_) => {
                        // The end of the run: abandon the request (and so its connection).
                        self.connection = None;
                        return self.cancel(next).await;
                    }
                    Ok(Err(e)) => {
                        self.connection = None;
                        self.record.error(|| format!("transport error on {kind:?}: {e}"));
                        tokio::time::sleep_until((Instant::now() + BACKOFF).min(self.end).into()).await;
                        return;
                    }
                    Ok(Ok(status)) => status,
                };
            let done = Instant::now();
            if !status.is_success() {
                self.record.request(kind, sent, done, self.body.len(), 0);
                let text = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned();
                self.record.error(|| format!("HTTP {status} on {kind:?}: {text}"));
                return;
            }
            let (outcome, rows) = read_page(&self.body);
            self.record.request(kind, sent, done, self.body.len(), rows);
            match outcome {
                Outcome::Next(uri) => next = Some(uri),
                Outcome::Finished => return self.record.query_done(done),
                Outcome::Failed(message) => return self.record.error(|| message),
            }
        }
    }

    /// Sends one request on the client's connection (opening it first if needed) and reads the whole
    /// answer into `self.body`.
    async fn exchange(&mut self, method: Method, uri: Uri, body: Bytes) -> Result<StatusCode, Error> {
        let sender = match &mut self.connection {
            Some(sender) => sender,
            None => {
                let sender = connect(&self.target.connect).await?;
                self.record.connects += 1;
                self.connection.insert(sender)
            }
        };
        sender.ready().await?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = self.headers.clone();
        let response = sender.send_request(request).await?;
        let (parts, mut body) = response.into_parts();
        self.body.clear();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                self.body.extend_from_slice(&data);
            }
        }
        Ok(parts.status)
    }

    /// Best effort: `DELETE` the query's current `nextUri` so the server forgets it.
    async fn cancel(&mut self, next: Option<Uri>) {
        let Some(uri) = next else { return };
        let deadline = Instant::now() + CANCEL_TIMEOUT;
        let connects = self.record.connects;
        let delete = self.exchange(Method::DELETE, uri, Bytes::new());
        let _ = tokio::time::timeout_at(deadline.into(), delete).await;
        // A connection opened only for this DELETE is not one of the load's.
        self.record.connects = connects;
        self.connection = None;
    }
}

/// Opens a connection and hands its I/O to a task of its own.
async fn connect(address: &str) -> Result<SendRequest<Full<Bytes>>, Error> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.connect.as_str(), t.host.to_str().unwrap()), ("127.0.0.1:8080", "127.0.0.1:8080"));
        assert_eq!(t.statement, "/v1/statement");
        let t = Target::parse("http://localhost/trino/").unwrap();
        assert_eq!(
            (t.connect.as_str(), t.statement.to_string().as_str()),
            ("localhost:80", "/trino/v1/statement")
        );
        assert!(Target::parse("https://x:1").is_err());
        assert!(Target::parse("x:1").is_err());
    }

    #[test]
    fn pages() {
        let next = concat!(
            r#"{"id":"q","nextUri":"http://h:1/v1/statement/executing/q/y1/2?maxWait=1s","#,
            r#""data":[[1],[2],[3]],"stats":{"state":"RUNNING"}}"#
        )
        .as_bytes();
        let (outcome, rows) = read_page(next);
        assert_eq!(outcome, Outcome::Next("/v1/statement/executing/q/y1/2?maxWait=1s".parse().unwrap()));
        assert_eq!(rows, 3);
        assert_eq!(read_page(br#"{"id":"q","stats":{}}"#), (Outcome::Finished, 0));
        let failed =
            br#"{"id":"q","error":{"message":"boom","errorName":"GENERIC_INTERNAL_ERROR","errorCode":1}}"#;
        assert_eq!(
            read_page(failed).0,
            Outcome::Failed("query failed: GENERIC_INTERNAL_ERROR: boom".to_owned())
        );
        let spooled = br#"{"id":"q","data":{"encoding":"json","segments":[{"type":"inline"}]}}"#;
        assert_eq!(read_page(spooled), (Outcome::Finished, 0));
        assert!(matches!(read_page(b"not json").0, Outcome::Failed(m) if m.starts_with("unreadable")));
        let truncated = br#"{"id":"q","data":[[1],[2"#;
        assert!(matches!(read_page(truncated).0, Outcome::Failed(m) if m.starts_with("unreadable")));
    }

    #[test]
    fn data_is_found_and_counted() {
        fn data(json: &str) -> Option<(&str, u64)> {
            find_data(json.as_bytes()).map(|(r, n)| (&json[r], n))
        }
        let tricky = r#"[["a]\",[{", 1], [], {"k": [1, 2]}, ["x,y", null]]"#;
        for (json, expected) in [
            (r#"{"id":"q","data":[[1,"a"],[2,"b"]],"stats":{}}"#, Some((r#"[[1,"a"],[2,"b"]]"#, 2))),
            (r#" { "data" : [ ] , "x": 1 } "#, Some(("[ ]", 0))),
            (r#"{"id":"q","data":[[true]]}"#, Some(("[[true]]", 1))),
            (&format!(r#"{{"id":"q","data":{tricky},"stats":{{}}}}"#), Some((tricky, 4))),
            (
                r#"{"data":{"encoding":"json","segments":[1,2]},"id":"q"}"#,
                Some((r#"{"encoding":"json","segments":[1,2]}"#, 0)),
            ),
            (r#"{"data":null,"id":"q"}"#, Some(("null", 0))),
            (r#"{"stats":{"data":[1,2]},"x":"\"data\":[1]"}"#, None),
            (r#"{"id":"q"}"#, None),
            ("{}", None),
            ("[1,2]", None),
            (r#"{"id":"q","data":[1,2"#, None),
        ] {
            assert_eq!(data(json), expected, "{json}");
        }
    }
}
