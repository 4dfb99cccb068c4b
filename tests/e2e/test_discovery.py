"""End-to-end: the router with coordinators that answer as Trino does (issue 14, docs/trino-conformance.md),
in both Envoy modes — routes over RDS (learned follow-up routes) and ``--static-routes`` (every request
asks the router, as behind Istio and Envoy Gateway):

- a router restart with queries in flight: every follow-up reaches the coordinator that holds its query,
  whether the coordinators publish their id in ``/v1/info`` (Trino 477+) or not (then the router finds
  the owner by ``GET /v1/query/{id}``, where Trino answers 410 for every id it does not hold: row Q2);
- ids no cluster holds: the router's own Trino-shaped 404 (and Trino's 204 to ``DELETE /v1/query``), and
  a retryable 503 when a cluster could not say;
- a coordinator with Trino's default ``http-server.process-forwarded`` (406 to Envoy's X-Forwarded-Proto):
  no client sees a 406, it takes no query, and the operator is told which setting to change;
- queries submitted straight to coordinators, polled through Envoy: placed by the published coordinator
  ids, with 0 discovery lookups (the router's ``trino_router_discovery_lookups_total``).

Queries are driven with raw HTTP (``harness.http_request``) where the test needs every answer; the real
``trino`` client where it stands for users.
"""

from __future__ import annotations

import json
import re
import secrets
import time

import pytest

import harness

ROUTES = ["rds", "static"]
CLUSTERS = [("trino-a", "adhoc"), ("trino-b", "adhoc"), ("trino-c", "adhoc")]
HEALTH = {"interval": "250ms", "timeout": "500ms", "healthy_threshold": 2, "unhealthy_threshold": 2,
          "retry_after": "1s"}
TOKEN = "e2e-" + secrets.token_hex(24)
#: Three pages, each ready 100 ms after the previous one.
SLOW = "/* emulator: pages=3 delay_ms=100 */ SELECT 1"
USER = "alice"


def start(routes: str, emulator_args: dict[str, list[str]] | None = None,
          forwarded: dict[str, str | None] | None = None) -> harness.Stack:
    """Emulators (Trino's defaults but ``--forwarded accept`` unless ``forwarded`` says otherwise), a router
    on a fixed port (restartable) with metrics and an admin token, Envoy in the given route mode."""
    emulator_args = emulator_args or {}
    forwarded = forwarded or {}
    emulators = {
        name: harness.start_emulator(name, extra_args=emulator_args.get(name, ()),
                                     forwarded=forwarded.get(name, harness.EMULATOR_FORWARDED_DEFAULT))
        for name, _ in CLUSTERS
    }
    groups = dict(CLUSTERS)
    listen = f"127.0.0.1:{harness.free_port()}"
    doc = harness.router_config_doc(
        [(n, emulators[n].url, groups[n]) for n in emulators], listen=listen,
        extra={"health": HEALTH, "admin": {"token": TOKEN}, "metrics_listen": "127.0.0.1:0"},
    )
    config_path = harness.write_yaml(harness.scratch_dir("router-config") / "router.yaml", doc)
    router = harness.start_router(config_path, listen=listen)
    bootstrap = harness.render_envoy_config(config_path, listen, static_routes=routes == "static")
    envoy = harness.start_envoy(bootstrap)
    return harness.Stack(emulators=emulators, groups=groups, router=router, envoy=envoy,
                         config_path=config_path, config_doc=doc)


def metric(router: harness.Router, name: str, **labels: str) -> float:
    """The sum of every series of ``name`` (``trino_router_...``) whose labels include ``labels``."""
    total = 0.0
    for line in harness.http_request("GET", router.metrics_url).text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def lookups(router: harness.Router) -> float:
    return metric(router, "trino_router_discovery_lookups_total")


def through_envoy(stack: harness.Stack, uri: str) -> str:
    """``uri`` (a coordinator's nextUri) with Envoy's address in front of its path."""
    path = re.sub(r"^https?://[^/]+", "", uri)
    return f"{stack.url}{path}"


def submit(base: str, sql: str) -> dict:
    """``POST {base}/v1/statement``: the first page (200 asserted)."""
    resp = harness.http_request("POST", f"{base}/v1/statement", sql, {"X-Trino-User": USER})
    assert resp.status == 200, f"POST {base}/v1/statement -> {resp.status}: {resp.text[:300]}"
    return resp.json()


