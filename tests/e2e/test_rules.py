"""End-to-end acceptance of routing rules: real Envoy, real ``trino`` client, the router and emulators.

One emulator per group, so the cluster a query landed on names the group the router chose:

    trino-a (adhoc, the default group)   trino-etl (etl)   trino-hive (hive)
    trino-bi (interactive)               trino-odd (quarantine: SQL the router cannot read)

The rules are the issue's three, exactly as written there, followed by this file's own: a user rule with
simple matchers and ``set_headers``, a CEL rule that fails at run time, and a rule for unreadable SQL.
Every placement is asserted twice: by the ``cluster`` column of the rows the client got and by the
emulators' own record of the queries they received (``/v1/emulator/queries``, with the ``x-trino-*``
headers of each POST).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid

import pytest

import harness

CLUSTERS = (
    ("trino-a", "adhoc"),
    ("trino-etl", "etl"),
    ("trino-hive", "hive"),
    ("trino-bi", "interactive"),
    ("trino-odd", "quarantine"),
)
CLUSTER_OF_GROUP = {group: name for name, group in CLUSTERS}

#: The rules of the issue, verbatim (the indentation of the issue's config block removed).
ISSUE_RULES_YAML = """\
rules:
  - name: etl-writes
    when: 'statement.kind in ["insert", "create_table_as", "merge"]'
    group: etl
  - name: hive-readers
    when: '"hive" in statement.catalogs && request.user != "guest"'
    group: hive
  - name: dashboards
    when: 'request.source.startsWith("superset") || "dashboard" in request.client_tags'
    group: interactive
"""

#: The header (and value) the service-account rule adds for the coordinator.
SET_HEADER = ("x-trino-resource-estimate", "EXECUTION_TIME=4h")

#: This file's rules, after the issue's.
EXTRA_RULES = [
    {
        "name": "service-accounts",
        "match": {"user": ["svc-airflow", "svc-dbt"]},
        "group": "etl",
        "set_headers": {"X-Trino-Resource-Estimate": SET_HEADER[1]},
    },
    # Fails at run time on every request (a map without that key): counts as no match, logged once.
    {"name": "broken", "when": 'request.nonexistent == "x"', "group": "etl"},
    {"name": "unreadable-sql", "match": {"statement.kind": "unknown"}, "group": "quarantine"},
]

BROKEN_RULE_LOG = "rule failed and counts as no match"


# --------------------------------------------------------------------------------------------------
# helpers


def _yaml():
    try:
        import yaml
    except ImportError as exc:  # scripts/setup installs PyYAML
        if harness.in_ci():
            pytest.fail(f"PyYAML not importable ({exc}) (CI=true: a missing dependency is a failure)", pytrace=False)
        pytest.skip(f"PyYAML not importable ({exc}): run scripts/setup and use .venv/bin/python")
    return yaml


def _rules() -> list[dict]:
    return _yaml().safe_load(ISSUE_RULES_YAML)["rules"] + EXTRA_RULES


@pytest.fixture(scope="module")
def rules_stack(envoy_bin):
    """One stack for this module's rule tests (they only add queries; each asserts by query id)."""
    harness.require_trino_client()
    stack = harness.start_stack(clusters=CLUSTERS, extra_config={"rules": _rules()}).pin()
    try:
        yield stack
        problems = [str(p.failure("exited while the tests ran")) for p in stack.processes() if not p.alive()]
        if "panicked" in stack.router.log():
            problems.append(f"the router panicked:\n{stack.router.proc.stderr_tail()}")
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)
    finally:
        stack.stop()


def _headers(query: dict) -> dict[str, str]:
    raw = query.get("headers") or {}
    return {str(k).lower(): str(v) for k, v in raw.items()}


def _placement(stack: harness.Stack, query_id: str) -> tuple[list[str], dict | None]:
    """The emulators that received ``query_id`` and the record of the (first) one."""
    found = [(name, emu.query(query_id)) for name, emu in stack.emulators.items()]
    found = [(name, q) for name, q in found if q is not None]
    return [name for name, _ in found], (found[0][1] if found else None)


def _run(conn, sql: str) -> tuple[str, list[list]]:
    cur = conn.cursor()
    cur.execute(sql)
    rows = cur.fetchall()
    return cur.query_id, rows


