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
import pytest
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


def counted_on(counter: str, *clusters: str):
    def check(ctx: Context, answer: Answer) -> None:
        assert answer.status == 200, f"want 200, got {answer.brief()}: {answer.body[:300]!r}"
        moved = [n for n, e in ctx.stack.emulators.items() if e.counters()[counter] != ctx.before[n][counter]]
        assert len(moved) == 1 and moved[0] in clusters, f"{counter} moved on {moved}, want one of {clusters}"

    check.__doc__ = f"200 from {' or '.join(clusters)} (its {counter} counter)"
    return check


def no_statement(*statuses: int):
    def check(ctx: Context, answer: Answer) -> None:
        assert answer.status in statuses, f"want HTTP {statuses}, got {answer.brief()}: {answer.body[:300]!r}"
        posted = [n for n, e in ctx.stack.emulators.items()
                  if e.counters()["statement_post"] != ctx.before[n]["statement_post"]]
        assert not posted, f"a statement reached {posted}"

    check.__doc__ = f"HTTP {'/'.join(map(str, statuses))}, and no coordinator took it as a statement"
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
    # Envoy's path normalization cannot take an escaped NUL or a fragment (a coordinator refuses them: J7).
    Case("escapes-in-query-id", get(lambda ctx: "/v1/query/%00%ff%2F..%2F"), refused_by_envoy(400),
         may_reach=NO_CLUSTER),
    Case("escaped-nul-in-statement-path",
         lambda ctx: request("POST", "/v1/statement%00", b"INSERT INTO t VALUES (1)"), refused_by_envoy(400),
         may_reach=NO_CLUSTER),
    Case("fragment-in-statement-path",
         lambda ctx: request("POST", "/v1/statement#x", b"INSERT INTO t VALUES (1)"), refused_by_envoy(400),
         may_reach=NO_CLUSTER),
    Case("escapes-in-query-id-kept", get(lambda ctx: "/v1/query/%ff%2F..%2F"),
         trino_error(400, names=("INVALID_QUERY_ID",)), may_reach=NO_CLUSTER),
    # Envoy resolves dot segments (normalize_path): what remains is a path like any other, routed as such.
    Case("traversal-after-a-live-etl-id",
         get(lambda ctx: f"/v1/statement/executing/{ctx.live['trino-etl'][0]}/../../../info"),
         counted_on("node_api", *ADHOC), may_reach=NO_CLUSTER),
    Case("traversal-in-the-id", get(lambda ctx: "/v1/query/../../v1/info"), counted_on("node_api", *ADHOC),
         may_reach=NO_CLUSTER),
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
# spellings of a new statement (issue 16): the rules and a group's permission hold however the client
# spells POST /v1/statement. A coordinator (Jetty + Jersey) drops matrix parameters and takes one trailing
# slash (docs/trino-conformance.md M1, M2); Envoy (envoy-config) first resolves dot segments, decodes
# escaped unreserved characters and merges slashes (P1). Each spelling is sent twice: an INSERT, which the
# rule sends to etl, and a SELECT by a user the etl group does not admit who asks for it — and under
# ``url_prefix`` naming trino-a and trino-etl in the URL respectively.

