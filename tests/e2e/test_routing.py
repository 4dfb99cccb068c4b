"""End-to-end acceptance of routing: real Envoy, real ``trino`` client, the router and three emulators.

Clusters: ``trino-a`` and ``trino-b`` in group ``adhoc`` (the default group), ``trino-etl`` in group ``etl``.
Every test asserts what the client got *and* what each emulator saw (``/v1/emulator/queries``) or what
Envoy sent upstream (its ``cluster.<name>.upstream_rq_total`` counters).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

import harness

ADHOC = {"trino-a", "trino-b"}
UNKNOWN_QUERY_ID = "20260101_000000_00001_zzzzz"


# --------------------------------------------------------------------------------------------------
# helpers


def _is_canceled(query: dict) -> bool:
    """Trino reports a cancelled query as FAILED with USER_CANCELED (the emulator also says canceled)."""
    if query.get("canceled") is True:
        return True
    return str(query.get("state", "")).upper() == "FAILED" and "USER_CANCELED" in json.dumps(query).upper()


def _all_queries(stack: harness.Stack) -> dict[str, list[dict]]:
    return {name: emu.queries() for name, emu in stack.emulators.items()}


def _query_ids(stack: harness.Stack) -> dict[str, set[str]]:
    return {name: {q.get("id") for q in queries} for name, queries in _all_queries(stack).items()}


def _protocol_counters(stack: harness.Stack) -> dict[str, dict[str, int]]:
    """Each emulator's request counters for the query protocol (not node health, not introspection)."""
    skip = {"emulator_api", "node_api", "ui_logins", "ui_login_failures", "ui_stats", "ui_unauthorized", "ui_pages"}
    return {n: {k: v for k, v in e.counters().items() if k not in skip} for n, e in stack.emulators.items()}


def _headers(query: dict) -> dict[str, str]:
    """The request headers an emulator recorded for a query, with lower-case names."""
    raw = query.get("headers") or {}
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {str(k).lower(): (", ".join(v) if isinstance(v, list) else v) for k, v in pairs}


def _wait_for(predicate, timeout: float = 10.0):
    return harness.wait_for(predicate, timeout, interval=0.1)


def _run_query(conn, sql: str) -> tuple[str, list[list]]:
    cur = conn.cursor()
    cur.execute(sql)
    rows = cur.fetchall()
    return cur.query_id, rows


def _one_cluster(rows: list[list], what: str) -> str:
    assert rows, f"{what}: no rows"
    clusters = {row[0] for row in rows}
    assert len(clusters) == 1, f"{what}: rows came from several clusters {clusters}: pages were split"
    return clusters.pop()


def _normal_query_works(stack: harness.Stack, trino_connect, tag: str) -> None:
    conn = trino_connect(user=f"after-{tag}", target=stack)
    _, rows = _run_query(conn, "/* emulator: pages=2 rows=2 */ SELECT 1")
    assert len(rows) == 4
    assert _one_cluster(rows, f"query after {tag}") in ADHOC
    stack.assert_alive()


# --------------------------------------------------------------------------------------------------
# the real Envoy


def test_envoy_is_the_real_one(envoy_bin):
    version = harness.envoy_version(envoy_bin)
    print(f"envoy: {envoy_bin}\n{version}")
    if not os.environ.get("TRINO_E2E_ENVOY"):
        assert envoy_bin == harness.REPO_ROOT / ".venv" / "bin" / "envoy"
    assert "/1.40.0/" in version, version


# --------------------------------------------------------------------------------------------------
# the acceptance workload


@dataclass
class Job:
    kind: str  # "pages", "etl", "cancel", "session"
    index: int
    run: str
    user: str = ""
    group: str | None = None
    sql: str = ""
    query_id: str | None = None
    rows: list = field(default_factory=list)
    cluster: str | None = None
    session_query_id: str | None = None
    error: BaseException | None = None

    def __post_init__(self):
        self.user = f"{self.kind}-{self.index}-{self.run}"
        marker = f"/* e2e {self.user} */"
        if self.kind == "etl":
            self.group = "etl"
            self.sql = f"/* emulator: pages=3 rows=2 */ SELECT 1 {marker}"
        elif self.kind == "cancel":
            self.sql = f"/* emulator: pages=40 rows=2 delay_ms=250 */ SELECT 1 {marker}"
        else:
            self.sql = f"/* emulator: pages=5 rows=3 */ SELECT 1 {marker}"