def finish(stack: harness.Stack, page: dict) -> tuple[list[int], list, dict]:
    """Polls ``page``'s nextUri through Envoy until the query ends: every status, the rows, the last page."""
    statuses, rows = [], []
    while page.get("nextUri"):
        resp = harness.http_request("GET", through_envoy(stack, page["nextUri"]), headers={"X-Trino-User": USER})
        statuses.append(resp.status)
        if resp.status != 200:
            return statuses, rows, {"status": resp.status, "body": resp.text[:300]}
        page = resp.json()
        rows.extend(page.get("data") or [])
    return statuses, rows, page


def owner_of(stack: harness.Stack, query_id: str) -> str:
    """The emulator whose coordinator id ends ``query_id``."""
    ids = {harness.get_json(f"{e.url}/v1/emulator/info")["coordinatorId"]: n for n, e in stack.emulators.items()}
    return ids[query_id.rsplit("_", 1)[1]]


def assert_finished_on_owner(stack: harness.Stack, query_id: str, outcome) -> None:
    statuses, rows, last = outcome
    assert set(statuses) == {200} and "error" not in last, f"{query_id}: {statuses} {json.dumps(last)[:400]}"
    clusters = {row[0] for row in rows if row}
    assert clusters == {owner_of(stack, query_id)}, f"{query_id} rows from {clusters}"


def router_answer(resp: harness.HttpResponse) -> dict:
    """The Trino-shaped error body the router answers with (``QueryResults`` with ``error``)."""
    body = resp.json()
    assert body["stats"]["state"] == "FAILED" and body["error"]["errorName"], body
    return body["error"]


# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["483", "476"], ids=["publishes-ids", "no-ids"])
@pytest.mark.parametrize("routes", ROUTES)
def test_router_restart_with_queries_in_flight(routes, version):
    """Nine queries in flight, three per cluster; the router is killed (SIGKILL) and restarted on its port;
    then every query is polled to its end through Envoy. Every follow-up reaches the coordinator that
    holds its query (0 failed or misplaced: each query's rows come from its own cluster). With Trino 477+
    the router knows the coordinator ids from ``/v1/info`` before any follow-up comes: 0 lookups; with 476
    it looks them up, and Trino's 410 from the others is not taken for ownership.

    conformance: Q2"""
    stack = start(routes, emulator_args={n: ["--trino-version", version] for n, _ in CLUSTERS})
    pages = {}
    for name, emu in stack.emulators.items():
        for _ in range(3):
            page = submit(stack.url, SLOW)
            pages[page["id"]] = page
    assert {owner_of(stack, q) for q in pages} == set(stack.emulators), "new queries spread over the clusters"
    stack.router.proc.kill()
    stack.router = harness.restart_router(stack.router)
    outcomes = {q: finish(stack, page) for q, page in pages.items()}
    for query_id, outcome in outcomes.items():
        assert_finished_on_owner(stack, query_id, outcome)
    done = lookups(stack.router)
    print(f"  {routes}, Trino {version}: 9 queries finished after the restart, {done:.0f} discovery lookups")
    if version == "483":
        assert done == 0, "coordinator ids published in /v1/info place every follow-up"
    elif routes == "static":
        assert done >= 1, "older Trino: the owners were looked up"


@pytest.mark.parametrize("routes", ROUTES)
def test_ids_no_cluster_holds(routes):
    """An id whose coordinator id no cluster has: the router's own 404 (``QUERY_NOT_FOUND``) without
    reaching a coordinator's statement resources; ``DELETE /v1/query/{id}`` gets Trino's 204. A cluster
    that cannot answer the lookup (hung) makes the answer unknown: a retryable 503 (``QUERY_OWNER_UNKNOWN``,
    ``Retry-After``), never a 404 — the query may be there.

    conformance: Q2, Q5"""
    stack = start(routes)
    unknown = "20260101_120000_00001_zzzzz"
    before = {n: e.counters() for n, e in stack.emulators.items()}
    resp = harness.http_request("GET", f"{stack.url}/v1/statement/executing/{unknown}/y1/1",
                                headers={"X-Trino-User": USER})
    assert resp.status == 404, resp.text
    assert router_answer(resp)["errorName"] == "QUERY_NOT_FOUND"
    after = {n: e.counters() for n, e in stack.emulators.items()}
    for name in stack.emulators:
        for kind in ("executing_get", "queued_get", "statement_delete", "not_found"):
            assert after[name].get(kind) == before[name].get(kind), f"{name} {kind}: {before[name]} → {after[name]}"
    resp = harness.http_request("DELETE", f"{stack.url}/v1/query/{unknown}", headers={"X-Trino-User": USER})
    assert (resp.status, resp.body) == (204, b""), "Trino's cancelQuery answers 204 held or not (row Q5)"

    hung = stack.emulators["trino-c"]
    hung.set_fault("hang", scope="all")
    try:
        other = "20260101_120000_00002_yyyyy"
        resp = harness.http_request("GET", f"{stack.url}/v1/statement/executing/{other}/y1/1",
                                    headers={"X-Trino-User": USER})
        assert resp.status == 503, resp.text
        assert router_answer(resp)["errorName"] == "QUERY_OWNER_UNKNOWN"
        assert resp.headers.get("retry-after") == "1"
    finally:
        hung.set_fault("none", scope="all")
    outcomes = {o: metric(stack.router, "trino_router_discovery_lookups_total", outcome=o)
                for o in ("found", "not_found", "unknown")}
    assert outcomes["not_found"] >= 1 and outcomes["unknown"] >= 1, outcomes


