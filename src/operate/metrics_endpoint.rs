//! The HTTP endpoint on `metrics_listen`: `GET /metrics` (Prometheus text, [`crate::state::metrics`])
//! and `GET /` (the status page, [`super::status_page`]). With `metrics_auth`, both ask for its bearer
//! token (`Authorization: Bearer <token>`; 401 otherwise): they show user names, query ids and the
//! clusters' addresses. Connections are limited as [`super::listener::HTTP_LIMITS`] says.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::operate::fleet::Fleet;
use crate::operate::listener::{HTTP_LIMITS, LimitedListener};
use crate::state::metrics::METRICS;
use crate::state::router::Router;

/// Whether the request may see the endpoint: always without `metrics_auth`, else with its token.
fn authorized(router: &Router, headers: &HeaderMap) -> bool {
    let snapshot = router.snapshot();
    let Some(expected) = &snapshot.config.metrics_auth else { return true };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    expected.matches(presented)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"trino-router\"")],
        "this endpoint needs the metrics_auth token (Authorization: Bearer <token>)\n",
    )
        .into_response()
}

/// Serves `GET /metrics` and `GET /` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, router: Arc<Router>, fleet: Arc<Fleet>) {
    use axum::routing::get;
    let page_router = router.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let router = router.clone();
                async move {
                    if !authorized(&router, &headers) {
                        return unauthorized();
                    }
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        METRICS.render(&router),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/",
            get(move |headers: HeaderMap| {
                let router = page_router.clone();
                let fleet = fleet.clone();
                async move {
                    if !authorized(&router, &headers) {
                        return unauthorized();
                    }
                    axum::response::Html(super::status_page::render(&router, &fleet)).into_response()
                }
            }),
        );
    let listener = LimitedListener::new(listener, HTTP_LIMITS, "metrics");
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "the metrics endpoint stopped");
    }
}

/// Binds the metrics endpoint's address (so callers learn the real port before serving).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
