//! Feeds an arbitrary request line, `METHOD PATH?QUERY` (the method is `GET` when there is no space), to
//! what the router reads from `:method` and `:path`: [`classify`] (and through it `QueryId::parse` on
//! path segments, `/ui/query.html?{id}` and `?query_id=`), and the URL-placement prefix split.
//!
//! Checks, beyond not panicking: the classification is the same twice; a query id it finds appears
//! literally in the path (nothing is decoded), parses again to itself, has only `[a-z0-9_]`, and its
//! coordinator id is the 5-character suffix exactly when the id has the shape of Trino's generator; a
//! new statement is a POST to a statement root; a bad id in a query-id position is `TooLong` only when
//! the path is that long; a prefixed path splits into prefix, one non-empty cluster segment and a rest
//! that starts with `/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trino_router::domain::decision::follow_up::split_prefixed;
use trino_router::domain::query_id::{COORDINATOR_ID_ALPHABET, MAX_LEN, QueryId, QueryIdError};
use trino_router::domain::target::{Target, classify};

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let (method, path) = line.split_once(' ').unwrap_or(("GET", &line));
    let target = classify(method, path);
    assert_eq!(classify(method, path), target, "classification is a function of method and path");
    match &target {
        Target::Query(id) => check_query_id(id, path),
        Target::NewStatement => {
            assert!(method.eq_ignore_ascii_case("POST"), "{method} {path}");
            let root = path.split(['?', '#']).next().unwrap_or("");
            assert!(
                matches!(root, "/v1/statement" | "v1/statement" | "/ui/api/statement" | "ui/api/statement"),
                "a new statement at {path:?}"
            );
        }
        Target::BadQueryId(QueryIdError::TooLong) => assert!(path.len() > MAX_LEN, "{path:?}"),
        Target::BadQueryId(_) | Target::SpooledSegment | Target::Other => {}
    }
    for prefix in ["/_trino", ""] {
        if let Some(split) = split_prefixed(prefix, path) {
            assert!(!split.cluster.is_empty() && !split.cluster.contains('/'), "{split:?}");
            assert!(split.rest.starts_with('/'), "{split:?}");
            assert_eq!(format!("{prefix}/{}{}", split.cluster, split.rest), path);
        }
    }
});

fn check_query_id(id: &QueryId, path: &str) {
    let text = id.as_str();
    assert!(path.contains(text), "query id {text:?} is not in {path:?}");
    assert_eq!(QueryId::parse(text).as_ref(), Ok(id), "{text:?} parses again to itself");
    assert!(!text.is_empty() && text.len() <= MAX_LEN, "{text:?}");
    assert!(text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{text:?}");
    // Trino's generator: yyyyMMdd_HHmmss_NNNNN_ccccc.
    let b = text.as_bytes();
    let digits = |from: usize, to: usize| b[from..to].iter().all(u8::is_ascii_digit);
    let generated = b.len() == 27
        && digits(0, 8)
        && b[8] == b'_'
        && digits(9, 15)
        && b[15] == b'_'
        && digits(16, 21)
        && b[21] == b'_'
        && text[22..].chars().all(|c| COORDINATOR_ID_ALPHABET.contains(c));
    match id.coordinator_id() {
        Some(coordinator) => {
            assert!(generated, "{text:?} has a coordinator id but not the generator's shape");
            assert_eq!(coordinator, &text[22..], "{text:?}");
        }
        None => assert!(!generated, "{text:?} has the generator's shape but no coordinator id"),
    }
}