def _assert_lands(stack: harness.Stack, conn, sql: str, group: str, why: str, rows_name_cluster=True) -> dict:
    """Runs ``sql`` on ``conn``; asserts it ran on ``group``'s cluster only (and, for an ordinary query,
    that its rows came from there: their first column names the emulator); returns the emulator's record."""
    want = CLUSTER_OF_GROUP[group]
    query_id, rows = _run(conn, sql)
    record = _assert_placed(stack, query_id, want, f"{why}: {sql!r}")
    if rows_name_cluster:
        clusters = {row[0] for row in rows}
        assert clusters == {want}, f"{why}: {sql!r} answered rows from {clusters}, want {want}"
    return record


def _assert_placed(stack: harness.Stack, query_id: str, want: str, what: str) -> dict:
    placed, record = _placement(stack, query_id)
    assert placed == [want], f"{what}: query {query_id} was received by {placed}, want only {want}"
    return record


def _statement(stack: harness.Stack, body: bytes, headers: dict[str, str], timeout: float = 20):
    """``POST /v1/statement`` through Envoy with any body; when a query was created, follows ``nextUri``
    to the end (through Envoy: the follow-ups are placed by the router). Returns
    ``(status, first answer, query id or None, rows, seconds)``."""
    started = time.monotonic()
    first = harness.http_request("POST", f"{stack.url}/v1/statement", body, headers, timeout=timeout)
    query_id, rows = None, []
    if first.status == 200:
        page = first.json()
        query_id = page.get("id")
        while page.get("nextUri"):
            assert time.monotonic() - started < timeout, f"query {query_id} did not finish in {timeout}s"
            nxt = page["nextUri"]
            assert nxt.startswith(stack.url), f"nextUri {nxt} does not point at Envoy"
            answer = harness.http_request("GET", nxt, headers={"X-Trino-User": headers["X-Trino-User"]},
                                          timeout=timeout)
            assert answer.status == 200, f"{nxt} -> {answer.status}: {answer.text[:300]}"
            page = answer.json()
            rows += page.get("data") or []
    return first.status, first, query_id, rows, time.monotonic() - started


def _broken_rule_log_lines(stack: harness.Stack) -> list[str]:
    return [line for line in stack.router.log().splitlines() if BROKEN_RULE_LOG in line]


# --------------------------------------------------------------------------------------------------
# the issue's must-show


def test_one_session_is_routed_by_statement_kind_and_catalog(rules_stack, trino_connect):
    """The same client session's queries go to different clusters by statement kind and by catalog."""
    stack = rules_stack
    run = uuid.uuid4().hex[:8]
    conn = trino_connect(user="analyst", target=stack)  # one connection: one client session

    # A session property set on the default cluster travels with the session's later queries everywhere.
    set_session = _assert_lands(stack, conn, "SET SESSION query_max_run_time = '1h'", "adhoc", "no rule",
                                rows_name_cluster=False)

    session_cases = [
        (f"SELECT 1 /* {run} */", "adhoc", "no rule matches: default group"),
        (f"INSERT INTO iceberg.sales.orders VALUES (1, 'a') /* {run} */", "etl", "etl-writes (insert)"),
        (f"CREATE TABLE iceberg.sales.daily AS SELECT 1 AS x /* {run} */", "etl", "etl-writes (create_table_as)"),
        (f"MERGE INTO iceberg.sales.orders t USING iceberg.sales.staging s ON t.id = s.id "
         f"WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v) /* {run} */",
         "etl", "etl-writes (merge)"),
        (f"SELECT count(*) FROM hive.web.t /* {run} */", "hive", "hive-readers"),
        (f"SELECT o.id FROM iceberg.sales.orders o JOIN hive.web.t w ON o.id = w.id /* {run} */",
         "hive", "hive-readers (one of several catalogs)"),
        (f"INSERT INTO iceberg.sales.orders SELECT * FROM hive.web.t /* {run} */",
         "etl", "the first rule that holds wins (etl-writes before hive-readers)"),
        (f"UPDATE iceberg.sales.orders SET v = 'b' WHERE id = 1 /* {run} */",
         "adhoc", "update is not among etl-writes' kinds"),
    ]
    records = [_assert_lands(stack, conn, sql, group, why) for sql, group, why in session_cases]

    # The session's catalog counts too: after USE, an unqualified table is hive.web.t.
    _assert_lands(stack, conn, "USE hive.web", "hive", "hive-readers (USE names the catalog)",
                  rows_name_cluster=False)
    records.append(_assert_lands(stack, conn, f"SELECT * FROM t /* {run} */", "hive",
                                 "hive-readers (the session's catalog)"))
    assert _headers(records[-1]).get("x-trino-catalog") == "hive", _headers(records[-1])

    sessions = {tuple(map(tuple, r.get("session") or [])) for r in records}
    assert sessions == {(("query_max_run_time", "1h"),)}, f"one session on every cluster: {sessions}"
    assert {r.get("user") for r in records} == {"analyst"}
    assert set_session.get("user") == "analyst"
    for record in records:
        assert SET_HEADER[0] not in _headers(record), f"no matching rule sets headers: {record['sql']!r}"
    print(f"one session, placed: {[(r['sql'][:40], r['id']) for r in records]}")


