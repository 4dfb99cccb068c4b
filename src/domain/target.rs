//! What a Trino request is about, read from its method and path alone: a new statement, a request about
//! one query (and which), a spooled segment, or anything else.
//!
//! Paths are matched as a coordinator's Jersey matches its resources (docs/trino-conformance.md, M1–M5):
//! on the path as received (`:path`, not decoded: `/v1/%73tatement` is no statement, M3), with every
//! segment's matrix parameters dropped (`/v1/statement;x=1` is `/v1/statement`, M1) and one trailing
//! slash allowed (`/v1/statement/`, M2) — [`resource_path`]. So every spelling a coordinator takes for a
//! new statement is [`Target::NewStatement`] here, and [`canonical_statement_path`] names the one path the
//! router sends it on. A query id must appear literally: an encoded or malformed id in a query-id position
//! is [`Target::BadQueryId`], never a guess.

use std::borrow::Cow;

use crate::domain::query_id::{QueryId, QueryIdError};

/// The routing-relevant meaning of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `POST /v1/statement` (or the web UI's `POST /ui/api/statement`): a new query.
    NewStatement,
    /// A request about one query; it must reach the cluster that owns the query.
    Query(QueryId),
    /// A query-id position held something that is not a query id.
    BadQueryId(QueryIdError),
    /// `/v1/spooled/...`: a spooled segment, named by an opaque identifier.
    SpooledSegment,
    /// Anything else (`/v1/info`, `/ui/`, ...): any cluster of the default group can answer.
    Other,
}

/// The path (without query) as Jersey matches it: matrix parameters (`;...`) dropped from every segment
/// (`SingleMatchResult.stripMatrixParams`), then one trailing slash dropped (resource patterns end in
/// `(/)?`). Percent-escapes and dot segments stay as they are (Jersey matches the raw path).
pub fn resource_path(path: &str) -> Cow<'_, str> {
    let mut path = if path.contains(';') {
        let segments: Vec<&str> = path.split('/').map(|s| s.split(';').next().unwrap_or_default()).collect();
        Cow::Owned(segments.join("/"))
    } else {
        Cow::Borrowed(path)
    };
    if path.len() > 1 && path.ends_with('/') && !path.ends_with("//") {
        match &mut path {
            Cow::Borrowed(p) => *p = &p[..p.len() - 1],
            Cow::Owned(p) => {
                p.pop();
            }
        }
    }
    path
}

/// The one path a new statement is sent on: its resource (`/v1/statement` or `/ui/api/statement`) and
/// the query string as the client wrote it — whatever spelling of it the client used (`path` is one that
/// [`classify`] calls a new statement).
pub fn canonical_statement_path(path: &str) -> String {
    let (path_only, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let root =
        if resource_path(path_only).starts_with("/ui/") { "/ui/api/statement" } else { "/v1/statement" };
    match query {
        Some(q) => format!("{root}?{q}"),
        None => root.to_owned(),
    }
}

/// Classifies a request by method and `:path`.
pub fn classify(method: &str, path: &str) -> Target {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    let path = resource_path(path);
    let path = path.as_ref();

    if path == "/ui/query.html" {
        // The web UI names the query as the whole query string: `/ui/query.html?{queryId}`.
        return query.map_or(Target::Other, |q| query_target(q.split('&').next().unwrap_or("")));
    }

    let mut segments = path.strip_prefix('/').unwrap_or(path).split('/');
    let first = [segments.next(), segments.next()];
    let target = match first {
        [Some("v1"), Some("statement")] => statement_target(method, segments),
        [Some("ui"), Some("api")] => match segments.next() {
            Some("statement") => statement_target(method, segments),
            Some("query") => id_at(segments.next()),
            _ => Target::Other,
        },
        [Some("v1"), Some("query")] => match segments.next() {
            // `GET /v1/query` lists a cluster's queries: any cluster can answer for itself.
            None | Some("") => Target::Other,
            id => id_at(id),
        },
        [Some("v1"), Some("spooled")] => Target::SpooledSegment,
        _ => Target::Other,
    };
    match target {
        // Any other request that names a query in its query string (`?query_id=...`) is about it.
        Target::Other => query.and_then(query_id_parameter).map_or(Target::Other, query_target),
        other => other,
    }
}

/// The value of a `query_id` (or `queryId`) query-string parameter.
fn query_id_parameter(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| match pair.split_once('=') {
        Some(("query_id" | "queryId", value)) => Some(value),
        _ => None,
    })
}

