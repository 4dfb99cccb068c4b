"""The bad-input suite: requests no well-behaved client sends, and coordinators that misbehave, through the
real Envoy (``trino-router envoy-config``), the router and strict emulators.

Each case is one row of a table: a name, the bytes sent (spoken byte by byte, :mod:`raw_http`) and the
outcome it must have. After every case the router and Envoy must still run, the router must not have
panicked, and a normal query by the real ``trino`` client must still work. Each test prints its table:
every case, what came back, and how many cases ran and passed.

The outcomes, in short:
- Envoy refuses what HTTP/1.1 forbids (NUL bytes, oversized or too many headers) before any filter
  runs; envoy-config's local-reply mapper makes that answer Trino-shaped (``INVALID_HTTP_REQUEST``).
- What names a query is placed only by what the router knows; anything else gets the router's own
  Trino-shaped error (``INVALID_QUERY_ID``, ``QUERY_NOT_FOUND``) and reaches no coordinator, or reaches the
  one its coordinator id names, whose strict emulator refuses it (a forged id is never sent elsewhere).
- A client can neither pick a cluster (routing header, transaction id) nor a group it is not allowed in.
- A coordinator that answers garbage has its answer carried through unchanged (the router invents
  nothing); one that never answers a new query gets a Trino-shaped 504 once the new-query timeout passes,
  is taken out of rotation, and the client's retry runs elsewhere.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

import harness
from raw_http import NoAnswer, raw_http, request

ADHOC = ("trino-a", "trino-b")
CLUSTERS = (("trino-a", "adhoc"), ("trino-b", "adhoc"), ("trino-etl", "etl"))
RULES = [{"name": "writes-to-etl", "when": 'statement.kind == "insert"', "group": "etl"}]
GROUPS = [{"name": "etl", "allow": {"users": ["etl_bot"]}}]
NEVER_ISSUED = "20260101_000000_00001_{}"
OVERSIZE = 2 * 1024 * 1024  # twice Envoy's default buffer limit


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def error_name(self) -> str | None:
        try:
            doc = self.json()
        except ValueError:
            return None
        return (doc.get("error") or {}).get("errorName") if isinstance(doc, dict) else None

    def brief(self) -> str:
        name = self.error_name
        return f"{self.status}" + (f" {name}" if name else "") + f" ({len(self.body)} B)"


@dataclass
class Case:
    name: str
    #: The bytes to send, made from the suite's context (live query paths, coordinator ids).
    build: Callable[["Context"], bytes]
    #: Asserts the outcome; the expected outcome in words is its docstring.
    expect: Callable[["Context", Answer], None]
    #: The clusters whose protocol counters may move (None: any).
    may_reach: tuple[str, ...] | None = None


@dataclass
class Context:
    stack: harness.Stack
    #: cluster → (query id, a nextUri path of a live query there)
    live: dict[str, tuple[str, str]]
    #: cluster → coordinator id
    coordinator: dict[str, str]
    #: cluster → its request counters before the case ran
    before: dict[str, dict[str, int]] | None = None


# --------------------------------------------------------------------------------------------------
# expected outcomes


def trino_error(*statuses: int, names: tuple[str, ...] = ()):
    def check(ctx: Context, answer: Answer) -> None:
        assert answer.status in statuses, f"want HTTP {statuses}, got {answer.brief()}: {answer.body[:300]!r}"
        doc = answer.json()
        error = doc.get("error") or {}
        assert error.get("message") and error.get("errorName"), f"not a Trino error: {doc}"
        if names:
            assert error["errorName"] in names, f"want {names}, got {error['errorName']}: {error['message']}"

    check.__doc__ = f"HTTP {'/'.join(map(str, statuses))}, Trino error {' or '.join(names) or 'any'}"
    return check


def refused_by_envoy(status: int):
    def check(ctx: Context, answer: Answer) -> None:
        trino_error(status, names=("INVALID_HTTP_REQUEST",))(ctx, answer)
        assert "x-envoy-upstream-service-time" not in answer.headers

    check.__doc__ = f"HTTP {status} INVALID_HTTP_REQUEST from Envoy itself (not HTTP it accepts)"
    return check


def placed_in(*clusters: str):
    def check(ctx: Context, answer: Answer) -> None:
        assert answer.status == 200, f"want 200, got {answer.brief()}: {answer.body[:300]!r}"
        query_id = answer.json()["id"]
        on = [n for n, e in ctx.stack.emulators.items() if e.query(query_id)]
        assert len(on) == 1 and on[0] in clusters, f"{query_id} is on {on}, want one of {clusters}"

    check.__doc__ = f"200 and a new query on {' or '.join(clusters)}"
    return check


def answered_by(*clusters: str):
    def check(ctx: Context, answer: Answer) -> None:
        assert "x-envoy-upstream-service-time" in answer.headers, f"not a coordinator's answer: {answer.brief()}"
        posted = [n for n, e in ctx.stack.emulators.items()
                  if e.counters()["statement_post"] != ctx.before[n]["statement_post"]]
        assert len(posted) == 1 and posted[0] in clusters, f"the statement reached {posted}, want one of {clusters}"

    check.__doc__ = f"the statement reaches {' or '.join(clusters)}, whose answer comes back as it is"
    return check


def refused_by_coordinator(status: int):
    def check(ctx: Context, answer: Answer) -> None:
        assert answer.status == status, f"want HTTP {status}, got {answer.brief()}: {answer.body[:300]!r}"
        assert "x-envoy-upstream-service-time" in answer.headers, "the answer did not come from a coordinator"

    check.__doc__ = f"HTTP {status} from the coordinator the id names (its strict emulator refuses it)"
    return check


# --------------------------------------------------------------------------------------------------
# the cases


def post(sql: bytes, headers=(), user: bytes = b"bad-input") -> Callable[[Context], bytes]:
    return lambda ctx: request("POST", "/v1/statement", sql, headers, user=user)


def get(path_of: Callable[[Context], str | bytes], headers=()) -> Callable[[Context], bytes]:
    return lambda ctx: request("GET", path_of(ctx), b"", headers)


def live_path(cluster: str) -> Callable[[Context], str]:
    return lambda ctx: ctx.live[cluster][1]


def forged(cluster: str) -> Callable[[Context], str]:
    """A query id that was never issued, with ``cluster``'s coordinator id."""
    return lambda ctx: f"/v1/statement/executing/{NEVER_ISSUED.format(ctx.coordinator[cluster])}/y1a2b3/1"


