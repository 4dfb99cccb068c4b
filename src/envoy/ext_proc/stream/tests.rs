//! The stream machine at the protobuf level (through [`ProcessingStream`], as the service drives it):
//! messages as Envoy sends them, replies as Envoy gets them.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse,
};

use super::{MAX_LEARN_BODY, Role, UPSTREAM_SERVICE_TIME};
use crate::coordinators::query_lookup::Found;
use crate::domain::config::testing::{ADHOC_AND_ETL, TWO_GROUPS};
use crate::domain::query_id::QueryId;
use crate::envoy::ext_proc::messages::{LearnNote, Phase, pass, read_note, with_note};
use crate::envoy::ext_proc::service::ProcessingStream;
use crate::state::router::testing::router_from;
use crate::state::router::{Learned, Router};

type Step = super::Step<Box<ProcessingResponse>>;

const ID: &str = "20260101_120000_00001_abcde";

fn router() -> Arc<Router> {
    router_from(TWO_GROUPS)
}

/// What discovery does when it finds a query: the router learns its owner.
fn learn_owner(router: &Router, id: &str, cluster: usize) {
    router.learn(&router.snapshot(), Learned::QueryOwner { query: QueryId::parse(id).unwrap(), cluster });
}

fn headers(pairs: &[(&str, &str)], end_of_stream: bool) -> HttpHeaders {
    let headers = pairs
        .iter()
        .map(|(k, v)| HeaderValue {
            key: (*k).into(),
            raw_value: v.as_bytes().to_vec(),
            ..Default::default()
        })
        .collect();
    HttpHeaders { headers: Some(HeaderMap { headers }), end_of_stream, ..Default::default() }
}

fn msg(request: Request, observing: bool) -> ProcessingRequest {
    ProcessingRequest { request: Some(request), observability_mode: observing, ..Default::default() }
}

fn request(method: &str, path: &str, extra: &[(&str, &str)], observing: bool) -> ProcessingRequest {
    let mut pairs = vec![(":method", method), (":path", path)];
    pairs.extend_from_slice(extra);
    msg(Request::RequestHeaders(headers(&pairs, method != "POST")), observing)
}

fn status(code: &str, observing: bool) -> ProcessingRequest {
    msg(Request::ResponseHeaders(headers(&[(":status", code)], false)), observing)
}

fn body(bytes: &[u8], end: bool, observing: bool) -> ProcessingRequest {
    msg(
        Request::ResponseBody(HttpBody { body: bytes.to_vec(), end_of_stream: end, ..Default::default() }),
        observing,
    )
}

/// The routing header value a reply sets, or the status of an immediate reply.
fn summary(step: Step) -> String {
    let Step::Reply(reply) = step else { return format!("{step:?}") };
    match reply.response {
        Some(Response::RequestHeaders(h)) => {
            let mutation = h.response.unwrap().header_mutation.unwrap_or_default();
            match mutation.set_headers.first().and_then(|s| s.header.as_ref()) {
                Some(h) => format!("route {}", String::from_utf8_lossy(&h.raw_value)),
                None => "pass request headers".to_owned(),
            }
        }
        Some(Response::ImmediateResponse(r)) => format!("refuse {}", r.status.unwrap().code),
        Some(Response::ResponseHeaders(_)) => "pass response headers".to_owned(),
        Some(Response::ResponseBody(_)) => "pass response body".to_owned(),
        Some(Response::RequestBody(_)) => "pass request body".to_owned(),
        other => format!("{other:?}"),
    }
}

/// What Envoy forwards to the learn filter from a decide reply: its dynamic metadata, by namespace.
fn forwarded(reply: &ProcessingResponse) -> envoy_types::pb::envoy::config::core::v3::Metadata {
    use envoy_types::pb::google::protobuf::value::Kind;
    let note = reply.dynamic_metadata.clone().expect("a routed new statement leaves a note");
    let filter_metadata = note
        .fields
        .into_iter()
        .filter_map(|(namespace, value)| match value.kind {
            Some(Kind::StructValue(s)) => Some((namespace, s)),
            _ => None,
        })
        .collect();
    envoy_types::pb::envoy::config::core::v3::Metadata { filter_metadata, ..Default::default() }
}

/// A learn stream's first message: the answer's status, with the note `reply` left.
fn answer_with_note(reply: &ProcessingResponse) -> ProcessingRequest {
    let mut answer = status("200", false);
    answer.metadata_context = Some(forwarded(reply));
    answer
}