def _run_job(job: Job, stack: harness.Stack, trino_connect, barrier: threading.Barrier) -> Job:
    try:
        conn = trino_connect(user=job.user, routing_group=job.group, target=stack)
        barrier.wait(timeout=60)
        if job.kind == "session":
            cur = conn.cursor()
            cur.execute("SET SESSION query_max_run_time = '10m'")
            cur.fetchall()
            job.session_query_id = cur.query_id
        if job.kind == "cancel":
            cur = conn.cursor()
            cur.execute(job.sql)  # returns once the first page with rows has arrived
            first = cur.fetchone()
            job.query_id = cur.query_id
            job.rows = [first]
            cur.cancel()
            job.cluster = _one_cluster(job.rows, job.user)
        else:
            job.query_id, job.rows = _run_query(conn, job.sql)
            job.cluster = _one_cluster(job.rows, job.user)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        job.error = exc
    return job


def test_concurrent_mixed_queries_stay_on_one_cluster(fresh_stack, trino_connect):
    stack = fresh_stack
    run = uuid.uuid4().hex[:8]
    jobs = (
        [Job("pages", i, run) for i in range(14)]
        + [Job("etl", i, run) for i in range(8)]
        + [Job("cancel", i, run) for i in range(6)]
        + [Job("session", i, run) for i in range(6)]
    )
    assert len(jobs) >= 30
    barrier = threading.Barrier(len(jobs))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        done = list(pool.map(lambda j: _run_job(j, stack, trino_connect, barrier), jobs))
    print(f"{len(done)} concurrent queries through {stack.url} in {time.monotonic() - started:.1f}s")

    failures = [f"{j.user}: {type(j.error).__name__}: {j.error}" for j in done if j.error]
    assert not failures, "queries failed:\n" + "\n".join(failures)

    # What the client saw: every query's rows from one cluster, of the right group.
    for job in done:
        assert job.query_id, job.user
        if job.kind == "etl":
            assert job.cluster == "trino-etl", f"{job.user} (X-Trino-Routing-Group: etl) ran on {job.cluster}"
        else:
            assert job.cluster in ADHOC, f"{job.user} (no routing group) ran on {job.cluster}"
        if job.kind in ("pages", "session"):
            assert len(job.rows) == 15, f"{job.user}: {len(job.rows)} rows, want 5 pages x 3"
            assert len({row[1] for row in job.rows}) == 5, f"{job.user}: pages {sorted({r[1] for r in job.rows})}"
        if job.kind == "etl":
            assert len(job.rows) == 6 and len({row[1] for row in job.rows}) == 3, job.rows
    served = {j.cluster for j in done}
    assert ADHOC <= served, f"both adhoc clusters should serve queries; served: {served}"

    # What the emulators saw.
    seen = _all_queries(stack)
    by_user: dict[str, list[tuple[str, dict]]] = {}
    for name, queries in seen.items():
        for q in queries:
            by_user.setdefault(q.get("user"), []).append((name, q))
    for job in done:
        submitted = [(n, q) for (n, q) in by_user.get(job.user, []) if q.get("sql") == job.sql]
        assert len(submitted) == 1, f"{job.user}: submitted {len(submitted)} times: {submitted}"
        name, q = submitted[0]
        assert name == job.cluster, f"{job.user}: client saw {job.cluster}, emulator {name} got the query"
        assert q.get("id") == job.query_id, f"{job.user}: client id {job.query_id}, emulator {q.get('id')}"
        if job.kind == "session":
            sets = [(n, q) for (n, q) in by_user[job.user] if "SET SESSION" in q.get("sql", "").upper()]
            assert len(sets) == 1, f"{job.user}: SET SESSION submitted {len(sets)} times"
            assert sets[0][0] in ADHOC and sets[0][1].get("id") == job.session_query_id
            headers = _headers(q)
            assert "query_max_run_time" in headers.get("x-trino-session", ""), (
                f"{job.user}: the query after SET SESSION did not carry the session: {headers}"
            )
        if job.kind != "cancel":
            state = _wait_for(lambda: (stack.emulators[name].query(job.query_id) or {}).get("state") == "FINISHED")
            assert state, f"{job.user}: not FINISHED on {name}: {stack.emulators[name].query(job.query_id)}"

    # Cancelled queries are cancelled where they ran (the client's DELETE reached that emulator).
    for job in (j for j in done if j.kind == "cancel"):
        emu = stack.emulators[job.cluster]
        assert _wait_for(lambda: _is_canceled(emu.query(job.query_id) or {})), (
            f"{job.user}: not cancelled on {job.cluster}: {emu.query(job.query_id)}"
        )
        requests = (emu.query(job.query_id) or {}).get("requests")
        if isinstance(requests, dict) and "delete" in requests:
            assert requests["delete"] == 1, f"{job.user}: {requests}"

    # trino-etl served exactly the queries that asked for group etl, and nothing else.
    etl_users = sorted(j.user for j in done if j.kind == "etl")
    on_etl = sorted(q.get("user") for q in seen["trino-etl"])
    assert on_etl == etl_users, f"trino-etl got {on_etl}, want {etl_users}"
    for q in seen["trino-etl"]:
        headers = _headers(q)
        assert headers.get("x-trino-routing-group") == "etl", headers
    for name in ADHOC:
        assert not [q for q in seen[name] if q.get("user") in etl_users], f"{name} got etl queries"
    total = sum(len(qs) for qs in seen.values())
    assert total == len(done) + sum(1 for j in done if j.kind == "session"), (
        f"emulators saw {total} queries: {[(n, len(qs)) for n, qs in seen.items()]}"
    )
    stack.assert_alive()


