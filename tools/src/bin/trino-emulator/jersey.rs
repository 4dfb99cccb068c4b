//! The path Trino's resources are matched on, as Jersey matches it (rows M1–M4 of
//! docs/trino-conformance.md):
//!
//! - on the raw, still percent-encoded request path (`MatchResultInitializerRouter` pushes
//!   `request.getPath(false)`; Jetty's `getRequestURI()` is the path as received), so `/v1/%73tatement`
//!   is not `/v1/statement` and `..` segments are not resolved — while the values of path parameters
//!   are decoded afterwards (axum's `Path` does the same);
//! - with matrix parameters dropped from every segment (`SingleMatchResult.stripMatrixParams`), so
//!   `/v1/statement;x=1` is `/v1/statement`;
//! - with one trailing slash allowed on every resource method (`PathPattern.asClosed`: `(/)?`), so
//!   `POST /v1/statement/` submits a query.
//!
//! axum already matches on the raw path; [`matching_path`] does the other two before it routes.
//! Pure.

/// The path to route `path` (raw, no query) by, when it differs from `path`: matrix parameters removed,
/// and one trailing slash removed from a path of Trino's JAX-RS resources (`/v1/...`, `/ui/api/...`).
pub fn matching_path(path: &str) -> Option<String> {
    let mut stripped = strip_matrix_params(path);
    let is_resource = stripped.starts_with("/v1/") || stripped.starts_with("/ui/api/");
    if is_resource && stripped.len() > 1 && stripped.ends_with('/') && !stripped.ends_with("//") {
        stripped.pop();
    }
    (stripped != path).then_some(stripped)
}

/// Everything from a `;` to the end of its segment goes (Jersey's `stripMatrixParams`).
fn strip_matrix_params(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(segment.split(';').next().unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // conformance: M1, M2, M3, M4
    #[test]
    fn paths_as_jersey_matches_them() {
        for (path, expected) in [
            ("/v1/statement", None),
            ("/v1/statement;x=1", Some("/v1/statement")),
            ("/v1;a=b/statement;x=1;y", Some("/v1/statement")),
            ("/v1/statement/", Some("/v1/statement")),
            ("/v1/statement;x=1/", Some("/v1/statement")),
            ("/v1/query/20260101_000000_00000_abcde/", Some("/v1/query/20260101_000000_00000_abcde")),
            ("/v1/statement/executing/q;p/y1;p/3;p", Some("/v1/statement/executing/q/y1/3")),
            ("/ui/api/stats/", Some("/ui/api/stats")),
            // Not Jersey's: the web UI's pages keep their slash.
            ("/ui/", None),
            ("/", None),
            // Percent-encoding and dot segments stay as they are.
            ("/v1/%73tatement", None),
            ("/v1/statement/executing/x/../..", None),
        ] {
            assert_eq!(matching_path(path).as_deref(), expected, "{path:?}");
        }
    }
}