fn first_page() -> Vec<u8> {
    format!(r#"{{"id":"{ID}","infoUri":"http://x/ui/query.html?{ID}","nextUri":"http://x/v1/statement/queued/{ID}/y/1","stats":{{"state":"QUEUED"}}}}"#).into_bytes()
}

/// A follow-up of a query the router has not placed: it asks for a lookup, and (nothing learned
/// meanwhile) refuses when resumed.
fn unplaced_follow_up(router: &Arc<Router>) -> String {
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    let first = summary(s.on_message(follow_up()));
    format!("{first}, then {}", summary(s.resume(Found::Nowhere)))
}

fn follow_up() -> ProcessingRequest {
    request("GET", &format!("/v1/statement/queued/{ID}/y/1"), &[], false)
}

#[test]
fn decide_role_replies_once_per_phase() {
    let router = router();
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(summary(s.on_message(request("POST", "/v1/statement", &[], false))), "route trino-a");
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(
        summary(s.on_message(request("POST", "/v1/statement", &[("x-trino-routing-group", "etl")], false))),
        "route outbound|1||etl"
    );
    // The POSTs above were routed tentatively (their SQL never came): no turn was taken.
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(summary(s.on_message(request("GET", "/v1/info", &[], false))), "route trino-a");
    assert_eq!(
        unplaced_follow_up(&router),
        "Locate(QueryId(20260101_120000_00001_abcde), None), then refuse 404"
    );
}

#[test]
fn a_lookup_that_finds_the_owner_routes_the_waiting_request() {
    let router = router();
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(summary(s.on_message(follow_up())), "Locate(QueryId(20260101_120000_00001_abcde), None)");
    learn_owner(&router, ID, 1); // what discovery does
    assert_eq!(summary(s.resume(Found::Owner)), "route trino-b");
}

#[test]
fn a_lookup_that_could_not_tell_is_a_retryable_refusal_and_the_asker_is_named() {
    let router = router();
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    let asked =
        request("GET", &format!("/v1/statement/queued/{ID}/y/1"), &[("x-trino-user", "alice")], false);
    assert_eq!(summary(s.on_message(asked)), "Locate(QueryId(20260101_120000_00001_abcde), Some(\"alice\"))");
    assert_eq!(summary(s.resume(Found::Unknown)), "refuse 503");
    // DELETE /v1/query/{id} held nowhere: Trino's 204, after a lookup.
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    assert!(matches!(
        s.on_message(request("DELETE", &format!("/v1/query/{ID}"), &[], false)),
        Step::Locate(..)
    ));
    assert_eq!(summary(s.resume(Found::Nowhere)), "refuse 204");
}

#[test]
fn resume_without_a_lookup_is_a_protocol_error() {
    let mut s = ProcessingStream::new(router(), Role::Decide);
    assert_eq!(summary(s.resume(Found::Nowhere)), "refuse 500");
}

#[test]
fn client_sent_routing_header_is_overwritten() {
    let router = router();
    let mut s = ProcessingStream::new(router, Role::Decide);
    let spoofed = request("POST", "/v1/statement", &[("x-trino-cluster", "outbound|1||etl")], false);
    assert_eq!(summary(s.on_message(spoofed)), "route trino-a");
}

#[test]
fn learn_role_learns_owner_from_first_page() {
    let router = router();
    let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
    let routed = request("POST", "/v1/statement", &[("x-trino-cluster", "outbound|1||etl")], false);
    assert_eq!(summary(learn.on_message(routed)), "pass request headers");
    assert_eq!(summary(learn.on_message(status("200", false))), "pass response headers");
    assert_eq!(summary(learn.on_message(body(&first_page(), true, false))), "pass response body");
    let mut s = ProcessingStream::new(router, Role::Decide);
    assert_eq!(summary(s.on_message(follow_up())), "route outbound|1||etl");
}

#[test]
fn learn_role_reads_one_body_per_cluster_per_refresh() {
    let router = router();
    let body_mode = |step: Step| {
        let Step::Reply(reply) = step else { panic!("{step:?}") };
        reply.mode_override.map(|m| m.response_body_mode)
    };
    let new_statement = |cluster: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("x-trino-cluster", cluster)];
        headers.extend_from_slice(extra);
        request("POST", "/v1/statement", &headers, false)
    };
    let mut first = ProcessingStream::new(router.clone(), Role::Learn);
    assert_eq!(body_mode(first.on_message(new_statement("trino-a", &[]))), None, "never learned: read");
    first.on_message(status("200", false));
    first.on_message(body(&first_page(), true, false));
    let none = Some(
        envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode::None
            as i32,
    );
    let mut second = ProcessingStream::new(router.clone(), Role::Learn);
    assert_eq!(body_mode(second.on_message(new_statement("trino-a", &[]))), none, "learned just now");
    assert_eq!(summary(second.on_message(status("503", false))), "pass response headers");
    let mut other = ProcessingStream::new(router.clone(), Role::Learn);
    assert_eq!(body_mode(other.on_message(new_statement("trino-b", &[]))), None, "another cluster");
    let mut watched = ProcessingStream::new(router.clone(), Role::Learn);
    let note = LearnNote { envoy_cluster: "trino-a".into(), watch: true, log: None };
    let step = watched.on_message(answer_with_note(&with_note(pass(Phase::RequestBody), &note)));
    assert_eq!(
        body_mode(step),
        Some(envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode::Buffered as i32),
        "a watched query is always read"
    );
}

