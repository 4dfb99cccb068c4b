"""Learned routes over RDS, end to end: real Envoy, the router, strict emulators, the real client.

By default ``envoy-config`` has Envoy take its routes from the router (RDS). Once the router knows a
coordinator's id, it publishes a route that sends every follow-up naming that coordinator's queries straight
to its cluster, with no router hop. The emulators reject ids they did not issue, so a follow-up sent to
the wrong cluster fails the query.
"""

from __future__ import annotations

import concurrent.futures
import re
import time

import pytest

import harness

#: The admin token of these tests (the router refuses tokens under 16 characters).
ADMIN_TOKEN = "e2e-learned-routes-admin-token"

CLUSTERS = [("a", "adhoc"), ("b", "adhoc")]
FOLLOW_UP = re.compile(r' decided .*path="/v1/statement/(queued|executing)/')


_run = harness.run_query


def learned_routes(envoy) -> dict[str, str]:
    """Envoy's current learned routes: route name → regex, from its config dump."""
    dump = harness.get_json(f"{envoy.admin_url}/config_dump?resource=dynamic_route_configs")
    routes = {}
    for config in dump.get("configs", []):
        for vhost in config.get("route_config", {}).get("virtual_hosts", []):
            for route in vhost.get("routes", []):
                if route.get("name", "").startswith("learned-"):
                    routes[route["name"]] = route["match"]["safe_regex"]["regex"]
    return routes


def _follow_up_decisions(stack) -> int:
    return sum(1 for line in stack.router.proc.stderr_tail(1_000_000).splitlines() if FOLLOW_UP.search(line))


@pytest.mark.parametrize("version", ["483", "476"], ids=["publishes-ids", "no-ids"])
def test_follow_ups_of_known_coordinators_bypass_the_router(make_stack, version):
    """Trino 477+ publishes its coordinator id in ``/v1/info``: the router has a learned route for each
    cluster before any query. Older releases: nothing is learned before the first query, whose follow-ups
    go through the router (which places them); from then on the same."""
    stack = make_stack(clusters=CLUSTERS, router_env={"RUST_LOG": "trino_router=debug"},
                       emulator_args={name: ["--trino-version", version] for name, _ in CLUSTERS})
    sql = "/* emulator: pages=4 rows=2 */ SELECT 1"
    if version == "476":
        assert learned_routes(stack.envoy) == {}, "nothing learned before the first query"
    else:
        published = {name: emu.emulator_info()["coordinatorId"] for name, emu in stack.emulators.items()}
        early = harness.wait_for(lambda: len(learned_routes(stack.envoy)) == 2 and learned_routes(stack.envoy))
        assert early and all(published[n] in early[f"learned-{n}"] for n in published), (published, early)
    first = _follow_up_decisions(stack)
    _run(stack, "first", sql)
    _run(stack, "second", sql)
    if version != "476":
        assert _follow_up_decisions(stack) == first, "follow-ups of the first queries asked the router"
    routes = harness.wait_for(lambda: len(learned_routes(stack.envoy)) == 2 and learned_routes(stack.envoy))
    assert set(routes) == {"learned-a", "learned-b"}, routes
    for name, emu in stack.emulators.items():
        ids = {q["id"] for q in emu.queries()}
        suffixes = {i.rsplit("_", 1)[1] for i in ids}
        assert len(suffixes) == 1, suffixes
        assert suffixes.pop() in routes[f"learned-{name}"], (name, routes)

    before = _follow_up_decisions(stack)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: _run(stack, f"u{n}", sql), range(24)))
    served = []
    for n, rows in enumerate(results):
        clusters = {row[0] for row in rows}
        assert len(rows) == 8 and len(clusters) == 1, (n, rows)
        served.append(clusters.pop())
    assert set(served) == {"a", "b"}, served
    after = _follow_up_decisions(stack)
    log = stack.router.proc.stderr_tail(1_000_000)
    decided_new = sum(1 for line in log.splitlines() if "new statement" in line and "final_decision=true" in line)
    print(f"follow-up decisions: {before} for the first 2 queries, {after - before} for the next 24; "
          f"{decided_new} new statements decided")
    assert decided_new == 26, "every new statement is decided by the router (and logged)"
    assert after == before, f"{after - before} follow-ups asked the router after its routes were learned"
    stack.assert_alive()


def test_a_draining_cluster_loses_its_learned_route_and_drains_exactly(make_stack):
    stack = make_stack(clusters=[("blue", "adhoc"), ("green", "adhoc")],
                       extra_config={"admin": {"token": ADMIN_TOKEN}},
                       cluster_options={"green": {"enabled": False}})
    _run(stack, "warm", "SELECT 1")
    assert harness.wait_for(lambda: "learned-blue" in learned_routes(stack.envoy))

    # A query that runs for about 3 s on blue, its follow-ups routed by Envoy alone.
    long_sql = "/* emulator: pages=12 rows=1 delay_ms=250 */ SELECT 1"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(lambda: (_run(stack, "long", long_sql), time.monotonic()))
        time.sleep(0.5)
        stack.router.admin("enable", "green", token=ADMIN_TOKEN)
        started = time.monotonic()
        stack.router.admin("drain", "blue", token=ADMIN_TOKEN)
        assert harness.wait_for(lambda: "learned-blue" not in learned_routes(stack.envoy), timeout=2.0), (
            "a draining cluster's follow-ups must come back through the router"
        )
        withdrawn = time.monotonic() - started
        waited = stack.router.admin("drain", "blue", "--wait", "--timeout", "30s", token=ADMIN_TOKEN)
        drained_at = time.monotonic()
        rows, finished_at = running.result(timeout=30)
    print(f"route withdrawn after {withdrawn:.3f} s; drain reported {drained_at - finished_at:+.2f} s after the query ended")
    assert len(rows) == 12 and {r[0] for r in rows} == {"blue"}, rows
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert drained_at >= finished_at - 0.5, "drained reported while the query was still running"
    assert _run(stack, "after", "SELECT 1")[0][0] == "green"
    stack.assert_alive()


def test_learned_follow_ups_continue_while_the_router_is_down(envoy_bin):
    trino = harness.require_trino_client()
    stack = harness.start_stack(clusters=CLUSTERS)
    try:
        _run(stack, "warm-1", "SELECT 1")
        _run(stack, "warm-2", "SELECT 1")
        assert harness.wait_for(lambda: len(learned_routes(stack.envoy)) == 2)

        conn = trino.dbapi.connect(host=stack.host, port=stack.port, user="down", http_scheme="http")
        cur = conn.cursor()
        cur.execute("/* emulator: pages=6 rows=1 delay_ms=200 */ SELECT 1")
        first = cur.fetchone()
        stack.router.proc.kill()
        rest = cur.fetchall()
        conn.close()
        rows = [first, *rest]
        assert len(rows) == 6 and len({r[0] for r in rows}) == 1, rows
        assert len(learned_routes(stack.envoy)) == 2, "Envoy keeps the routes it had"
    finally:
        stack.stop()