def test_execute_of_a_prepared_statement_is_routed_as_that_statement(rules_stack):
    """``EXECUTE name`` is routed as the statement ``X-Trino-Prepared-Statement`` names.

    The emulator does not implement ``PREPARE`` (it sends no ``X-Trino-Added-Prepare``), so the Python
    client would never send the header: the request carries it the way Trino's clients write it."""
    stack = rules_stack
    prepared = {
        "ins": "INSERT INTO iceberg.sales.orders VALUES (?, ?)",
        "sel": "SELECT * FROM iceberg.sales.orders WHERE id = ?",
    }
    header = ",".join(f"{name}={urllib.parse.quote_plus(sql)}" for name, sql in prepared.items())
    base = {"X-Trino-User": "analyst", "Content-Type": "text/plain"}
    cases = [
        ("EXECUTE ins USING 1, 'a'", {"X-Trino-Prepared-Statement": header}, "etl"),
        ("EXECUTE sel USING 1", {"X-Trino-Prepared-Statement": header}, "adhoc"),
        ("EXECUTE ins USING 1, 'a'", {}, "adhoc"),  # no header: the router cannot know what it runs
    ]
    for sql, extra, group in cases:
        status, first, query_id, rows, _ = _statement(stack, sql.encode(), {**base, **extra})
        assert status == 200, f"{sql} {extra}: HTTP {status}: {first.text[:300]}"
        record = _assert_placed(stack, query_id, CLUSTER_OF_GROUP[group], f"{sql} with {sorted(extra)}")
        assert {row[0] for row in rows} <= {CLUSTER_OF_GROUP[group]}
        assert record["sql"] == sql
        if extra:
            assert _headers(record).get("x-trino-prepared-statement") == header


def test_request_rules_route_sources_tags_and_users(rules_stack, trino_connect):
    """Dashboards by source or client tag, service accounts by a ``match:`` rule (with ``set_headers``
    reaching the coordinator), the guest exception, and the routing-group header when no rule matches."""
    stack = rules_stack
    run = uuid.uuid4().hex[:8]
    hive_sql = f"SELECT count(*) FROM hive.web.t /* {run} */"

    superset = trino_connect(user="guest", source="superset-prod", target=stack)
    _assert_lands(stack, superset, hive_sql, "interactive", "guest from superset: dashboards")

    tagged = trino_connect(user="bob", client_tags=["team-x", "dashboard"], target=stack)
    record = _assert_lands(stack, tagged, f"SELECT 1 /* {run} */", "interactive", "dashboard client tag")
    assert _headers(record).get("x-trino-client-tags") == "team-x,dashboard"
    _assert_lands(stack, tagged, hive_sql, "hive", "a dashboard's hive query: hive-readers comes first")

    guest = trino_connect(user="guest", target=stack)
    _assert_lands(stack, guest, hive_sql, "adhoc", "hive-readers excludes guest")

    for user in ("svc-airflow", "svc-dbt"):
        service = trino_connect(user=user, target=stack)
        record = _assert_lands(stack, service, f"SELECT 1 /* {run} */", "etl", f"service-accounts ({user})")
        assert _headers(record).get(SET_HEADER[0]) == SET_HEADER[1], (
            f"set_headers must reach the coordinator: {_headers(record)}")
    other = trino_connect(user="svc-other", target=stack)
    record = _assert_lands(stack, other, f"SELECT 1 /* {run} */", "adhoc", "not a listed service account")
    assert SET_HEADER[0] not in _headers(record)

    # No rule: the X-Trino-Routing-Group header's group; a rule that matches wins over it.
    grouped = trino_connect(user="carol", routing_group="interactive", target=stack)
    _assert_lands(stack, grouped, f"SELECT 1 /* {run} */", "interactive", "routing-group header")
    _assert_lands(stack, grouped, f"INSERT INTO iceberg.a.b VALUES 1 /* {run} */", "etl", "a rule beats the header")