def with_other_suffix(cluster: str, other: str) -> Callable[[Context], str]:
    """A live query's path on ``cluster`` with its id's coordinator id replaced by ``other``'s."""

    def path(ctx: Context) -> str:
        query_id, next_path = ctx.live[cluster]
        return next_path.replace(query_id, query_id.rsplit("_", 1)[0] + "_" + ctx.coordinator[other])

    return path


NO_CLUSTER: tuple[str, ...] = ()

CASES = [
    # sizes
    Case("post-body-2MiB", post(b"SELECT '" + b"x" * OVERSIZE + b"'"), placed_in(*ADHOC)),
    Case("insert-body-2MiB-is-still-an-insert", post(b"INSERT INTO t VALUES ('" + b"x" * OVERSIZE + b"')"),
         placed_in("trino-etl")),
    Case("post-body-9MiB-beyond-the-buffer", post(b"SELECT '" + b"x" * (9 * 1024 * 1024) + b"'"),
         placed_in(*ADHOC)),
    Case("empty-post-body", post(b""), refused_by_coordinator(400), may_reach=None),
    Case("header-of-100KiB", post(b"SELECT 1", [(b"X-Trino-Session", b"a=" + b"x" * 100_000)]),
         refused_by_envoy(431), may_reach=NO_CLUSTER),
    Case("200-headers", post(b"SELECT 1", [(f"X-Trino-Extra-{i}".encode(), b"v") for i in range(200)]),
         refused_by_envoy(431), may_reach=NO_CLUSTER),
    Case("routing-group-of-8KiB", post(b"SELECT 1", [(b"X-Trino-Routing-Group", b"g" * 8192)]), placed_in(*ADHOC)),
    # encodings
    Case("binary-post-body", post(bytes(range(256)) * 8), answered_by(*ADHOC)),
    Case("invalid-utf8-sql", post(b"INSERT INTO t VALUES ('\xff\xfe\xc3(')"), answered_by("trino-etl")),
    Case("nul-in-sql", post(b"INSERT INTO t VALUES ('\x00')"), placed_in("trino-etl")),
    Case("invalid-utf8-user", post(b"SELECT 1", user=b"\xff\xfe\xc3("), placed_in(*ADHOC)),
    Case("invalid-utf8-routing-group", post(b"SELECT 1", [(b"X-Trino-Routing-Group", b"\xc3\x28\xa0\xa1")]),
         placed_in(*ADHOC)),
    Case("nul-in-path", get(lambda ctx: b"/v1/query/2026\x00"), refused_by_envoy(400), may_reach=NO_CLUSTER),
    Case("nul-in-header", post(b"SELECT 1", [(b"X-Trino-Source", b"a\x00b")]), refused_by_envoy(400),
         may_reach=NO_CLUSTER),
    # query-id positions
    Case("over-long-query-id", get(lambda ctx: "/v1/statement/executing/20260101_000000_00001_" + "a" * 4000 + "/y/1"),
         trino_error(400, names=("INVALID_QUERY_ID",)), may_reach=NO_CLUSTER),
    Case("malformed-query-id", get(lambda ctx: "/v1/statement/executing/not-a-query-id/yabc/1"),
         trino_error(400, names=("INVALID_QUERY_ID",)), may_reach=NO_CLUSTER),
    Case("escapes-in-query-id", get(lambda ctx: "/v1/query/%00%ff%2F..%2F"),
         trino_error(400, names=("INVALID_QUERY_ID",)), may_reach=NO_CLUSTER),
    Case("traversal-after-a-live-id",
         get(lambda ctx: f"/v1/statement/executing/{ctx.live['trino-a'][0]}/../../../emulator/queries"),
         refused_by_coordinator(404), may_reach=("trino-a",)),
    Case("traversal-in-the-id", get(lambda ctx: "/v1/query/../../v1/emulator/queries"),
         trino_error(400, names=("INVALID_QUERY_ID",)), may_reach=NO_CLUSTER),
    Case("encoded-traversal-in-the-id", get(lambda ctx: "/v1/query/%2e%2e%2f%2e%2e%2fv1%2finfo"),
         trino_error(400, names=("INVALID_QUERY_ID",)), may_reach=NO_CLUSTER),
    Case("double-encoded-id", get(lambda ctx: "/v1/query/" + ctx.live["trino-a"][0].replace("_", "%255F")),
         trino_error(400, names=("INVALID_QUERY_ID",)), may_reach=NO_CLUSTER),
    Case("ui-page-with-junk-id", get(lambda ctx: "/ui/query.html?%ff%fe<script>"),
         trino_error(400, 404, names=("INVALID_QUERY_ID", "QUERY_NOT_FOUND")), may_reach=NO_CLUSTER),
    # forged ids
    Case("never-issued-id-with-b-suffix", get(forged("trino-b")), refused_by_coordinator(404),
         may_reach=("trino-b",)),
    Case("live-a-id-with-b-suffix", get(with_other_suffix("trino-a", "trino-b")), refused_by_coordinator(404),
         may_reach=("trino-b",)),
    Case("live-a-id-with-wrong-slug",
         get(lambda ctx: ctx.live["trino-a"][1].rsplit("/", 2)[0] + "/yforged/1"), refused_by_coordinator(404),
         may_reach=("trino-a",)),
    Case("never-issued-id-unknown-suffix", get(lambda ctx: f"/v1/query/{NEVER_ISSUED.format('zzzzz')}"),
         trino_error(404, names=("QUERY_NOT_FOUND",)), may_reach=None),
    # spoofed routing headers
    Case("routing-header-naming-etl", post(b"SELECT 1", [(b"X-Trino-Cluster", b"trino-etl")]), placed_in(*ADHOC)),
    Case("routing-header-naming-no-cluster", post(b"SELECT 1", [(b"X-Trino-Cluster", b"nowhere")]),
         placed_in(*ADHOC)),
    Case("forged-transaction-into-etl",
         post(b"SELECT 1", [(b"X-Trino-Transaction-Id", b"trino-etl~00000000-0000-0000-0000-000000000000")]),
         trino_error(403, names=("PERMISSION_DENIED",)), may_reach=NO_CLUSTER),
    Case("transaction-into-etl-as-etl_bot",
         post(b"SELECT 1", [(b"X-Trino-Transaction-Id", b"trino-etl~00000000-0000-0000-0000-000000000000")],
              user=b"etl_bot"), answered_by("trino-etl")),
    # routing groups
    Case("unknown-routing-group", post(b"SELECT 1", [(b"X-Trino-Routing-Group", b"nope")]), placed_in(*ADHOC)),
    Case("restricted-group-not-allowed", post(b"SELECT 1", [(b"X-Trino-Routing-Group", b"etl")], user=b"mallory"),
         placed_in(*ADHOC)),
    Case("restricted-group-allowed", post(b"SELECT 1", [(b"X-Trino-Routing-Group", b"etl")], user=b"etl_bot"),
         placed_in("trino-etl")),
]