#[test]
fn a_stream_that_begins_with_an_answer_learns() {
    let router = router();
    let (mut decide, mut learn) = (
        ProcessingStream::new(router.clone(), Role::Decide),
        ProcessingStream::new(router.clone(), Role::Decide),
    );
    decide.on_message(request("POST", "/v1/statement", &[], false));
    let Step::Reply(reply) = decide.on_message(sql_body("SELECT 1")) else { panic!() };
    // No role metadata (Envoy Gateway): still a learn stream, which asks for the first answer's body.
    let Step::Reply(asked) = learn.on_message(answer_with_note(&reply)) else { panic!() };
    assert!(asked.mode_override.is_some(), "{asked:?}");
    learn.on_message(body(&first_page(), true, false));
    assert_eq!(router.affinity().coordinator_ids(), 1, "learned");
}

#[test]
fn observing_learn_role_never_replies() {
    let router = router();
    let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
    let routed = request("POST", "/v1/statement", &[("x-trino-cluster", "trino-b")], true);
    assert_eq!(summary(learn.on_message(routed)), "Quiet");
    assert_eq!(summary(learn.on_message(status("200", true))), "Quiet");
    let page = first_page();
    assert_eq!(summary(learn.on_message(body(&page[..10], false, true))), "Quiet");
    assert_eq!(summary(learn.on_message(body(&page[10..], true, true))), "Finish");
    let mut s = ProcessingStream::new(router, Role::Decide);
    assert_eq!(summary(s.on_message(follow_up())), "route trino-b");
}

#[test]
fn failed_deliveries_stop_new_queries() {
    let router = router();
    let fail_one = || {
        let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
        learn.on_message(request("POST", "/v1/statement", &[("x-trino-cluster", "trino-a")], false));
        assert_eq!(summary(learn.on_message(status("503", false))), "pass response headers");
    };
    fail_one();
    assert!(router.snapshot().clusters[0].accepts_new_queries(), "one Envoy-made 503 is a suspicion");
    fail_one();
    fail_one();
    for _ in 0..4 {
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        assert_eq!(summary(s.on_message(request("POST", "/v1/statement", &[], false))), "route trino-b");
    }
    // A coordinator's own 503 (it answered: Envoy's service-time header) means "no new queries here",
    // but its running queries go on.
    let router = self::router();
    let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
    learn.on_message(request("POST", "/v1/statement", &[("x-trino-cluster", "trino-a")], false));
    let refused = headers(&[(":status", "503"), (UPSTREAM_SERVICE_TIME, "3")], false);
    learn.on_message(msg(Request::ResponseHeaders(refused), false));
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(summary(s.on_message(request("POST", "/v1/statement", &[], false))), "route trino-b");
    learn_owner(&router, ID, 0);
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(summary(s.on_message(follow_up())), "route trino-a", "its queries still reach it");
    // A coordinator's own 4xx says nothing about its health.
    let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
    learn.on_message(request("POST", "/v1/statement", &[("x-trino-cluster", "trino-b")], false));
    learn.on_message(status("400", false));
    let mut s = ProcessingStream::new(router, Role::Decide);
    assert_eq!(summary(s.on_message(request("POST", "/v1/statement", &[], false))), "route trino-b");
}