# --------------------------------------------------------------------------------------------------
# bad input and failing rules

PARENS = b"(" * 1_000_000

#: name: (body, the group it must land in when the coordinator creates a query)
BAD_SQL = {
    # The leading keyword still names the kind (select): no rule matches.
    "unbalanced-quote": (b"SELECT * FROM hive.web.t WHERE name = 'unterminated", "adhoc"),
    "quote-first": (b"'no statement starts like this", "quarantine"),
    "binary": (bytes(range(256)) * 8, "quarantine"),
    "not-sql": (b"this is not sql at all ((((", "quarantine"),
    # Just under Envoy's buffer limit (1 MiB): Envoy hands the router the whole body.
    "a-megabyte-of-parens": (PARENS, "quarantine"),
}


def test_unparseable_sql_gets_a_clean_answer_and_the_unknown_rule(rules_stack, trino_connect):
    stack = rules_stack
    headers = {"X-Trino-User": "bad-input", "Content-Type": "text/plain"}
    for name, (body, group) in BAD_SQL.items():
        status, first, query_id, rows, seconds = _statement(stack, body, headers)
        print(f"{name}: HTTP {status} in {seconds:.2f}s, query {query_id}, {len(rows)} rows, "
              f"first answer {first.body[:100]!r}")
        assert status < 500, f"{name}: HTTP {status} (Envoy or the router failed): {first.text[:300]}"
        assert seconds < 10, f"{name}: took {seconds:.1f}s"
        assert first.body.strip(), f"{name}: HTTP {status} without a body"
        if status == 200:
            assert query_id, f"{name}: 200 without a query id: {first.text[:300]}"
            record = _assert_placed(stack, query_id, CLUSTER_OF_GROUP[group], name)
            if name == "a-megabyte-of-parens":
                assert record["sql"].encode() == body, f"{name}: the coordinator got {len(record['sql'])} bytes"
        else:
            # The coordinator refused it (the emulator's answer, passed through): nothing was created.
            assert 400 <= status < 500, f"{name}: HTTP {status}"
        stack.assert_alive()

    # The router still serves ordinary queries, by rule.
    conn = trino_connect(user="after-bad-input", target=stack)
    _assert_lands(stack, conn, "INSERT INTO iceberg.a.b VALUES 1", "etl", "after bad input")
    _assert_lands(stack, conn, "SELECT 1", "adhoc", "after bad input")


def test_failing_cel_rule_counts_as_no_match_and_is_logged_once(rules_stack, trino_connect):
    stack = rules_stack
    conn = trino_connect(user="cel-check", target=stack)
    # Each of these reaches the broken rule (nothing earlier matches) and goes on to the default group.
    for i in range(5):
        _assert_lands(stack, conn, f"SELECT {i}", "adhoc", "the broken rule does not match")
    lines = _broken_rule_log_lines(stack)
    assert len(lines) == 1, f"want exactly one log line for the failing rule, got {len(lines)}:\n" + "\n".join(lines)
    assert "broken" in lines[0] and "nonexistent" in lines[0], lines[0]


# --------------------------------------------------------------------------------------------------
# live reload


def test_rules_follow_a_config_reload(make_stack, trino_connect):
    """Rewrite the config with a different rule: new queries follow it within about 2 s. The new rule
    needs the SQL where the old one did not (the router turns Envoy's body sending back on)."""
    stack = make_stack(
        clusters=CLUSTERS[:3],
        extra_config={"rules": [{"name": "by-user", "match": {"user": "mover"}, "group": "etl"}]},
    )
    conn = trino_connect(user="mover", target=stack)
    _assert_lands(stack, conn, "SELECT 1", "etl", "before the reload: by-user")
    _assert_lands(stack, conn, "INSERT INTO iceberg.a.b VALUES 1", "etl", "before the reload: by-user")

    doc = json.loads(json.dumps(stack.config_doc))
    doc["rules"] = [{"name": "by-kind", "when": 'statement.kind == "select" && request.user == "mover"',
                     "group": "hive"}]
    harness.replace_file(stack.config_path, harness.yaml_text(doc))
    changed = time.monotonic()
    while True:
        query_id, rows = _run(conn, "SELECT 1")
        placed, _ = _placement(stack, query_id)
        if placed == ["trino-hive"]:
            break
        assert placed == ["trino-etl"], f"during the reload a query went to {placed}"
        assert time.monotonic() - changed < 2.5, "queries did not follow the new rule within 2.5 s"
        time.sleep(0.1)
    took = time.monotonic() - changed
    print(f"queries followed the new rule after {took:.2f}s")
    assert rows and rows[0][0] == "trino-hive"
    for _ in range(3):
        _assert_lands(stack, conn, "SELECT 1", "hive", "after the reload: by-kind")
    _assert_lands(stack, conn, "INSERT INTO iceberg.a.b VALUES 1", "adhoc", "after the reload: by-user is gone")
    assert "config reloaded" in stack.router.log()