#: Taken as a new statement: decided by the router like ``POST /v1/statement``.
STATEMENT = "statement"
#: path → what comes of it: STATEMENT, or the statuses of an answer that starts no query anywhere.
SPELLINGS: list[tuple[str, str, object]] = [
    ("POST", "/v1/statement", STATEMENT),
    ("POST", "/v1/statement/", STATEMENT),  # M2
    ("POST", "/v1/statement;x=1", STATEMENT),  # M1
    ("POST", "/v1/statement/;", STATEMENT),  # M1 + M2
    ("POST", "/v1/statement/;x=1", STATEMENT),
    ("POST", "/v1;a=b/statement;c/", STATEMENT),
    ("POST", "/v1/statement;x=1?y=2", STATEMENT),
    ("POST", "/v1/statement/?y=2", STATEMENT),
    ("POST", "/v1/%73tatement", STATEMENT),  # a coordinator: 404 (M3); Envoy decodes %73 first (P1)
    ("POST", "/%76%31/stat%65ment/", STATEMENT),
    ("POST", "//v1/statement", STATEMENT),  # a coordinator: 400 (J2); Envoy merges the slashes (P1)
    ("POST", "/v1//statement;x", STATEMENT),
    ("POST", "/v1/statement//", STATEMENT),
    ("POST", "/v1/./statement", STATEMENT),  # a coordinator: 404 (M5); Envoy resolves it (P1)
    ("POST", "/v1/statement/../statement/", STATEMENT),
    ("POST", "/v1/%2e/statement", STATEMENT),  # a coordinator: 400 (J3)
    ("POST", "/v1/statement/.", STATEMENT),
    ("POST", "/../v1/statement", STATEMENT),
    ("POST", "/v1\\statement", STATEMENT),  # a coordinator: 400 (J7); Envoy reads it as a slash
    ("POST", "/v1/statement/;/", (400,)),  # J2: an empty segment that is not the last
    ("POST", "/v1/statement%2F", (400,)),  # J1 (Envoy keeps escaped slashes)
    ("POST", "/v1%2Fstatement", (400,)),
    ("POST", "/v1/statement%3Bx", (404,)),  # an escaped ';' is no parameter (M3)
    ("POST", "/V1/statement", (404,)),  # Jersey matches case-sensitively
    ("POST", "/v1/Statement;x", (404,)),
    ("POST", "/v1/statements", (404,)),
    ("POST", "/v1/statement/x", (404,)),
    ("HEAD", "/v1/statement/", (405,)),  # S8: POST and OPTIONS only
    ("GET", "/v1/statement;x=1", (405,)),
    ("PUT", "/v1/statement/;", (405,)),
    ("DELETE", "/v1/statement/", (405,)),
]
#: Spellings of the URL prefix itself (``url_prefix`` mode): CLUSTER is the cluster the URL names; then
#: what a new statement under it comes to, and what the other requests under it do (None: as without it).
PREFIX_SPELLINGS: list[tuple[str, object, object]] = [
    ("/_trino/CLUSTER", STATEMENT, None),
    ("/_trino//CLUSTER", STATEMENT, None),
    ("/_trino/./CLUSTER", STATEMENT, None),
    ("/_trino/CLUSTER/.", STATEMENT, None),
    ("/_trino/x/../CLUSTER", STATEMENT, None),
    ("/_%74rino/CLUSTER", STATEMENT, None),
    # The URL's cluster does not count for a new statement; anything else naming no cluster: the router's 404.
    ("/_trino/CLUSTER;x", STATEMENT, (404,)),
    ("/_trino/CLUSTER%2F", STATEMENT, (404,)),
    ("/_trino;x/CLUSTER", (404,), (404,)),  # not under the prefix: Trino has no such resource
    ("/_TRINO/CLUSTER", (404,), (404,)),
]
#: The paths tried under every spelling of the prefix but the plain one (which gets all of SPELLINGS).
UNDER_PREFIX_SPELLINGS = ("/v1/statement", "/v1/statement/", "/v1/statement;x=1", "/v1/statement/;")
INSERT = b"INSERT INTO t VALUES (1)"


def spelled(method: str, path: str, sql: bytes, headers=(), user: bytes = b"bad-input"):
    return lambda ctx: request(method, path, sql if method in ("POST", "PUT") else b"", headers, user=user)


def spelling_cases(prefixed: bool) -> list[Case]:
    """Per spelling: an INSERT (the rule sends it to etl) and a SELECT asking for etl by a user it does
    not admit; under ``url_prefix`` also every spelling under ``{prefix}/trino-a`` (the INSERT) and
    ``{prefix}/trino-etl`` (the SELECT)."""
    bases = [("", STATEMENT, None)] + (PREFIX_SPELLINGS if prefixed else [])
    cases = []
    for base, base_outcome, other_outcome in bases:
        for method, path, outcome in SPELLINGS:
            if base not in ("", "/_trino/CLUSTER") and path not in UNDER_PREFIX_SPELLINGS:
                continue
            if base and path.startswith("/.."):
                outcome = (404,)  # out of the cluster's segment: a path naming cluster "v1", which is none
            elif base_outcome is not STATEMENT:
                outcome = base_outcome
            elif outcome is not STATEMENT and other_outcome is not None:
                outcome = other_outcome
            insert_path = base.replace("CLUSTER", "trino-a") + path
            denied_path = base.replace("CLUSTER", "trino-etl") + path
            insert_expect = placed_in("trino-etl") if outcome is STATEMENT else no_statement(*outcome)
            denied_expect = placed_in(*ADHOC) if outcome is STATEMENT else no_statement(*outcome)
            cases.append(Case(f"{method} {insert_path} INSERT", spelled(method, insert_path, INSERT),
                              insert_expect))
            cases.append(Case(f"{method} {denied_path} as mallory in etl",
                              spelled(method, denied_path, b"SELECT 1", [(b"X-Trino-Routing-Group", b"etl")],
                                      user=b"mallory"), denied_expect))
    return cases


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


@pytest.mark.parametrize("mode", ["plain", "url_prefix"])
def test_every_spelling_of_a_new_statement_is_decided_by_the_rules(make_stack, mode):
    """conformance: M6, M7, P1"""
    extra = {"rules": RULES, "groups": GROUPS}
    if mode == "url_prefix":
        extra["url_prefix"] = "/_trino"
    stack = make_stack(clusters=CLUSTERS, extra_config=extra)
    ctx = Context(stack, live={}, coordinator={})
    rows, failed = [], []
    for case in spelling_cases(prefixed=mode == "url_prefix"):
        reason = _run_case(ctx, case)
        answer = getattr(case, "answer", None)
        if reason:
            failed.append((case.name, reason))
        rows.append((case.name, answer.brief() if answer else "-", case.expect.__doc__ or "", reason))
    print_table(f"spellings of a new statement ({mode})", rows)
    assert not failed, f"{len(failed)} of {len(rows)} spellings started a query the rules did not decide: {failed}"
    rows = harness.run_query(stack, "after-spellings", "/* emulator: pages=2 */ SELECT 1")
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