@pytest.mark.parametrize("routes", ROUTES)
def test_coordinator_with_default_forwarded_handling(routes):
    """trino-a runs with Trino's default ``http-server.process-forwarded`` (reject: 406 to any
    X-Forwarded-* header, which Envoy adds to every request). 12 queries through Envoy with the real client:
    0 client-visible 406s (Envoy sent trino-a nothing), every query ran elsewhere, and the operator is told
    why, naming the setting: the router's log, ``admin clusters``, the status page and
    ``trino_router_cluster_misconfigured``.

    conformance: F1"""
    stack = start(routes, forwarded={"trino-a": None})
    setting = "http-server.process-forwarded"

    def listed() -> str:
        out = stack.router.admin("clusters", token=TOKEN)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert harness.wait_for(lambda: "misconfigured" in listed(), timeout=10), listed()
    table = listed()
    assert re.search(rf"trino-a: misconfigured on .*{re.escape(setting)}", table), table
    rows = [harness.run_query(stack, USER, "SELECT 1") for _ in range(12)]
    assert all(r and r[0][0] in ("trino-b", "trino-c") for r in rows), rows
    stats = stack.envoy.stats()
    assert int(stats.get("cluster.trino-a.upstream_rq_total", "0")) == 0, "trino-a took nothing"
    assert int(stats.get("http.trino.downstream_rq_4xx", "0")) == 0, "no client saw a 4xx (406)"
    assert setting in stack.router.log()
    assert metric(stack.router, "trino_router_cluster_misconfigured", cluster="trino-a") == 1
    assert metric(stack.router, "trino_router_cluster_misconfigured", cluster="trino-b") == 0
    page = harness.http_request("GET", stack.router.metrics_url.removesuffix("metrics")).text
    assert "misconfigured" in page and setting in page


@pytest.mark.parametrize("routes", ROUTES)
def test_queries_the_router_never_saw_are_placed_without_lookups(routes):
    """Queries submitted straight to each coordinator (the router never sees them) and polled through
    Envoy: every one finishes on its coordinator, with 0 discovery lookups — the coordinators publish their
    ids in ``/v1/info`` (Trino 477+), learned by the router's polls.

    conformance: N2"""
    stack = start(routes)
    pages = {}
    for name, emu in stack.emulators.items():
        for _ in range(4):
            page = submit(emu.url, SLOW)
            pages[page["id"]] = page
    for query_id, page in pages.items():
        assert_finished_on_owner(stack, query_id, finish(stack, page))
    assert lookups(stack.router) == 0
    print(f"  {routes}: {len(pages)} queries never seen by the router, 0 discovery lookups")


@pytest.mark.parametrize("routes", ROUTES)
def test_a_restarted_coordinators_old_queries_are_said_gone(routes):
    """A coordinator restarts (a new coordinator id in ``/v1/info``): its old id is retired at once, so a
    follow-up of a query it ran before answers ``COORDINATOR_RESTARTED`` from the router (a failed page to
    a poll) rather than going anywhere.

    conformance: N2"""
    stack = start(routes)
    page = submit(stack.url, SLOW)
    owner = owner_of(stack, page["id"])
    old_id = page["id"].rsplit("_", 1)[1]
    stack.emulators[owner].kill()
    new = stack.restart_emulator(owner)
    new_id = new.emulator_info()["coordinatorId"]
    assert new_id != old_id
    time.sleep(1.0)  # a few poll rounds (250 ms each): the new id is published
    resp = harness.http_request("GET", through_envoy(stack, page["nextUri"]), headers={"X-Trino-User": USER})
    assert resp.status == 200, resp.text
    assert router_answer(resp)["errorName"] == "COORDINATOR_RESTARTED"
