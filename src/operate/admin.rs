//! The admin gRPC service (`trino_router.v1.Admin`): list clusters with their state, load and queries
//! in flight (this replica's, and with `fleet` every peer's); drain, undrain, disable and enable a
//! cluster (a write every replica takes: [`crate::operate::fleet`] pushes it before the answer); locate
//! a query; and the replicas' own exchange of the operator's say. Every call must carry the configured
//! token (`authorization: Bearer <token>`); with no token configured every call is refused. ext_proc
//! traffic never needs it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::domain::query_id::QueryId;
use crate::operate::api::admin_server::Admin;
use crate::operate::api::{
    Cluster, ClusterRequest, ListClustersRequest, ListClustersResponse, LocateQueryRequest,
    LocateQueryResponse, OperatorState,
};
use crate::operate::fleet::Fleet;
use crate::state::cluster_state::Operator;
use crate::state::router::{Router, Snapshot};

/// Serves the admin API over the router's state.
pub struct AdminService {
    router: Arc<Router>,
    fleet: Arc<Fleet>,
}

impl AdminService {
    pub fn new(router: Arc<Router>, fleet: Arc<Fleet>) -> AdminService {
        AdminService { router, fleet }
    }

    /// Checks the caller's token against the current config's.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let snapshot = self.router.snapshot();
        let Some(expected) = snapshot.config.admin_token.as_ref() else {
            return Err(Status::unauthenticated(
                "admin calls are disabled: configure admin.token or TRINO_ROUTER_ADMIN_TOKEN on the router",
            ));
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if expected.matches(presented) {
            Ok(())
        } else {
            Err(Status::unauthenticated("a valid admin token is required (authorization: Bearer <token>)"))
        }
    }

    /// Writes the operator's say, pushes it to every peer (and the state file), then answers with the
    /// cluster as this replica sees it and which peers hold the change.
    async fn set_operator(
        &self,
        request: Request<ClusterRequest>,
        operator: Operator,
    ) -> Result<Response<Cluster>, Status> {
        self.authorize(&request)?;
        let ClusterRequest { name, reason } = request.into_inner();
        let reason = crate::domain::operator_state::cut_reason(&reason);
        self.router
            .set_operator(&name, operator, &reason)
            .ok_or_else(|| Status::not_found(format!("no cluster is named `{name}`")))?;
        let (reached, missed) = self.fleet.push_now().await;
        let snapshot = self.router.snapshot();
        let index = snapshot.cluster_by_name(&name).ok_or_else(|| Status::not_found(name.clone()))?;
        let mut cluster = describe(&self.router, &snapshot, index);
        cluster.replicas_reached = reached;
        cluster.replicas_missed = missed;
        Ok(Response::new(cluster))
    }
}

