//! The one place where the router's refusals become HTTP answers, shaped like Trino's own.
//!
//! A refusal is answered by Envoy on the router's behalf (an ext_proc immediate response): nothing
//! reaches a coordinator. The body is a Trino `QueryResults` whose `error` says what happened, so clients
//! and people reading logs see a Trino-style failure rather than a bare proxy error.

use std::sync::Arc;

use serde_json::json;

use crate::domain::pin::Pin;
use crate::domain::query_id::{QueryId, QueryIdError};

/// Why the router answers a request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request names a query the router cannot place.
    QueryNotFound(QueryId),
    /// The lookup could not tell who holds the query: no cluster said it does, but one did not answer
    /// (timeout, 5xx). Retryable.
    QueryOwnerUnknown(QueryId),
    /// `DELETE /v1/query/{id}` of a query no cluster holds: Trino answers it 204 (row Q5), so does the
    /// router.
    NothingToCancel(QueryId),
    /// The query's coordinator restarted since (its cluster publishes a new coordinator id): the query is
    /// gone. `as_query_failure` as for [`Refusal::OwnerDown`].
    CoordinatorRestarted { query_id: QueryId, cluster: Arc<str>, as_query_failure: bool },
    /// A query-id position holds something that is not a query id.
    BadQueryId(QueryIdError),
    /// The query's owner was learned, but that cluster is no longer configured.
    OwnerRemoved { query_id: QueryId, cluster: Arc<str> },
    /// The query's owner is known to be down: its query cannot progress. `as_query_failure`: answer as
    /// Trino answers a failed query (200 with a FAILED `QueryResults`), for clients polling for pages.
    OwnerDown { query_id: QueryId, cluster: Arc<str>, as_query_failure: bool },
    /// No cluster of the group (or its fallbacks) can take a new query now. Nothing was submitted; the
    /// client may retry after the given time.
    NoCapacity { group: Arc<str>, retry_after_seconds: u64 },
    /// A new statement must run on a cluster (its transaction's, or the one running the query it names)
    /// that is down or no longer configured.
    PinnedClusterDown { cluster: Arc<str>, pin: Pin },
    /// A new statement is pinned (by its transaction, or by the query it names) to a cluster whose group
    /// does not admit the client.
    PinnedGroupNotAllowed { cluster: Arc<str>, group: Arc<str>, pin: Pin },
    /// A URL-placed path names a cluster the config does not have.
    UnknownClusterInPath(Arc<str>),
    /// A spooled segment whose cluster the router does not know.
    SpooledSegmentUnplaced,
    /// The ext_proc message sequence made no sense (a misconfigured Envoy filter).
    ProtocolViolation(&'static str),
}