def test_follow_up_right_after_submission_is_placed(stack):
    """A client that polls the instant its POST is answered (keep-alive, no think time) must be placed.

    The router learns a new query's owner from the POST's answer; the follow-up can arrive on the same
    connection a fraction of a millisecond later, so this probes the gap between the two.
    """
    harness.require_trino_client()
    import requests  # the trino client's own HTTP library

    failures: list[str] = []

    def client(worker: int) -> None:
        with requests.Session() as http:
            for i in range(75):
                user = {"X-Trino-User": f"race-{worker}"}
                posted = http.post(f"{stack.url}/v1/statement", data=f"SELECT {i}", headers=user, timeout=10)
                if posted.status_code != 200:
                    failures.append(f"POST -> {posted.status_code}: {posted.text[:200]}")
                    continue
                first = posted.json()
                polled = http.get(first["nextUri"], headers=user, timeout=10)
                if polled.status_code != 200:
                    failures.append(f"{first['id']}: GET nextUri -> {polled.status_code}: {polled.text[:200]}")
                http.delete(first["nextUri"], headers=user, timeout=10)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, f"{len(failures)} of 300 follow-ups were not placed:\n" + "\n".join(failures[:5])


# --------------------------------------------------------------------------------------------------
# header handling


def test_client_cannot_pick_a_cluster_with_the_routing_header(stack, trino_connect):
    run = uuid.uuid4().hex[:8]
    users = [f"spoof-{i}-{run}" for i in range(6)]
    for user in users:
        conn = trino_connect(user=user, headers={"x-trino-cluster": "trino-etl"})
        _, rows = _run_query(conn, "/* emulator: pages=2 rows=1 */ SELECT 1")
        assert _one_cluster(rows, user) in ADHOC, f"{user} sent x-trino-cluster: trino-etl and got it"
    etl_users = {q.get("user") for q in stack.emulators["trino-etl"].queries()}
    assert not etl_users & set(users)


def test_unknown_routing_group_goes_to_default_group(stack, trino_connect):
    run = uuid.uuid4().hex[:8]
    users = [f"nope-{i}-{run}" for i in range(6)]
    for user in users:
        _, rows = _run_query(trino_connect(user=user, routing_group="nope"), "SELECT 1")
        assert _one_cluster(rows, user) in ADHOC
    etl_users = {q.get("user") for q in stack.emulators["trino-etl"].queries()}
    assert not etl_users & set(users)


def test_other_paths_go_to_the_default_group(stack):
    before = stack.upstream_requests()
    for _ in range(4):
        resp = harness.http_request("GET", f"{stack.url}/v1/info", headers={"X-Trino-User": "info"})
        assert resp.status == 200, (resp.status, resp.text)
        assert isinstance(resp.json(), dict)
    after = stack.upstream_requests()
    delta = {n: after[n] - before[n] for n in after}
    assert delta["trino-etl"] == 0, delta
    assert sum(delta[n] for n in ADHOC) == 4, delta


