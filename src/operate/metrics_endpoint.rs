//! The HTTP endpoint on `metrics_listen`: `GET /metrics` (Prometheus text, [`crate::state::metrics`])
//! and `GET /` (the status page, [`super::status_page`]).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::operate::fleet::Fleet;
use crate::state::metrics::METRICS;
use crate::state::router::Router;

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, router: Arc<Router>, fleet: Arc<Fleet>) {
    use axum::routing::get;
    let page_router = router.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let router = router.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        METRICS.render(&router),
                    )
                }
            }),
        )
        .route(
            "/",
            get(move || {
                let router = page_router.clone();
                let fleet = fleet.clone();
                async move { axum::response::Html(super::status_page::render(&router, &fleet)) }
            }),
        );
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "the metrics endpoint stopped");
    }
}

/// Binds the metrics endpoint's address (so callers learn the real port before serving).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