# --------------------------------------------------------------------------------------------------
# running the table


def _protocol_counts(stack: harness.Stack) -> dict[str, int]:
    """Per cluster, protocol requests served (not health, not the emulator's own API)."""
    skip = {"emulator_api", "node_api", "ui_logins", "ui_login_failures", "ui_stats", "ui_unauthorized", "ui_pages",
            "query_api", "not_found"}
    return {n: sum(v for k, v in e.counters().items() if k not in skip) for n, e in stack.emulators.items()}


def _live_query(stack: harness.Stack, cluster: str) -> tuple[str, str]:
    """Start a long query on ``cluster`` (by its group and retries until it lands there); its id and a
    nextUri path."""
    group = "etl" if cluster == "trino-etl" else None
    user = b"etl_bot" if group else b"live"
    for _ in range(20):
        headers = [(b"X-Trino-Routing-Group", group.encode())] if group else []
        answer = Answer(*raw_http(stack.port, request("POST", "/v1/statement",
                                                      b"/* emulator: pages=50 delay_ms=1000 */ SELECT 1",
                                                      headers, user=user)))
        doc = answer.json()
        if stack.emulators[cluster].query(doc["id"]):
            path = doc["nextUri"].split("://", 1)[1]
            return doc["id"], path[path.index("/"):]
    raise AssertionError(f"no query landed on {cluster}")


