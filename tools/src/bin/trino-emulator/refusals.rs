//! How a Trino coordinator's HTTP stack spells a refusal, layer by layer (docs/trino-conformance.md):
//!
//! - Jetty refuses before Trino sees the request (a URI Jetty's compliance rejects, a forwarded header
//!   under REJECT): its `ErrorHandler` page, HTML by default, naming status and reason ([`jetty`]);
//! - Trino's authentication filter: 401, `text/plain; charset=utf-8`, the reason as body, and a
//!   `WWW-Authenticate` challenge (`ServletSecurityUtils`) ([`unauthorized`]);
//! - a resource throws one of the JAX-RS exceptions Trino's `ThrowableMapper` names (`NotFoundException`,
//!   `BadRequestException`, `ForbiddenException`, `GoneException`, `ServiceUnavailableException`, ...):
//!   `text/plain`, `Error {code} {reason}: {message}` ([`mapped`]);
//! - any other `WebApplicationException` without an entity (`new WebApplicationException(GONE)`, Jersey's
//!   405 and parameter-conversion 404, `Response.status(GONE).build()`): the status alone, no body
//!   ([`bare`]); airlift sets `RESPONSE_SET_STATUS_OVER_SEND_ERROR`, so Jetty adds no error page.

use axum::http::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::{BASIC_CHALLENGE, Unauthenticated};

/// `ThrowableMapper`: `Error 404 Not Found: Query not found`.
pub fn mapped(status: StatusCode, message: &str) -> Response {
    let body =
        format!("Error {} {}: {message}", status.as_u16(), status.canonical_reason().unwrap_or_default());
    (status, [(CONTENT_TYPE, "text/plain")], body).into_response()
}

/// The message a JAX-RS exception built without one carries (`new ForbiddenException()`: `HTTP 403
/// Forbidden`).
pub fn default_message(status: StatusCode) -> String {
    format!("HTTP {} {}", status.as_u16(), status.canonical_reason().unwrap_or_default())
}

/// A status without a body.
pub fn bare(status: StatusCode) -> Response {
    status.into_response()
}

/// Jersey's answer for a resource asked with a method it does not have (405), or `OPTIONS` (200).
pub fn allow(status: StatusCode, methods: &'static str) -> Response {
    let mut response = status.into_response();
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(methods));
    response
}

/// The authentication filter's 401.
pub fn unauthorized(reason: &Unauthenticated) -> Response {
    let mut response =
        (StatusCode::UNAUTHORIZED, [(CONTENT_TYPE, "text/plain; charset=utf-8")], reason.message)
            .into_response();
    if reason.challenge {
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
    }
    response
}

/// Jetty's `ErrorHandler` page for a request it refused itself (the layout approximates Jetty's; status
/// and reason are what a client can rely on).
pub fn jetty(status: StatusCode, reason: &str, uri: &str) -> Response {
    let code = status.as_u16();
    let reason = escape_html(reason);
    let body = format!(
        "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=ISO-8859-1\"/>\n\
         <title>Error {code} {phrase}</title>\n</head>\n<body>\n<h2>HTTP ERROR {code} {reason}</h2>\n<table>\n\
         <tr><th>URI:</th><td>{uri}</td></tr>\n<tr><th>STATUS:</th><td>{code}</td></tr>\n\
         <tr><th>MESSAGE:</th><td>{reason}</td></tr>\n</table>\n\n</body>\n</html>\n",
        phrase = status.canonical_reason().unwrap_or_default(),
        uri = escape_html(uri),
    );
    (status, [(CONTENT_TYPE, "text/html;charset=iso-8859-1")], body).into_response()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body(response: Response) -> (StatusCode, Option<String>, String) {
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, content_type, String::from_utf8(bytes.to_vec()).unwrap())
    }

    // conformance: S3, S4
    #[tokio::test]
    async fn shapes() {
        assert_eq!(
            body(mapped(StatusCode::NOT_FOUND, "Query not found")).await,
            (StatusCode::NOT_FOUND, Some("text/plain".into()), "Error 404 Not Found: Query not found".into())
        );
        assert_eq!(body(mapped(StatusCode::GONE, "Invalid token")).await.2, "Error 410 Gone: Invalid token");
        assert_eq!(default_message(StatusCode::FORBIDDEN), "HTTP 403 Forbidden");
        assert_eq!(body(bare(StatusCode::GONE)).await, (StatusCode::GONE, None, String::new()));
        let (status, content_type, html) =
            body(jetty(StatusCode::BAD_REQUEST, "Ambiguous URI <x>", "/a%2Fb")).await;
        assert_eq!(
            (status, content_type.as_deref()),
            (StatusCode::BAD_REQUEST, Some("text/html;charset=iso-8859-1"))
        );
        assert!(html.contains("HTTP ERROR 400 Ambiguous URI &lt;x&gt;") && html.contains("/a%2Fb"), "{html}");
    }
}