/// `{statement-root}` followed by `segments`: `/v1/statement/...` or `/ui/api/statement/...`.
fn statement_target<'a>(method: &str, mut segments: impl Iterator<Item = &'a str>) -> Target {
    match segments.next() {
        None => {
            if method.eq_ignore_ascii_case("POST") {
                Target::NewStatement
            } else {
                Target::Other
            }
        }
        Some("queued") => id_at(segments.next()),
        Some("executing") => match segments.next() {
            Some("partialCancel") => id_at(segments.next()),
            id => id_at(id),
        },
        Some(_) => Target::Other,
    }
}

fn id_at(segment: Option<&str>) -> Target {
    query_target(segment.unwrap_or(""))
}

fn query_target(text: &str) -> Target {
    match QueryId::parse(text) {
        Ok(id) => Target::Query(id),
        Err(e) => Target::BadQueryId(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "20260101_120000_00001_abcde";

    fn q() -> Target {
        Target::Query(QueryId::parse(ID).unwrap())
    }

    #[test]
    fn classify_table() {
        let bad = |e| Target::BadQueryId(e);
        use QueryIdError::*;
        #[rustfmt::skip]
        let cases: Vec<(&str, String, Target)> = vec![
            ("POST", "/v1/statement".into(), Target::NewStatement),
            ("post", "/v1/statement".into(), Target::NewStatement),
            ("POST", "/v1/statement?x=1".into(), Target::NewStatement),
            ("GET", "/v1/statement".into(), Target::Other),
            // Every spelling Jersey maps to the new-statement resource (M1, M2); none it does not (M3–M5).
            ("POST", "/v1/statement/".into(), Target::NewStatement),
            ("POST", "/v1/statement;x=1".into(), Target::NewStatement),
            ("POST", "/v1/statement/;".into(), Target::NewStatement),
            ("POST", "/v1/statement/;x".into(), Target::NewStatement),
            ("POST", "/v1;a=b/statement;x=1/?q=1".into(), Target::NewStatement),
            ("POST", "/v1/statement;a/;b".into(), Target::NewStatement),
            ("POST", "/ui;x/api/statement/".into(), Target::NewStatement),
            ("POST", "/v1/statement//".into(), Target::Other),
            ("POST", "/v1/statement/;/".into(), Target::Other),
            ("POST", "//v1/statement".into(), Target::Other),
            ("POST", "/v1/%73tatement".into(), Target::Other),
            ("POST", "/v1/statement%3Bx".into(), Target::Other),
            ("POST", "/v1/statement%2F".into(), Target::Other),
            ("POST", "/v1/./statement".into(), Target::Other),
            ("POST", "/v1/statement/../statement".into(), Target::Other),
            ("POST", "/V1/statement".into(), Target::Other),
            ("POST", "/v1/Statement".into(), Target::Other),
            ("POST", "/v1/statement.json".into(), Target::Other),
            ("HEAD", "/v1/statement/".into(), Target::Other),
            ("PUT", "/v1/statement;x".into(), Target::Other),
            ("GET", format!("/v1/statement/executing/{ID};x/yabc/2"), q()),
            ("GET", format!("/v1/statement;x/queued/{ID}/yabc/1/"), q()),
            ("POST", "/ui/api/statement".into(), Target::NewStatement),
            ("GET", format!("/v1/statement/queued/{ID}/yabc/1"), q()),
            ("DELETE", format!("/v1/statement/queued/{ID}/yabc/1"), q()),
            ("GET", format!("/v1/statement/executing/{ID}/yabc/2?maxWait=1s"), q()),
            ("HEAD", format!("/v1/statement/executing/{ID}/yabc/2"), q()),
            ("DELETE", format!("/v1/statement/executing/{ID}/yabc/2"), q()),
            ("DELETE", format!("/v1/statement/executing/partialCancel/{ID}/3/yabc/2"), q()),
            ("GET", format!("/v1/statement/queued/{ID}"), q()),
            ("GET", format!("/v1/query/{ID}"), q()),
            ("DELETE", format!("/v1/query/{ID}"), q()),
            ("PUT", format!("/v1/query/{ID}/killed"), q()),
            ("PUT", format!("/v1/query/{ID}/preempted"), q()),
            ("GET", "/v1/query".into(), Target::Other),
            ("GET", "/v1/query/".into(), Target::Other),
            ("GET", format!("/ui/query.html?{ID}"), q()),
            ("GET", format!("/ui/query.html?{ID}&x=1"), q()),
            ("GET", "/ui/query.html".into(), Target::Other),
            ("GET", format!("/ui/api/query/{ID}"), q()),
            ("PUT", format!("/ui/api/query/{ID}/killed"), q()),
            ("GET", format!("/ui/api/statement/queued/{ID}/yabc/1"), q()),
            ("GET", format!("/ui/api/statement/executing/{ID}/yabc/1"), q()),
            ("GET", "/ui/api/stats".into(), Target::Other),
            ("GET", "/ui/".into(), Target::Other),
            ("GET", "/v1/info".into(), Target::Other),
            ("GET", "/v1/info/state".into(), Target::Other),
            ("GET", "/".into(), Target::Other),
            ("GET", "".into(), Target::Other),
            ("GET", "*".into(), Target::Other),
            ("GET", "/v1/statement/finished/x".into(), Target::Other),
            ("GET", "/v1/spooled/download/abc".into(), Target::SpooledSegment),
            ("GET", "/v1/spooled/ack/abc".into(), Target::SpooledSegment),
            ("DELETE", "/v1/spooled/segments/abc".into(), Target::SpooledSegment),
            ("GET", "/v1/statement/queued/".into(), bad(Empty)),
            ("GET", "/v1/statement/queued".into(), bad(Empty)),
            ("GET", "/v1/statement/executing".into(), bad(Empty)),
            ("GET", "/v1/statement/executing/partialCancel".into(), bad(Empty)),
            ("GET", "/v1/statement/queued/..%2f..%2fetc/y/1".into(), bad(BadCharacter)),
            ("GET", "/v1/statement/queued/../../v1/info".into(), bad(BadCharacter)),
            ("GET", format!("/v1/statement/queued/{}/y/1", ID.to_uppercase()), bad(BadCharacter)),
            ("GET", "/v1/statement/queued/2026%5F01/y/1".into(), bad(BadCharacter)),
            ("GET", format!("/v1/statement/queued/{}/y/1", "a".repeat(4000)), bad(TooLong)),
            ("GET", "/v1/query/not-an-id".into(), bad(BadCharacter)),
            ("GET", "/ui/query.html?NOT".into(), bad(BadCharacter)),
            ("GET", "/ui/query.html?".into(), bad(Empty)),
            ("GET", "/ui/api/query/".into(), bad(Empty)),
            ("GET", "/v1/statement/queued/\u{0}/y/1".into(), bad(BadCharacter)),
            ("GET", "/v1/statement/queued/é/y/1".into(), bad(BadCharacter)),
            ("GET", format!("/v1/thing?query_id={ID}"), q()),
            ("GET", format!("/ui/api/worker?a=1&queryId={ID}&b=2"), q()),
            ("GET", "/v1/thing?query_id=NOPE".into(), bad(BadCharacter)),
            ("GET", "/v1/thing?query_id=".into(), bad(Empty)),
            ("GET", "/v1/thing?other=1".into(), Target::Other),
            ("GET", format!("/v1/info?query_idx={ID}"), Target::Other),
        ];
        for (method, path, expected) in cases {
            assert_eq!(classify(method, &path), expected, "{method} {path}");
        }
    }

    #[test]
    fn resource_path_table() {
        #[rustfmt::skip]
        let cases = [
            ("/v1/statement", "/v1/statement"),
            ("/v1/statement/", "/v1/statement"),
            ("/v1/statement;x=1", "/v1/statement"),
            ("/v1;a/statement;b/;c", "/v1/statement"),
            ("/v1/statement//", "/v1/statement//"),
            ("/v1/%73tatement", "/v1/%73tatement"),
            ("/v1/./statement/..", "/v1/./statement/.."),
            ("/", "/"),
            ("", ""),
        ];
        for (path, expected) in cases {
            assert_eq!(resource_path(path), expected, "{path}");
        }
    }

    #[test]
    fn canonical_statement_path_table() {
        #[rustfmt::skip]
        let cases = [
            ("/v1/statement", "/v1/statement"),
            ("/v1/statement/", "/v1/statement"),
            ("/v1/statement;x=1?a=1&b", "/v1/statement?a=1&b"),
            ("/v1/statement/;", "/v1/statement"),
            ("/ui;x/api/statement/", "/ui/api/statement"),
            ("/ui/api/statement?x", "/ui/api/statement?x"),
        ];
        for (path, expected) in cases {
            assert_eq!(canonical_statement_path(path), expected, "{path}");
        }
    }
}
