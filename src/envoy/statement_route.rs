//! Which paths Envoy's new-statement routes match: every spelling a coordinator takes for a new statement
//! (docs/trino-conformance.md, M7) — `/v1/statement` and `/ui/api/statement` with matrix parameters on
//! any segment and one trailing slash — plain and under the URL prefix, as RE2 expressions for
//! envoy-config's routes and the Istio and Envoy Gateway objects. The router reads the same set
//! ([`crate::domain::target::classify`]); the tests hold the two together.

/// A segment's matrix parameters, which a coordinator drops before matching (M1).
const MATRIX: &str = "(?:;[^/]*)?";

/// The paths (without query) a coordinator takes for a new statement — `/v1/statement` and
/// `/ui/api/statement` with matrix parameters on any segment and one trailing slash (M1, M2), as
/// [`crate::domain::target::classify`] reads them — under `{prefix}/{cluster}` when a prefix is given.
/// Envoy (after its path normalization) matches them with this, so that every spelling gets the
/// new-statement route: the SQL to the router, learning, the new-query timeout.
pub fn new_statement_regex(prefix: Option<&str>) -> String {
    let under = prefix.map(|p| format!("{}/[^/]+", regex::escape(p))).unwrap_or_default();
    format!("^{under}/(?:v1{MATRIX}|ui{MATRIX}/api{MATRIX})/statement{MATRIX}(?:/{MATRIX})?$")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The new-statement routes take exactly the spellings the router (and a coordinator) calls a new
    /// statement, plain and under the prefix.
    #[test]
    fn new_statement_routes_take_every_spelling_of_a_new_statement() {
        use crate::domain::target::{Target, classify};
        let plain = regex::Regex::new(&new_statement_regex(None)).unwrap();
        let prefixed = regex::Regex::new(&new_statement_regex(Some("/_trino"))).unwrap();
        #[rustfmt::skip]
        let spellings = [
            ("/v1/statement", true), ("/v1/statement/", true), ("/v1/statement;x=1", true),
            ("/v1/statement/;", true), ("/v1/statement/;x", true), ("/v1;a/statement;b/;c", true),
            ("/ui/api/statement", true), ("/ui;x/api;y/statement/", true),
            ("/v1/statement//", false), ("/v1/statement/;/", false), ("/v1/statement/x", false),
            ("/v1/%73tatement", false), ("/v1/statement%3B", false), ("/V1/statement", false),
            ("/v1/statements", false), ("/v1/statement/queued/x/y/1", false), ("/v1/query", false),
            ("/ui/statement", false), ("/v1/ui/api/statement", false),
        ];
        for (path, is_new) in spellings {
            assert_eq!(classify("POST", path) == Target::NewStatement, is_new, "router: {path}");
            assert_eq!(plain.is_match(path), is_new, "Envoy: {path}");
            assert_eq!(
                prefixed.is_match(&format!("/_trino/trino-x{path}")),
                is_new,
                "Envoy: prefixed {path}"
            );
            assert!(!prefixed.is_match(path), "{path} is not under the prefix");
        }
        assert!(!prefixed.is_match("/_trino/v1/statement"), "a cluster segment is needed");
        assert!(!prefixed.is_match("/_trinox/a/v1/statement"));
    }
}