fn router_with_rules() -> Arc<Router> {
    let rules = r#"rules: [{name: writes, when: 'statement.kind == "insert"', group: etl, set_headers: {X-Trino-Client-Tags: etl-write}}]"#;
    router_from(&format!("{ADHOC_AND_ETL}{rules}"))
}

fn sql_body(sql: &str) -> ProcessingRequest {
    msg(
        Request::RequestBody(HttpBody {
            body: sql.as_bytes().to_vec(),
            end_of_stream: true,
            ..Default::default()
        }),
        false,
    )
}

/// The routing header and extra headers a headers- or body-phase reply sets.
fn routed(step: Step) -> String {
    let Step::Reply(reply) = step else { return format!("{step:?}") };
    let common = match reply.response {
        Some(Response::RequestHeaders(h)) => h.response,
        Some(Response::RequestBody(b)) => b.response,
        other => return format!("{other:?}"),
    };
    let headers: Vec<String> = common
        .and_then(|c| c.header_mutation)
        .map(|m| m.set_headers)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|h| h.header)
        .map(|h| format!("{}={}", h.key, String::from_utf8_lossy(&h.raw_value)))
        .collect();
    headers.join(" ")
}

#[test]
fn statement_rules_decide_on_the_body() {
    let router = router_with_rules();
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    let post = request("POST", "/v1/statement", &[], false);
    assert_eq!(routed(s.on_message(post)), "x-trino-cluster=trino-a", "tentative, before the SQL");
    assert_eq!(
        routed(s.on_message(sql_body("INSERT INTO hive.s.t VALUES (1)"))),
        "x-trino-cluster=trino-etl x-trino-client-tags=etl-write"
    );
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    s.on_message(request("POST", "/v1/statement", &[], false));
    assert_eq!(routed(s.on_message(sql_body("SELECT 1"))), "x-trino-cluster=trino-a");
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    s.on_message(request("POST", "/v1/statement", &[], false));
    assert_eq!(
        routed(s.on_message(sql_body("\u{0}\u{1}((((' binary"))),
        "x-trino-cluster=trino-a",
        "unreadable SQL routes"
    );
    // Dispatches are counted once per statement, at the final decision.
    assert_eq!(
        router.snapshot().clusters[0].queries_routed() + router.snapshot().clusters[1].queries_routed(),
        3
    );
}

/// Regression: the tentative headers reply (SQL not read yet, kind `unknown`) carried the headers of a
/// rule that matched `unknown`; they stayed on the request though the SQL then led elsewhere.
#[test]
fn a_tentative_reply_sets_no_rule_headers() {
    let rules = r#"rules: [{name: not-select, when: 'statement.kind != "select"', group: etl, set_headers: {X-Trino-Client-Tags: batch}}]"#;
    let router = router_from(&format!("{ADHOC_AND_ETL}{rules}"));
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(
        routed(s.on_message(request("POST", "/v1/statement", &[], false))),
        "x-trino-cluster=trino-etl"
    );
    assert_eq!(routed(s.on_message(sql_body("SELECT 1"))), "x-trino-cluster=trino-a");
    let mut s = ProcessingStream::new(router, Role::Decide);
    s.on_message(request("POST", "/v1/statement", &[], false));
    assert_eq!(
        routed(s.on_message(sql_body("INSERT INTO a.b.c VALUES 1"))),
        "x-trino-cluster=trino-etl x-trino-client-tags=batch"
    );
}

#[test]
fn without_sql_needs_the_headers_decide_and_the_body_is_not_asked_for() {
    let text = "
listen: 127.0.0.1:1
default_group: adhoc
placement_from_sql: false
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
";
    let router = router_from(text);
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    let Step::Reply(reply) = s.on_message(request("POST", "/v1/statement", &[], false)) else { panic!() };
    assert!(reply.mode_override.is_some_and(|m| m.request_body_mode == 0), "Envoy is told to skip the body");
    assert_eq!(routed(Step::Reply(reply)), "x-trino-cluster=trino-a");
    // Should Envoy send it anyway, it is passed unread.
    assert_eq!(summary(s.on_message(sql_body("INSERT INTO x VALUES 1"))), "pass request body");
    assert_eq!(router.snapshot().clusters[0].queries_routed(), 1);
}

