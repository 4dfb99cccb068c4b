//! Faults a test can switch on at run time (`PUT /v1/emulator/fault`), to play a coordinator that
//! misbehaves while its process stays up: one that never answers, answers garbage, or answers slowly.
//! The emulator's strictness is untouched: a fault only withholds, delays or replaces answers; it never
//! makes a request succeed that would have failed.
//!
//! Body: `{"mode": "none" | "hang" | "garbage" | "slow", "scope": "new_queries" | "all",
//! "delay_ms": N}` (`scope` defaults to `new_queries`, `delay_ms` to 0 and only counts for `slow`).
//! - `hang`: the request is read and never answered (the connection stays open until the client gives
//!   up).
//! - `garbage`: `200`, `Content-Type: application/json`, and a body that is not JSON (and not UTF-8).
//! - `slow`: the ordinary answer, `delay_ms` late.
//! - `new_queries` scope: only `POST /v1/statement`; `all`: every request but `/v1/emulator/*` (health
//!   polls included, as when a coordinator hangs).
//!
//! `GET /v1/emulator/fault` answers the fault in force and how many requests faults have touched
//! (`faulted`); each touched request is also logged.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The body a `garbage` fault answers with: neither JSON nor UTF-8.
pub const GARBAGE: &[u8] = b"<html>\x00\xff\xfe garbage from a broken coordinator }{";

/// The most a `slow` fault may delay an answer (a typo must not hang a test run for hours).
const MAX_DELAY: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    None,
    Hang,
    Garbage,
    Slow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    NewQueries,
    All,
}

/// One fault, as set by `PUT /v1/emulator/fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub mode: Mode,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub delay_ms: u64,
}

impl Fault {
    /// Does this fault touch a request with this method and path?
    pub fn applies_to(&self, method: &Method, path: &str) -> bool {
        if self.mode == Mode::None || path.starts_with("/v1/emulator/") {
            return false;
        }
        match self.scope {
            Scope::All => true,
            Scope::NewQueries => method == Method::POST && path == "/v1/statement",
        }
    }
}

/// The fault in force and how many requests it touched.
#[derive(Debug, Default)]
pub struct Faults {
    current: Mutex<Fault>,
    faulted: AtomicU64,
}

impl Faults {
    pub fn current(&self) -> Fault {
        *self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, fault: Fault) -> Fault {
        std::mem::replace(&mut *self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()), fault)
    }

    fn to_json(&self, fault: Fault) -> serde_json::Value {
        json!({ "fault": fault, "faulted": self.faulted.load(Ordering::Relaxed) })
    }
}

/// Axum middleware: applies the fault in force to the requests it touches.
pub async fn apply(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    let fault = faults.current();
    if !fault.applies_to(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    faults.faulted.fetch_add(1, Ordering::Relaxed);
    tracing::info!(method = %request.method(), path = request.uri().path(), ?fault, "fault applied");
    match fault.mode {
        Mode::None => next.run(request).await,
        Mode::Hang => std::future::pending().await,
        Mode::Garbage => {
            (StatusCode::OK, [(CONTENT_TYPE, "application/json")], Body::from(GARBAGE)).into_response()
        }
        Mode::Slow => {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms).min(MAX_DELAY)).await;
            next.run(request).await
        }
    }
}

/// `GET /v1/emulator/fault`.
pub async fn get_fault(State(faults): State<Arc<Faults>>) -> Response {
    axum::Json(faults.to_json(faults.current())).into_response()
}

/// `PUT /v1/emulator/fault`: 200 `{"fault", "previous", "faulted"}`, or 400 naming what is wrong.
pub async fn put_fault(State(faults): State<Arc<Faults>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(fault) => {
            let previous = faults.set(fault);
            tracing::info!(?fault, ?previous, "fault set");
            let mut answer = faults.to_json(fault);
            answer["previous"] = json!(previous);
            axum::Json(answer).into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, format!("bad fault: {error}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_requests_a_fault_touches() {
        let hang = |scope| Fault { mode: Mode::Hang, scope, delay_ms: 0 };
        let none = Fault { mode: Mode::None, scope: Scope::All, delay_ms: 0 };
        #[rustfmt::skip]
        let cases = [
            (hang(Scope::NewQueries), Method::POST, "/v1/statement", true),
            (hang(Scope::NewQueries), Method::GET, "/v1/statement/executing/x/y/1", false),
            (hang(Scope::NewQueries), Method::GET, "/v1/info", false),
            (hang(Scope::NewQueries), Method::POST, "/v1/statement/", false),
            (hang(Scope::All), Method::GET, "/v1/info", true),
            (hang(Scope::All), Method::GET, "/v1/statement/executing/x/y/1", true),
            (hang(Scope::All), Method::PUT, "/v1/emulator/fault", false),
            (hang(Scope::All), Method::GET, "/v1/emulator/queries", false),
            (none, Method::POST, "/v1/statement", false),
        ];
        for (fault, method, path, touched) in cases {
            assert_eq!(fault.applies_to(&method, path), touched, "{fault:?} {method} {path}");
        }
    }

    #[test]
    fn fault_bodies_parse_or_are_refused() {
        let ok = |text: &str| serde_json::from_str::<Fault>(text).ok();
        assert_eq!(ok(r#"{"mode":"none"}"#), Some(Fault::default()));
        assert_eq!(
            ok(r#"{"mode":"slow","scope":"all","delay_ms":1500}"#),
            Some(Fault { mode: Mode::Slow, scope: Scope::All, delay_ms: 1500 })
        );
        assert_eq!(ok(r#"{"mode":"garbage"}"#).map(|f| f.scope), Some(Scope::NewQueries));
        assert_eq!(ok(r#"{"mode":"explode"}"#), None);
        assert_eq!(ok(r#"{"mode":"hang","scope":"some"}"#), None);
        assert_eq!(ok(r#"{"mode":"hang","extra":1}"#), None);
        assert_eq!(ok("not json"), None);
    }

    #[test]
    fn garbage_is_not_json() {
        // (That it is not UTF-8 either, the compiler checks: `invalid_from_utf8` denies a test saying so.)
        assert!(serde_json::from_slice::<serde_json::Value>(GARBAGE).is_err());
    }
}