# --------------------------------------------------------------------------------------------------
# follow-ups the router cannot place


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("GET", f"/v1/statement/executing/{UNKNOWN_QUERY_ID}/yabc/1", 404),
        ("GET", f"/v1/statement/queued/{UNKNOWN_QUERY_ID}/yabc/1", 404),
        ("DELETE", f"/v1/statement/executing/{UNKNOWN_QUERY_ID}/yabc/1", 404),
        ("GET", f"/v1/query/{UNKNOWN_QUERY_ID}", 404),
        # Trino's cancelQuery answers 204 whether it holds the query or not (conformance row Q5).
        ("DELETE", f"/v1/query/{UNKNOWN_QUERY_ID}", 204),
    ],
)
def test_unplaceable_query_id_gets_404_from_the_router(stack, method, path, status):
    queries_before = _query_ids(stack)
    counters_before = _protocol_counters(stack)
    upstream_before = stack.upstream_requests()
    resp = harness.http_request(method, stack.url + path, headers={"X-Trino-User": "lost"})
    assert resp.status == status, (resp.status, resp.text)
    if status == 204:
        assert resp.body == b"", resp.body
    else:
        assert "json" in resp.headers.get("content-type", ""), resp.headers
        body = resp.json()
        assert isinstance(body.get("error"), dict), body
    assert stack.upstream_requests() == upstream_before, "Envoy sent the request to an emulator"
    # The router may ask each cluster about the id once (discovery: its own `GET /v1/query/{id}`, answered
    # 410 as Trino answers for an id it does not hold, cached for 2 s); nothing else may reach an emulator.
    counters_after = _protocol_counters(stack)
    for name, after in counters_after.items():
        delta = {k: v - counters_before[name].get(k, 0) for k, v in after.items()}
        lookups = delta.pop("query_api", 0)
        assert delta.pop("gone", 0) == lookups <= 1, f"{name}: {lookups} lookups, counters {delta}"
        assert not any(delta.values()), f"{name} counted the request: {delta}"
    assert _query_ids(stack) == queries_before


# --------------------------------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize("routes", ["rds", "static"])
def test_example_envoy_config_validates(envoy_bin, routes):
    """Both bootstraps envoy-config prints (routes from the router, or --static-routes) pass Envoy's own
    validation; the served routes are checked against Envoy's schema in the router's unit tests."""
    example = harness.REPO_ROOT / "envoy" / "example-router.yaml"
    if not example.is_file():
        harness._missing(f"{example} does not exist")
    extra = ["--static-routes"] if routes == "static" else []
    out = harness.run_router_cli(
        "envoy-config", "--config", str(example), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", *extra
    )
    assert out.returncode == 0, out.stderr
    result = harness.validate_envoy_config(out.stdout)
    print(result.stdout[-2000:], result.stderr[-2000:])
    assert result.returncode == 0, f"envoy --mode validate rejected the bootstrap:\n{result.stdout}\n{result.stderr}"
    assert "OK" in result.stdout + result.stderr


def _good_config() -> dict:
    return {
        "listen": "127.0.0.1:50051",
        "routing_header": "x-trino-cluster",
        "default_group": "adhoc",
        "clusters": [
            {"name": "trino-a", "url": "http://127.0.0.1:18081", "group": "adhoc"},
            {"name": "trino-etl", "url": "http://127.0.0.1:18083", "group": "etl"},
        ],
    }


def _bad_unknown_field(cfg):
    cfg["bogus_field"] = 1
    return "bogus_field"


def _bad_cluster_url(cfg):
    cfg["clusters"][1]["url"] = "not a url"
    return "url"


def _bad_default_group(cfg):
    cfg["default_group"] = "nope"
    return "default_group"


@pytest.mark.parametrize("mutate", [_bad_unknown_field, _bad_cluster_url, _bad_default_group],
                         ids=["unknown-field", "bad-cluster-url", "default-group-names-no-group"])
def test_check_rejects_bad_config_naming_file_and_field(tmp_path, mutate):
    harness.require_binary("trino-router")
    good = tmp_path / "good.yaml"
    harness.write_yaml(good, _good_config())
    ok = harness.run_router_cli("check", "--config", str(good))
    assert ok.returncode == 0, f"a good config was rejected: {ok.stdout}{ok.stderr}"

    cfg = _good_config()
    field_name = mutate(cfg)
    bad = tmp_path / f"bad-{field_name}.yaml"
    harness.write_yaml(bad, cfg)
    out = harness.run_router_cli("check", "--config", str(bad))
    message = out.stdout + out.stderr
    print(message)
    assert out.returncode == 1, f"exit {out.returncode}: {message}"
    assert str(bad) in message or bad.name in message, f"the message does not name the file: {message}"
    assert field_name in message, f"the message does not name the field {field_name!r}: {message}"