/// Runs a new statement through both filters (decide with its SQL, then learn with the first page of
/// query `id`); returns the cluster it went to.
fn submit(router: &Arc<Router>, headers: &[(&str, &str)], sql: &str, id: &str) -> String {
    let mut decide = ProcessingStream::new(router.clone(), Role::Decide);
    decide.on_message(request("POST", "/v1/statement", headers, false));
    let Step::Reply(reply) = decide.on_message(sql_body(sql)) else { panic!("no body reply") };
    let metadata = forwarded(&reply);
    let Some(Response::RequestBody(routed)) = reply.response else { panic!("{reply:?}") };
    let set: Vec<(String, String)> = routed
        .response
        .unwrap()
        .header_mutation
        .unwrap()
        .set_headers
        .into_iter()
        .filter_map(|h| h.header)
        .map(|h| (h.key, String::from_utf8_lossy(&h.raw_value).into_owned()))
        .collect();
    let cluster = set[0].1.clone();
    let note = read_note(Some(&metadata)).unwrap();
    assert_eq!(note.envoy_cluster, cluster);
    assert_eq!(note.watch, sql.starts_with("START TRANSACTION"), "{sql}");
    let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
    let mut answer = status("200", false);
    answer.metadata_context = Some(metadata);
    let step = learn.on_message(answer);
    let wants_body = matches!(&step, Step::Reply(r) if r.mode_override.is_some());
    if note.watch {
        assert!(wants_body, "a watched query's answer is read");
    }
    if wants_body {
        let page = format!(r#"{{"id":"{id}","stats":{{}}}}"#);
        learn.on_message(body(page.as_bytes(), true, false));
    }
    cluster
}

#[test]
fn transactions_stay_on_the_cluster_that_started_them() {
    let router = router();
    let start = "20260101_120000_00007_bbbbb";
    assert_eq!(submit(&router, &[], "START TRANSACTION", start), "trino-a");
    // The client polls the query; its answer names the transaction.
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    let poll = request("GET", &format!("/v1/statement/executing/{start}/y/1"), &[], false);
    let Step::Reply(reply) = s.on_message(poll) else { panic!() };
    assert!(
        reply.mode_override.is_some_and(|m| m.response_header_mode == 1),
        "asks for the answer's headers"
    );
    let answer = headers(&[(":status", "200"), ("x-trino-started-transaction-id", "tx-1")], false);
    assert_eq!(summary(s.on_message(msg(Request::ResponseHeaders(answer), false))), "pass response headers");
    // Every statement of the transaction goes to trino-a, whatever the turn.
    for n in 0..4 {
        let id = format!("20260101_120000_0001{n}_bbbbb");
        assert_eq!(submit(&router, &[("X-Trino-Transaction-Id", "tx-1")], "SELECT 1", &id), "trino-a");
    }
    let others: Vec<String> =
        (0..4).map(|n| submit(&router, &[], "SELECT 1", &format!("20260101_120000_0002{n}_bbbbb"))).collect();
    assert!(others.contains(&"trino-b".to_owned()), "other sessions still spread: {others:?}");
    assert_eq!(
        submit(&router, &[("X-Trino-Transaction-Id", "NONE")], "SELECT 1", "20260101_120000_00031_bbbbb")
            .len(),
        7
    );
}

#[test]
fn kill_query_of_an_unplaced_query_is_looked_up_first() {
    let router = router();
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    s.on_message(request("POST", "/v1/statement", &[], false));
    let sql = "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_eeeee')";
    assert_eq!(summary(s.on_message(sql_body(sql))), "Locate(QueryId(20260101_120000_00001_eeeee), None)");
    learn_owner(&router, "20260101_120000_00001_eeeee", 1); // discovery
    assert_eq!(routed(s.resume(Found::Owner)), "x-trino-cluster=trino-b");
    // Nothing found: placed like any statement, no second lookup.
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    s.on_message(request("POST", "/v1/statement", &[], false));
    let sql = "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_fffff')";
    assert!(matches!(s.on_message(sql_body(sql)), Step::Locate(..)));
    assert!(routed(s.resume(Found::Nowhere)).starts_with("x-trino-cluster=trino-"));
}

#[test]
fn a_cluster_prefixed_transaction_id_is_placed_by_any_replica() {
    // A router that never saw the transaction start (another replica, or restarted).
    let router = router();
    for n in 0..3 {
        let id = format!("20260101_120000_0004{n}_bbbbb");
        let mut decide = ProcessingStream::new(router.clone(), Role::Decide);
        decide.on_message(request(
            "POST",
            "/v1/statement",
            &[("x-trino-transaction-id", "outbound|1||etl~tx-9")],
            false,
        ));
        assert_eq!(
            routed(decide.on_message(sql_body("SELECT 1"))),
            "x-trino-cluster=outbound|1||etl x-trino-transaction-id=tx-9",
            "statement {id} goes to the transaction's cluster with the coordinator's own id"
        );
    }
    // Follow-ups carry the header too: the coordinator gets its own id.
    learn_owner(&router, ID, 2);
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    let poll = request(
        "GET",
        &format!("/v1/statement/executing/{ID}/y/1"),
        &[("x-trino-transaction-id", "outbound|1||etl~tx-9")],
        false,
    );
    assert_eq!(routed(s.on_message(poll)), "x-trino-cluster=outbound|1||etl x-trino-transaction-id=tx-9");
    // An unknown prefix is not a placement: the id is left as is.
    let mut decide = ProcessingStream::new(router, Role::Decide);
    decide.on_message(request("POST", "/v1/statement", &[("x-trino-transaction-id", "nope~tx-1")], false));
    assert!(!routed(decide.on_message(sql_body("SELECT 1"))).contains("x-trino-transaction-id"));
}

#[test]
fn kill_query_goes_to_the_query_s_cluster() {
    let router = router();
    learn_owner(&router, "20260101_120000_00001_ccccc", 1);
    for n in 0..3 {
        let sql = "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_ccccc', message => 'x')";
        assert_eq!(submit(&router, &[], sql, &format!("20260101_120000_0000{n}_ddddd")), "trino-b");
    }
}

#[test]
fn url_placement_names_the_cluster_in_every_uri() {
    let text = "
listen: 127.0.0.1:1
default_group: adhoc
url_prefix: /_trino/
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-b, url: 'http://127.0.0.1:2', group: adhoc}
";
    let router = router_from(text);
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    s.on_message(request("POST", "/v1/statement", &[("x-forwarded-prefix", "/evil")], false));
    assert_eq!(
        routed(s.on_message(sql_body("SELECT 1"))),
        "x-trino-cluster=trino-a x-forwarded-prefix=/_trino/trino-a"
    );
    // Follow-ups and spooled segments name their cluster: no lookup, the prefix is stripped.
    for path in [
        "/_trino/trino-b/v1/statement/executing/20260101_120000_00001_zzzzz/y/1",
        "/_trino/trino-b/v1/spooled/download/s3cr3t",
    ] {
        let mut s = ProcessingStream::new(router.clone(), Role::Decide);
        let rest = path.strip_prefix("/_trino/trino-b").unwrap();
        assert_eq!(
            routed(s.on_message(request("GET", path, &[], false))),
            format!("x-trino-cluster=trino-b :path={rest} x-forwarded-prefix=/_trino/trino-b")
        );
    }
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(summary(s.on_message(request("GET", "/_trino/nope/v1/info", &[], false))), "refuse 404");
    // A new statement under a cluster's prefix is still placed by the router, not by its URL.
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    s.on_message(request("POST", "/_trino/trino-a/v1/statement", &[], false));
    assert_eq!(
        routed(s.on_message(sql_body("SELECT 1"))),
        "x-trino-cluster=trino-b x-forwarded-prefix=/_trino/trino-b :path=/v1/statement"
    );
}