def _run_case(ctx: Context, case: Case) -> str | None:
    """Runs one case; the reason it failed, or None."""
    before = _protocol_counts(ctx.stack)
    ctx.before = {n: e.counters() for n, e in ctx.stack.emulators.items()}
    try:
        answer = Answer(*raw_http(ctx.stack.port, case.build(ctx)))
    except NoAnswer as exc:
        return f"no answer: {exc}"
    try:
        case.expect(ctx, answer)
        if case.may_reach is not None:
            after = _protocol_counts(ctx.stack)
            reached = sorted(n for n in after if after[n] != before[n] and n not in case.may_reach)
            assert not reached, f"reached {reached}"
        ctx.stack.assert_alive()
    except (AssertionError, ValueError, KeyError) as exc:
        return f"{answer.brief()}: {exc}"
    finally:
        case.answer = answer  # type: ignore[attr-defined]
    return None


def print_table(title: str, rows: list[tuple[str, str, str, str | None]]) -> None:
    passed = sum(reason is None for *_, reason in rows)
    print(f"\n{title}: {len(rows)} cases ran, {passed} passed")
    print(f"  {'case':<38} {'answer':<48} {'expected':<60} result")
    for name, got, expected, reason in rows:
        print(f"  {name:<38} {got:<48} {expected[:60]:<60} {'pass' if reason is None else reason}")


def test_bad_requests_through_envoy(make_stack, trino_connect):
    stack = make_stack(clusters=CLUSTERS, extra_config={"rules": RULES, "groups": GROUPS})
    ctx = Context(stack, live={}, coordinator={n: e.emulator_info()["coordinatorId"] for n, e in stack.emulators.items()})
    for cluster in stack.emulators:
        ctx.live[cluster] = _live_query(stack, cluster)
    rows, failed = [], []
    for case in CASES:
        reason = _run_case(ctx, case)
        answer = getattr(case, "answer", None)
        if reason:
            reason = "FAIL: " + reason
            failed.append((case.name, reason))
        rows.append((case.name, answer.brief() if answer else "-", case.expect.__doc__ or "", reason))
    print_table("bad input through Envoy", rows)
    assert not failed, f"{len(failed)} of {len(rows)} cases failed: {failed}"
    assert "routing group refused" in stack.router.log(), "the refused routing group was not logged"
    rows = harness.run_query(stack, "after-bad-input", "/* emulator: pages=2 */ SELECT 1")
    assert len(rows) == 2 and {row[0] for row in rows} <= set(ADHOC), rows


# --------------------------------------------------------------------------------------------------
# coordinators that misbehave

#: The emulator's garbage answer (``fault.rs``): neither JSON nor UTF-8.
GARBAGE = b"<html>\x00\xff\xfe garbage from a broken coordinator }{"


def _healthy(stack: harness.Stack) -> dict[str, str]:
    """cluster → health, from the router's ``/metrics`` (trino_router_cluster_healthy)."""
    text = harness.http_request("GET", stack.router.metrics_url).text
    healthy = {}
    for line in text.splitlines():
        if line.startswith("trino_router_cluster_healthy{"):
            name = line.split('cluster="', 1)[1].split('"', 1)[0]
            healthy[name] = line.rsplit(" ", 1)[1] == "1"
    return healthy


def _client_query(stack: harness.Stack, user: str) -> tuple[list, list[tuple[str, int]], float]:
    """A real client query; its rows, every (method, status) the client got, and how long it took."""
    import requests
    import trino

    answers: list[tuple[str, int]] = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: answers.append((r.request.method, r.status_code)))
    started = time.monotonic()
    conn = trino.dbapi.connect(host="127.0.0.1", port=stack.port, user=user, http_scheme="http",
                               http_session=session, request_timeout=20)
    try:
        cur = conn.cursor()
        cur.execute("/* emulator: pages=2 */ SELECT 1")
        return cur.fetchall(), answers, time.monotonic() - started
    finally:
        conn.close()


