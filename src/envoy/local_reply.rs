//! Envoy's own answers (local replies), shaped as a failed Trino `QueryResults` so that every client
//! reads them as Trino errors: a request Envoy refuses, a coordinator it cannot reach, a router that did
//! not decide in time. Used by the bootstrap `envoy-config` prints.

use serde_json::{Value, json};

/// Envoy's own answers, Trino-shaped:
/// - when the request itself is not HTTP Envoy accepts (NUL bytes, oversized or too many headers): the
///   client hears why;
/// - when it cannot reach a coordinator (connection refused or reset, no upstream, timed out): the status
///   stays (503 tells clients nothing was submitted, and they retry); the error names the cluster, so a
///   client that gives up says which cluster failed;
/// - when the router did not decide in time: 503, nothing was submitted.
pub fn local_reply_config() -> Value {
    json!({
        "mappers": [{
            // Refused by Envoy's codec before the request had headers (no filter, router included, ran).
            "filter": { "header_filter": { "header": { "name": ":method", "present_match": true, "invert_match": true } } },
            "body_format_override": trino_failure(
                "Invalid HTTP request (%RESPONSE_CODE_DETAILS%)", "INVALID_HTTP_REQUEST", "USER_ERROR"),
        }, {
            // A path Envoy's normalization cannot take (`%00`, a fragment): refused before any filter ran.
            // A coordinator refuses these too (J7). No response flag marks them: CEL reads the details.
            "filter": { "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": "response.code_details == 'path_normalization_failed'",
                },
            } },
            "body_format_override": trino_failure(
                "Invalid request path (%RESPONSE_CODE_DETAILS%)", "INVALID_HTTP_REQUEST", "USER_ERROR"),
        }, {
            "filter": { "response_flag_filter": { "flags": ["UF", "UH", "URX", "UC", "UR", "UO", "UT", "NC"] } },
            "body_format_override": trino_failure(
                "Trino cluster %UPSTREAM_CLUSTER% could not be reached (%RESPONSE_CODE_DETAILS%)",
                "CLUSTER_UNAVAILABLE", "EXTERNAL"),
        }, {
            // Any other 504 of Envoy's own: the router did not answer within the message timeout (ext_proc
            // answers 504 then, whatever `status_on_error` says; the router itself never answers 504).
            // Nothing was submitted: 503, so that clients retry, as for any other decide failure.
            "filter": { "status_code_filter": { "comparison": {
                "op": "EQ", "value": { "default_value": 504, "runtime_key": "trino_router.unused" },
            } } },
            "status_code": 503,
            "body_format_override": trino_failure(
                "The router did not decide in time (%RESPONSE_CODE_DETAILS%); nothing was submitted, retry",
                "ROUTER_UNAVAILABLE", "EXTERNAL"),
        }],
    })
}

/// A local reply body shaped as a failed Trino `QueryResults` (Envoy fills in the `%...%` operators).
fn trino_failure(message: &str, error_name: &str, error_type: &str) -> Value {
    json!({
        "json_format": {
            "id": "",
            "infoUri": "",
            "stats": { "state": "FAILED" },
            "error": {
                "message": message,
                "errorCode": crate::domain::refusal::ROUTER_ERROR_CODE,
                "errorName": error_name,
                "errorType": error_type,
            },
        },
        "content_type": "application/json",
    })
}