#[test]
fn roles_from_metadata() {
    assert_eq!(Role::from_metadata(Some("learn")), Role::Learn);
    assert_eq!(Role::from_metadata(Some("LEARN")), Role::Learn);
    assert_eq!(Role::from_metadata(Some("decide")), Role::Decide);
    assert_eq!(Role::from_metadata(Some("other")), Role::Decide);
    assert_eq!(Role::from_metadata(None), Role::Decide);
}

#[test]
fn one_filter_with_every_phase_decides_and_learns() {
    let router = router();
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(summary(s.on_message(request("POST", "/v1/statement", &[], false))), "route trino-a");
    assert_eq!(
        summary(s.on_message(msg(Request::RequestBody(HttpBody::default()), false))),
        "pass request body"
    );
    assert_eq!(summary(s.on_message(status("200", false))), "pass response headers");
    assert_eq!(summary(s.on_message(body(&first_page(), true, false))), "pass response body");
    let mut s = ProcessingStream::new(router, Role::Decide);
    assert_eq!(summary(s.on_message(follow_up())), "route trino-a");
}

#[test]
fn nothing_is_learned_from_failures_and_garbage() {
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("503", first_page()),                                   // Envoy's or the coordinator's error
        ("400", first_page()),
        ("200", b"".to_vec()),                                   // empty
        ("200", b"\xff\xfe\x00garbage".to_vec()),               // binary
        ("200", br#"{"id": 7}"#.to_vec()),                       // wrong type
        ("200", br#"{"id": "../../x"}"#.to_vec()),               // not a query id
        ("200", br#"{"nextUri": "x"}"#.to_vec()),                // no id
        ("200", format!(r#"{{"id":"{ID}""#).into_bytes()),       // truncated
        ("200", vec![b' '; MAX_LEARN_BODY + 1]),                 // too large
    ];
    for (code, page) in cases {
        let router = router();
        let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
        learn.on_message(request("POST", "/v1/statement", &[("x-trino-cluster", "trino-a")], false));
        learn.on_message(status(code, false));
        learn.on_message(body(&page, true, false));
        assert_eq!(
            unplaced_follow_up(&router),
            "Locate(QueryId(20260101_120000_00001_abcde), None), then refuse 404",
            "status {code}, body {:?}",
            String::from_utf8_lossy(&page[..page.len().min(40)])
        );
    }
}

#[test]
fn learn_role_ignores_what_it_need_not_follow() {
    let router = router();
    // Not a new statement: the learn stream closes at once.
    let mut learn = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(summary(learn.on_message(request("GET", "/v1/info", &[], true))), "Finish");
    // A new statement without a routing header the router knows: nothing to learn.
    let mut learn = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(
        summary(learn.on_message(request(
            "POST",
            "/v1/statement",
            &[("x-trino-cluster", "elsewhere")],
            true
        ))),
        "Finish"
    );
    // A stream that ends before the body.
    let mut learn = ProcessingStream::new(router, Role::Decide);
    learn.on_message(request("POST", "/v1/statement", &[("x-trino-cluster", "trino-a")], true));
    assert_eq!(
        summary(learn.on_message(msg(Request::ResponseHeaders(headers(&[(":status", "200")], true)), true))),
        "Finish"
    );
}

#[test]
fn malformed_messages_get_defined_answers() {
    let router = router();
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    assert_eq!(summary(s.on_message(ProcessingRequest::default())), "refuse 500");
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    let empty = msg(Request::RequestHeaders(HttpHeaders::default()), false);
    assert_eq!(summary(s.on_message(empty)), "route trino-a"); // no path: the default group
    let mut s = ProcessingStream::new(router.clone(), Role::Decide);
    let binary = msg(
        Request::RequestHeaders(HttpHeaders {
            headers: Some(HeaderMap {
                headers: vec![HeaderValue {
                    key: ":path".into(),
                    raw_value: b"/v1/query/\xff".to_vec(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        false,
    );
    assert_eq!(summary(s.on_message(binary)), "route trino-b"); // a path that is not UTF-8 names no query
    let mut s = ProcessingStream::new(router, Role::Decide);
    assert_eq!(
        summary(s.on_message(ProcessingRequest { observability_mode: true, ..Default::default() })),
        "Finish"
    );
}

/// With its role known (named in its metadata, or `envoy_auth` on), a decide stream that begins with an
/// answer and a note does not become a learn stream: it learns nothing.
#[test]
fn a_known_role_is_not_changed_by_the_first_message() {
    let router = router();
    let note = LearnNote { envoy_cluster: "trino-a".into(), watch: false, log: None };
    let forged = answer_with_note(&with_note(pass(Phase::RequestBody), &note));
    let mut decide = ProcessingStream::role_known(router.clone(), Role::Decide);
    decide.on_message(forged.clone());
    decide.on_message(body(&first_page(), true, false));
    assert!(unplaced_follow_up(&router).ends_with("then refuse 404"), "nothing learned");
    // Without a known role, the same stream learns (Envoy Gateway's extProc sets no metadata).
    let mut inferred = ProcessingStream::new(router.clone(), Role::Decide);
    inferred.on_message(forged);
    inferred.on_message(body(&first_page(), true, false));
    let mut s = ProcessingStream::new(router, Role::Decide);
    assert_eq!(summary(s.on_message(follow_up())), "route trino-a");
}