def test_coordinators_that_misbehave(make_stack):
    stack = make_stack(clusters=[("a", "adhoc"), ("b", "adhoc")],
                       extra_config={"new_query_timeout": "2s", "metrics_listen": "127.0.0.1:0",
                                     "health": {"interval": "250ms", "timeout": "500ms", "healthy_threshold": 2,
                                                "unhealthy_threshold": 2, "retry_after": "1s"}})
    a, b = stack.emulators["a"], stack.emulators["b"]
    rows: list[tuple[str, str, str, str | None]] = []

    def case(name: str, expected: str, run: Callable[[], str]) -> None:
        try:
            got, reason = run(), None
        except (AssertionError, NoAnswer, ValueError, KeyError) as exc:
            got, reason = "-", str(exc)[:300]
        try:
            stack.assert_alive()
        except AssertionError as exc:
            reason = f"{reason or ''} {exc}"
        for emu in (a, b):
            emu.set_fault("none")
        harness.wait_for(lambda: all(_healthy(stack).values()), 10)
        rows.append((name, got, expected, reason and f"FAIL: {reason}"))

    def garbage_to_new_query() -> str:
        a.set_fault("garbage")
        b.set_fault("garbage")
        answer = Answer(*raw_http(stack.port, request("POST", "/v1/statement", b"SELECT 1")))
        assert answer.status == 200 and answer.body == GARBAGE, f"changed on the way: {answer.brief()}"
        assert "x-envoy-upstream-service-time" in answer.headers
        return answer.brief()

    def garbage_to_the_client() -> str:
        a.set_fault("garbage")
        b.set_fault("garbage")
        started = time.monotonic()
        try:
            _client_query(stack, "garbage")
        except Exception as exc:  # noqa: BLE001 - the client must raise, quickly
            took = time.monotonic() - started
            assert took < 5, f"the client took {took:.1f}s to give up"
            return f"client raised {type(exc).__name__} in {took:.1f}s"
        raise AssertionError("the client accepted garbage as a query")

    def garbage_to_health_polls() -> str:
        a.set_fault("garbage", scope="all")
        harness.wait_for(lambda: _healthy(stack).get("a") is False, 5)
        got, _, _ = _client_query(stack, "garbage-polls")
        assert {row[0] for row in got} == {"b"}, got
        return "a unhealthy; query ran on b"

    def never_answers_a_new_query() -> str:
        a.set_fault("hang")
        b.set_fault("hang")
        started = time.monotonic()
        answer = Answer(*raw_http(stack.port, request("POST", "/v1/statement", b"SELECT 1"), timeout=15))
        took = time.monotonic() - started
        assert answer.status == 504 and answer.error_name == "CLUSTER_UNAVAILABLE", answer.brief()
        assert 1.5 <= took <= 6, f"answered after {took:.1f}s (new_query_timeout 2s)"
        harness.wait_for(lambda: list(_healthy(stack).values()).count(False) == 1, 3)
        return f"{answer.brief()} after {took:.1f}s"

    def one_cluster_never_answers() -> str:
        held_before = a.set_fault("hang")["faulted"]
        outcomes = []
        for n in range(4):
            got, answers, took = _client_query(stack, f"hang-{n}")
            outcomes.append(({row[0] for row in got}, answers, took))
        assert all(clusters == {"b"} for clusters, _, _ in outcomes), outcomes
        hung = a.set_fault("none")["faulted"] - held_before
        assert hung >= 1, "no new query met the hung coordinator: the case did not exercise it"
        retried = sum(("POST", 504) in answers for _, answers, _ in outcomes)
        return f"4 of 4 on b; {retried} retried after a 504; a held {hung} POSTs"

    case("garbage answer to a new query", "passed on unchanged (200, same bytes)", garbage_to_new_query)
    case("garbage answer, real client", "the client raises at once", garbage_to_the_client)
    case("garbage answers to health polls", "cluster unhealthy, queries elsewhere", garbage_to_health_polls)
    case("no answer to a new query", "Trino-shaped 504 after new_query_timeout", never_answers_a_new_query)
    case("one coordinator never answers", "client retries elsewhere, every query works", one_cluster_never_answers)

    print_table("coordinators that misbehave", rows)
    failed = [(name, reason) for name, _, _, reason in rows if reason]
    assert not failed, f"{len(failed)} of {len(rows)} cases failed: {failed}"
