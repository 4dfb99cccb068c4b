"""Spooled results and URL-carried placement, end to end: real Envoy, the router, emulators, the real client.

With ``url_prefix`` every coordinator URI (nextUri, spooled segment uri/ackUri) names its cluster, and Envoy
routes those requests itself. Spooled segment identifiers are opaque and each emulator rejects identifiers
it did not issue (404) and segment requests without the segment's key header (400), so a segment sent to the
wrong cluster, or sent without its headers, fails loudly.
"""

from __future__ import annotations

import concurrent.futures
import re

import harness

CLUSTERS = [("a", "adhoc"), ("b", "adhoc")]
# Segments served by the coordinator (COORDINATOR_PROXY), so downloads go through Envoy to the cluster
# their URL names; Trino's default (STORAGE) sends downloads straight to the object store instead.
_MODES = ["--process-forwarded", "--spooling-retrieval", "coordinator-proxy"]
FORWARDED = {"a": _MODES, "b": _MODES}


def _url_stack(make_stack, **kwargs):
    return make_stack(
        clusters=CLUSTERS,
        extra_config={"url_prefix": "/_trino"},
        emulator_args=FORWARDED,
        router_env={"RUST_LOG": "trino_router=debug"},
        **kwargs,
    )


def _run(stack, user: str, sql: str, encoding="json"):
    return harness.run_query(stack, user, sql, encoding=encoding)


def test_spooled_results_come_from_the_cluster_that_ran_the_query(make_stack):
    stack = _url_stack(make_stack)
    sql = "/* emulator: pages=4 rows=3 spooled=1 */ SELECT 1"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: _run(stack, f"spool-{n}", sql), range(12)))

    served = {}
    for n, rows in enumerate(results):
        clusters = {row[0] for row in rows}
        assert len(rows) == 12, f"query {n}: {len(rows)} rows, want 4 pages x 3"
        assert len(clusters) == 1, f"query {n}: rows from several clusters {clusters}"
        served[n] = clusters.pop()
    assert set(served.values()) == {"a", "b"}, f"both clusters should serve queries: {served}"

    # Every segment was downloaded from, and acknowledged at, the emulator that issued it (acks are sent
    # asynchronously by the client: wait for them).
    for name, emu in stack.emulators.items():
        mine = sum(1 for c in served.values() if c == name)
        counters = harness.wait_for(lambda: (c := emu.counters())["spooled_acks"] >= 4 * mine and c)
        print(f"{name}: {mine} queries, counters: " + ", ".join(f"{k}={counters[k]}" for k in sorted(counters) if k.startswith("spooled")))
        assert counters["spooled_downloads"] == 4 * mine, counters
        assert counters["spooled_acks"] == 4 * mine, counters
        assert counters["spooled_not_found"] == 0 and counters["spooled_bad_key"] == 0, counters
        for query in emu.queries():
            if query.get("segments"):
                assert query["segments"]["issued"] == query["segments"]["downloaded"] == 4, query

    # The router decided only the new statements: follow-ups and segments went straight from Envoy to the
    # cluster their URL names.
    log = stack.router.proc.stderr_tail(100_000)
    follow_up_decisions = [line for line in log.splitlines() if re.search(r' decided .*path="/v1/(statement|spooled)/', line)]
    assert not follow_up_decisions, follow_up_decisions[:3]
    new_statements = [line for line in log.splitlines() if "new statement" in line and "final_decision=true" in line]
    assert len(new_statements) == 12, len(new_statements)
    stack.assert_alive()


def test_url_placed_queries_finish_with_the_router_down(envoy_bin):
    """With URL placement a follow-up needs no router at all: kill it mid-query, and the query finishes."""
    trino = harness.require_trino_client()
    stack = harness.start_stack(
        clusters=CLUSTERS, extra_config={"url_prefix": "/_trino"}, emulator_args=FORWARDED
    )
    try:
        conn = trino.dbapi.connect(host=stack.host, port=stack.port, user="down", http_scheme="http", encoding="json")
        cur = conn.cursor()
        cur.execute("/* emulator: pages=5 rows=2 delay_ms=200 spooled=1 */ SELECT 1")
        first = cur.fetchone()
        stack.router.proc.kill()
        rows = [first] + cur.fetchall()
        assert len(rows) == 10 and len({r[0] for r in rows}) == 1, rows
        assert not stack.router.proc.alive()
        print(f"query finished on {rows[0][0]} with the router down: {len(rows)} rows")
    finally:
        stack.stop()


def test_without_url_placement_segments_are_refused_clearly(make_stack):
    stack = make_stack(clusters=CLUSTERS)
    resp = harness.http_request("GET", stack.url + "/v1/spooled/download/0123456789abcdef")
    assert resp.status == 404, (resp.status, resp.text)
    body = resp.json()
    assert body["error"]["errorName"] == "SPOOLED_SEGMENT_NOT_FOUND", body
    assert all(e.counters()["spooled_not_found"] == 0 for e in stack.emulators.values()), "no emulator was asked"
    # Inline segments need no placement: small results work without url_prefix.
    rows = _run(stack, "inline", "/* emulator: pages=2 rows=2 spooled=0 */ SELECT 1")
    assert len(rows) == 4 and len({r[0] for r in rows}) == 1, rows