/// An HTTP answer for Envoy to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// The reason Envoy logs and reports in its `details`.
    pub details: &'static str,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// The query this refusal says no one is known to hold (worth a lookup before answering).
    pub fn unplaced_query(&self) -> Option<&QueryId> {
        match self {
            Refusal::QueryNotFound(id) | Refusal::NothingToCancel(id) => Some(id),
            _ => None,
        }
    }

    pub fn reply(&self) -> LocalReply {
        let (status, error_name, details, message) = self.parts();
        if status == 204 {
            // No content: nothing to say, as Trino says it.
            return LocalReply {
                status,
                content_type: "text/plain",
                body: Vec::new(),
                details,
                retry_after: None,
            };
        }
        let query_id = match self {
            Refusal::QueryNotFound(id)
            | Refusal::QueryOwnerUnknown(id)
            | Refusal::CoordinatorRestarted { query_id: id, .. }
            | Refusal::OwnerRemoved { query_id: id, .. }
            | Refusal::OwnerDown { query_id: id, .. } => id.as_str(),
            _ => "",
        };
        let retry_after = match self {
            Refusal::NoCapacity { retry_after_seconds, .. } => Some(*retry_after_seconds),
            Refusal::QueryOwnerUnknown(_) => Some(1),
            _ => None,
        };
        LocalReply {
            status,
            content_type: "application/json",
            body: query_results_failure(query_id, error_name, &message),
            details,
            retry_after,
        }
    }

    /// The status, Trino error name, Envoy details and message of the answer.
    fn parts(&self) -> (u16, &'static str, &'static str, String) {
        match self {
            Refusal::QueryNotFound(id) => (
                404,
                "QUERY_NOT_FOUND",
                "trino_router_query_not_found",
                format!("Query not found: the router cannot place query {id} on any cluster"),
            ),
            Refusal::QueryOwnerUnknown(id) => (
                503,
                "QUERY_OWNER_UNKNOWN",
                "trino_router_query_owner_unknown",
                format!(
                    "The router cannot tell now which cluster runs query {id}: a cluster did not answer; \
                     retry"
                ),
            ),
            Refusal::NothingToCancel(_) => (204, "", "trino_router_nothing_to_cancel", String::new()),
            Refusal::CoordinatorRestarted { query_id, cluster, as_query_failure } => (
                if *as_query_failure { 200 } else { 404 },
                "COORDINATOR_RESTARTED",
                "trino_router_coordinator_restarted",
                format!(
                    "Query {query_id} failed: the coordinator of cluster {cluster}, which ran it, restarted \
                     (it publishes a new coordinator id); run the query again"
                ),
            ),
            Refusal::BadQueryId(e) => (
                400,
                "INVALID_QUERY_ID",
                "trino_router_bad_query_id",
                format!("Invalid query id in the request path: {e}"),
            ),
            Refusal::OwnerRemoved { query_id, cluster } => (
                404,
                "QUERY_NOT_FOUND",
                "trino_router_owner_removed",
                format!("Query {query_id} ran on cluster {cluster}, which is no longer configured"),
            ),
            Refusal::OwnerDown { query_id, cluster, as_query_failure } => (
                if *as_query_failure { 200 } else { 502 },
                "CLUSTER_UNAVAILABLE",
                "trino_router_owner_down",
                format!(
                    "Query {query_id} failed: cluster {cluster}, which ran it, is down (its coordinator \
                     does not answer); run the query again"
                ),
            ),
            Refusal::NoCapacity { group, .. } => (
                503,
                "NO_CLUSTER_AVAILABLE",
                "trino_router_no_capacity",
                format!(
                    "No cluster of routing group {group} (or its fallbacks) can take a query now; \
                     nothing was submitted, retry later"
                ),
            ),
            Refusal::PinnedClusterDown { cluster, pin } => (
                502,
                "CLUSTER_UNAVAILABLE",
                "trino_router_pinned_cluster_down",
                match pin {
                    Pin::Transaction => {
                        format!(
                            "The transaction of this statement ran on cluster {cluster}, which is unavailable"
                        )
                    }
                    Pin::NamedQuery => {
                        format!(
                            "The query this statement names runs on cluster {cluster}, which is unavailable"
                        )
                    }
                },
            ),
            Refusal::PinnedGroupNotAllowed { cluster, group, pin } => (
                403,
                "PERMISSION_DENIED",
                "trino_router_pinned_group_not_allowed",
                format!(
                    "{} cluster {cluster} of routing group {group}, which does not admit this user or source",
                    match pin {
                        Pin::Transaction => "The transaction of this statement is on",
                        Pin::NamedQuery => "The query this statement names runs on",
                    }
                ),
            ),
            Refusal::UnknownClusterInPath(cluster) => (
                404,
                "CLUSTER_NOT_FOUND",
                "trino_router_unknown_cluster_in_path",
                format!("The request path names cluster {cluster}, which is not configured"),
            ),
            Refusal::SpooledSegmentUnplaced => (
                404,
                "SPOOLED_SEGMENT_NOT_FOUND",
                "trino_router_segment_not_found",
                "Spooled segment not found: the router cannot place it on any cluster".to_owned(),
            ),
            Refusal::ProtocolViolation(what) => (
                500,
                "ROUTER_PROTOCOL_ERROR",
                "trino_router_protocol_error",
                format!("The router could not process this request: {what}"),
            ),
        }
    }
}

/// A `QueryResults` document in state FAILED, as Trino answers a failed query.
fn query_results_failure(query_id: &str, error_name: &str, message: &str) -> Vec<u8> {
    let body = json!({
        "id": query_id,
        "infoUri": "",
        "stats": {
            "state": "FAILED", "queued": false, "scheduled": false, "nodes": 0,
            "totalSplits": 0, "queuedSplits": 0, "runningSplits": 0, "completedSplits": 0,
            "cpuTimeMillis": 0, "wallTimeMillis": 0, "queuedTimeMillis": 0, "elapsedTimeMillis": 0,
            "processedRows": 0, "processedBytes": 0, "physicalInputBytes": 0, "peakMemoryBytes": 0,
            "spilledBytes": 0
        },
        "error": {
            "message": message,
            "errorCode": ROUTER_ERROR_CODE,
            "errorName": error_name,
            "errorType": "EXTERNAL",
            "failureInfo": {
                "type": "io.trino.router.RoutingException",
                "message": message,
                "suppressed": [],
                "stack": []
            }
        },
        "warnings": []
    });
    serde_json::to_vec(&body).expect("a JSON value always serializes")
}