/// The admin view of one cluster.
pub fn describe(router: &Router, snapshot: &Snapshot, index: usize) -> Cluster {
    let cluster = &snapshot.config.clusters[index];
    let runtime = &snapshot.clusters[index];
    let in_flight = runtime.in_flight();
    let entry = router.operators().entry(&cluster.name);
    Cluster {
        name: cluster.name.to_string(),
        envoy_cluster: cluster.envoy_cluster.to_string(),
        group: cluster.group.to_string(),
        url: cluster.url.to_string(),
        health: runtime.health().as_str().to_owned(),
        health_reason: runtime.health_reason(),
        operator_state: runtime.operator().as_str().to_owned(),
        accepts_new_queries: runtime.accepts_new_queries(),
        weight: cluster.weight,
        load: runtime.load(),
        coordinator_queries: runtime.coordinator_queries().map_or(-1, |n| n.min(i64::MAX as u64) as i64),
        in_flight,
        queries_routed: runtime.queries_routed(),
        drained: runtime.drained(),
        operator_reason: entry.as_ref().map(|e| e.reason.clone()).unwrap_or_default(),
        operator_set_by: entry.as_ref().map_or_else(|| "config".to_owned(), |e| e.version.origin.to_string()),
        operator_set_at_ms: entry.as_ref().map_or(0, |e| e.version.wall_ms),
        replicas_reached: Vec::new(),
        replicas_missed: Vec::new(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_clusters(
        &self,
        request: Request<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        self.authorize(&request)?;
        let fleet = request.into_inner().fleet;
        let snapshot = self.router.snapshot();
        let clusters = (0..snapshot.clusters.len()).map(|i| describe(&self.router, &snapshot, i)).collect();
        let operators = self.router.operators();
        Ok(Response::new(ListClustersResponse {
            clusters,
            replica: operators.replica().to_string(),
            settled: operators.settled(),
            peers: if fleet { self.fleet.views().await } else { Vec::new() },
        }))
    }

    async fn drain(&self, request: Request<ClusterRequest>) -> Result<Response<Cluster>, Status> {
        self.set_operator(request, Operator::Draining).await
    }

    async fn undrain(&self, request: Request<ClusterRequest>) -> Result<Response<Cluster>, Status> {
        self.set_operator(request, Operator::Active).await
    }

    async fn disable(&self, request: Request<ClusterRequest>) -> Result<Response<Cluster>, Status> {
        self.set_operator(request, Operator::Disabled).await
    }

    async fn enable(&self, request: Request<ClusterRequest>) -> Result<Response<Cluster>, Status> {
        self.set_operator(request, Operator::Active).await
    }

    async fn sync_operator_state(
        &self,
        request: Request<OperatorState>,
    ) -> Result<Response<OperatorState>, Status> {
        self.authorize(&request)?;
        self.fleet.receive(request.into_inner()).await.map(Response::new)
    }

    async fn locate_query(
        &self,
        request: Request<LocateQueryRequest>,
    ) -> Result<Response<LocateQueryResponse>, Status> {
        self.authorize(&request)?;
        let text = request.into_inner().query_id;
        let id = QueryId::parse(&text).map_err(|e| Status::invalid_argument(format!("`{text}`: {e}")))?;
        let cluster = self.router.affinity().owner_of(&id).map(|c| c.to_string()).unwrap_or_default();
        Ok(Response::new(LocateQueryResponse { cluster }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The admin token of these tests.
    const T: &str = "admin-token-for-tests-0001";

    fn service(token: Option<&str>) -> AdminService {
        let mut text = "
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: blue, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: green, url: 'http://127.0.0.1:2', group: adhoc, enabled: false}
"
        .to_owned();
        if let Some(token) = token {
            text.push_str(&format!("admin: {{token: {token}}}\n"));
        }
        let config = crate::domain::config::testing::config(&text);
        let router = Arc::new(Router::new(config));
        AdminService::new(router.clone(), Fleet::new(router))
    }

    fn with_token<T>(message: T, token: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    #[tokio::test]
    async fn refused_without_the_right_token() {
        let admin = service(Some("s3cret-admin-token-x"));
        #[rustfmt::skip]
        let cases: Vec<(Request<ListClustersRequest>, &str)> = vec![
            (Request::new(ListClustersRequest::default()), "no token"),
            (with_token(ListClustersRequest::default(), "wrong"), "wrong token"),
            (with_token(ListClustersRequest::default(), "s3cret-admin-token-"), "prefix of the token"),
            (with_token(ListClustersRequest::default(), ""), "empty token"),
        ];
        for (request, what) in cases {
            let status = admin.list_clusters(request).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{what}");
        }
        let unconfigured = service(None);
        let status = unconfigured
            .list_clusters(with_token(ListClustersRequest::default(), "anything"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("disabled"), "{}", status.message());
    }

    #[tokio::test]
    async fn blue_green_through_the_api() {
        let admin = service(Some(T));
        let list =
            admin.list_clusters(with_token(ListClustersRequest::default(), T)).await.unwrap().into_inner();
        let states: Vec<(&str, &str, bool)> = list
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c.operator_state.as_str(), c.accepts_new_queries))
            .collect();
        assert_eq!(states, [("blue", "active", true), ("green", "disabled", false)]);

        let green = admin
            .enable(with_token(ClusterRequest { name: "green".into(), reason: String::new() }, T))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((green.operator_state.as_str(), green.accepts_new_queries), ("active", true));
        let blue = admin
            .drain(with_token(ClusterRequest { name: "blue".into(), reason: "upgrade to 477".into() }, T))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (blue.operator_state.as_str(), blue.accepts_new_queries, blue.drained),
            ("draining", false, false),
            "nothing in flight, but not drained before every client could have been heard from"
        );
        assert_eq!(blue.coordinator_queries, -1);
        assert_eq!(
            (blue.operator_reason.as_str(), blue.operator_set_by.as_str()),
            ("upgrade to 477", "trino-router")
        );
        assert!(blue.operator_set_at_ms > 1_700_000_000_000, "{}", blue.operator_set_at_ms);
        assert!(blue.replicas_reached.is_empty() && blue.replicas_missed.is_empty(), "no peers configured");

        let missing = admin
            .drain(with_token(ClusterRequest { name: "red".into(), reason: String::new() }, T))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn a_peer_s_newer_say_is_taken_and_the_merged_book_returned() {
        use crate::operate::api::{OperatorEntry, OperatorState};
        let admin = service(Some(T));
        let entry = |state: &str, wall_ms: u64| OperatorEntry {
            cluster: "blue".into(),
            state: state.into(),
            reason: "from r1".into(),
            wall_ms,
            counter: 0,
            origin: "r1".into(),
            config_enabled: true,
        };
        let from_peer =
            |entries| OperatorState { replica: "r1".into(), instance: 42, settled: true, entries };
        let refused = admin.sync_operator_state(Request::new(from_peer(vec![]))).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "peers need the token too");

        let answer = admin
            .sync_operator_state(with_token(from_peer(vec![entry("draining", 1_000)]), T))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.replica, "trino-router");
        assert_eq!(answer.entries, vec![entry("draining", 1_000)], "the peer's entry, kept and returned");
        let snapshot = admin.router.snapshot();
        assert_eq!(snapshot.clusters[0].operator(), Operator::Draining, "blue follows the book");

        // Older news changes nothing; a nonsense state is left out, the rest is taken.
        let answer = admin
            .sync_operator_state(with_token(from_peer(vec![entry("active", 999), entry("gone", 5_000)]), T))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.entries, vec![entry("draining", 1_000)]);
        assert_eq!(snapshot.clusters[0].operator(), Operator::Draining);
    }

    #[tokio::test]
    async fn locate_query() {
        let admin = service(Some(T));
        let snapshot = admin.router.snapshot();
        let id = QueryId::parse("20260101_120000_00001_abcde").unwrap();
        admin
            .router
            .learn(&snapshot, crate::state::router::Learned::QueryOwner { query: id.clone(), cluster: 1 });
        let found = admin
            .locate_query(with_token(LocateQueryRequest { query_id: id.to_string() }, T))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.cluster, "green");
        let same_coordinator = LocateQueryRequest { query_id: "20260101_120000_00002_abcde".into() };
        let found = admin.locate_query(with_token(same_coordinator, T)).await.unwrap().into_inner();
        assert_eq!(found.cluster, "green", "placed by its coordinator id");
        let unknown = LocateQueryRequest { query_id: "20260101_120000_00002_zzzzz".into() };
        assert_eq!(admin.locate_query(with_token(unknown, T)).await.unwrap().into_inner().cluster, "");
        let bad = LocateQueryRequest { query_id: "../x".into() };
        assert_eq!(
            admin.locate_query(with_token(bad, T)).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