# --------------------------------------------------------------------------------------------------
# regressions of bugs this file found


def test_set_headers_of_a_rule_that_did_not_match_never_reach_the_coordinator(make_stack, trino_connect):
    stack = make_stack(clusters=CLUSTERS[:2], extra_config={"rules": [
        {"name": "non-select", "when": 'statement.kind != "select"', "group": "etl",
         "set_headers": {"X-Trino-Resource-Estimate": "EXECUTION_TIME=9h"}},
    ]})
    conn = trino_connect(user="leak-check", target=stack)
    record = _assert_lands(stack, conn, "INSERT INTO iceberg.a.b VALUES 1", "etl", "non-select")
    assert _headers(record).get("x-trino-resource-estimate") == "EXECUTION_TIME=9h"
    record = _assert_lands(stack, conn, "SELECT 1", "adhoc", "no rule matches a select")
    assert "x-trino-resource-estimate" not in _headers(record), (
        f"a header of a rule that did not match reached the coordinator: {_headers(record)}")


#: Just over Envoy's default buffer limit (1 MiB), within what Trino accepts once `query.max-length` is
#: raised. With Envoy's default limit, 5-20% of these hung (Envoy sent the router a partial first part and
#: then never finished the upstream request); envoy-config now sets an 8 MiB limit.
OVER_BUFFER = b"SELECT '" + b"x" * 1_100_000 + b"'"


def test_statement_over_envoys_default_buffer_limit_reaches_the_coordinator(make_stack):
    stack = make_stack(clusters=CLUSTERS[:2], extra_config={"rules": [
        {"name": "writes", "match": {"statement.kind": "insert"}, "group": "etl"},
    ]})
    # Each answer takes about 0.1 s; the hang is a race, so it takes a few dozen tries to show.
    query_ids = []
    for attempt in range(40):
        try:
            answer = harness.http_request("POST", f"{stack.url}/v1/statement", OVER_BUFFER,
                                          {"X-Trino-User": f"big-{attempt}"}, timeout=2)
        except TimeoutError:
            pytest.fail(f"attempt {attempt}: no answer within 2 s to a {len(OVER_BUFFER)}-byte statement")
        assert answer.status == 200, f"attempt {attempt}: HTTP {answer.status}: {answer.text[:200]}"
        query_ids.append(answer.json()["id"])
    got = {q["id"]: len(q["sql"]) for q in stack.emulators["trino-a"].queries()}
    assert all(got.get(query_id) == len(OVER_BUFFER) for query_id in query_ids), (
        "the coordinator must get every statement whole")


def test_a_client_cannot_ask_its_way_into_a_restricted_group(make_stack):
    """`etl` admits only user etl_bot and sources matching ^airflow: anyone else naming it in
    X-Trino-Routing-Group lands in the default group, and the router logs the refusal."""
    stack = make_stack(clusters=[("a", "adhoc"), ("etl", "etl")],
                       extra_config={"groups": [{"name": "etl", "allow": {"users": ["etl_bot"],
                                                                         "sources": ["^airflow"]}}]})
    cases = [("etl_bot", "cli", "etl"), ("alice", "airflow-dag-3", "etl"), ("mallory", "cli", "a"),
             ("mallory", "x-airflow", "a")]
    for user, source, want in cases:
        rows = harness.run_query(stack, user, "SELECT 1", source=source,
                                 http_headers={"X-Trino-Routing-Group": "etl"})
        print(f"{user} ({source}) asked for etl: served by {rows[0][0]}")
        assert rows[0][0] == want, (user, source, rows)
    refusals = [line for line in stack.router.log().splitlines() if "routing group refused" in line]
    assert len(refusals) == 2 and all("mallory" in line for line in refusals), refusals