/// Trino reserves error codes per component (`0x0000_0000` user, `0x0001_0000` internal, ...); the
/// router uses one code of the external range for all its refusals and tells them apart by name.
pub const ROUTER_ERROR_CODE: u32 = 0x0003_0000 + 0x0100;

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> QueryId {
        QueryId::parse("20260101_120000_00001_abcde").unwrap()
    }

    #[test]
    fn statuses() {
        #[rustfmt::skip]
        let cases: Vec<(Refusal, u16, &str)> = vec![
            (Refusal::QueryNotFound(id()), 404, "QUERY_NOT_FOUND"),
            (Refusal::BadQueryId(QueryIdError::TooLong), 400, "INVALID_QUERY_ID"),
            (Refusal::QueryOwnerUnknown(id()), 503, "QUERY_OWNER_UNKNOWN"),
            (Refusal::CoordinatorRestarted { query_id: id(), cluster: "a".into(), as_query_failure: true }, 200, "COORDINATOR_RESTARTED"),
            (Refusal::CoordinatorRestarted { query_id: id(), cluster: "a".into(), as_query_failure: false }, 404, "COORDINATOR_RESTARTED"),
            (Refusal::OwnerRemoved { query_id: id(), cluster: "old".into() }, 404, "QUERY_NOT_FOUND"),
            (Refusal::SpooledSegmentUnplaced, 404, "SPOOLED_SEGMENT_NOT_FOUND"),
            (Refusal::UnknownClusterInPath("x".into()), 404, "CLUSTER_NOT_FOUND"),
            (Refusal::PinnedGroupNotAllowed { cluster: "e".into(), group: "etl".into(), pin: Pin::Transaction }, 403, "PERMISSION_DENIED"),
            (Refusal::PinnedClusterDown { cluster: "a".into(), pin: Pin::Transaction }, 502, "CLUSTER_UNAVAILABLE"),
            (Refusal::OwnerDown { query_id: id(), cluster: "a".into(), as_query_failure: true }, 200, "CLUSTER_UNAVAILABLE"),
            (Refusal::OwnerDown { query_id: id(), cluster: "a".into(), as_query_failure: false }, 502, "CLUSTER_UNAVAILABLE"),
            (Refusal::NoCapacity { group: "adhoc".into(), retry_after_seconds: 2 }, 503, "NO_CLUSTER_AVAILABLE"),
            (Refusal::ProtocolViolation("x"), 500, "ROUTER_PROTOCOL_ERROR"),
        ];
        for (refusal, status, name) in cases {
            let reply = refusal.reply();
            assert_eq!(reply.status, status, "{refusal:?}");
            let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            assert_eq!(body["error"]["errorName"], name, "{refusal:?}");
            assert_eq!(body["stats"]["state"], "FAILED");
            assert!(body["error"]["message"].as_str().unwrap().len() > 10);
        }
    }

    #[test]
    fn only_no_capacity_asks_for_a_retry() {
        let reply = Refusal::NoCapacity { group: "adhoc".into(), retry_after_seconds: 2 }.reply();
        assert_eq!(reply.retry_after, Some(2));
        assert_eq!(Refusal::QueryNotFound(id()).reply().retry_after, None);
        assert_eq!(Refusal::QueryOwnerUnknown(id()).reply().retry_after, Some(1), "a retry may find it");
        let nothing = Refusal::NothingToCancel(id()).reply();
        assert_eq!((nothing.status, nothing.body.len()), (204, 0), "as Trino's cancelQuery (Q5)");
        let down =
            Refusal::OwnerDown { query_id: id(), cluster: "trino-a".into(), as_query_failure: true }.reply();
        let body: serde_json::Value = serde_json::from_slice(&down.body).unwrap();
        assert!(body.get("nextUri").is_none(), "a failed page ends the query");
        assert!(body["error"]["message"].as_str().unwrap().contains("trino-a"));
    }

    #[test]
    fn not_found_names_the_query() {
        let reply = Refusal::QueryNotFound(id()).reply();
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["id"], "20260101_120000_00001_abcde");
        assert!(body["error"]["message"].as_str().unwrap().contains("20260101_120000_00001_abcde"));
    }
}
