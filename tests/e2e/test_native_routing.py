"""Native placement of new statements (``new_query_routing: envoy``), end to end: real Envoy over RDS, the
router, strict emulators, the real client.

Envoy places a new statement by itself when the config lets it (no rule Envoy cannot test, no
``placement_from_sql``): a route per routing group and header rule, the clusters as ``weighted_clusters``
the router updates from health, load and the operator's say. These tests check that such statements
still obey every rule the router would apply — drained, disabled, unhealthy or loaded clusters get none,
header rules and routing groups pick the group — that the router reads first answers only while a
coordinator id is unknown, and that configs Envoy cannot express (SQL rules, ``--static-routes``) still go
through the router.
"""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time

import pytest
import trino

import harness

TOKEN = "e2e-native-token"
UI_PASSWORD = "e2e-ui-password"
NATIVE = {"new_query_routing": "envoy", "admin": {"token": TOKEN}, "health": {"interval": "250ms"}}
DECIDED = re.compile(r"new statement.*final_decision=true")

_run = harness.run_query


def routes(envoy) -> dict[str, dict]:
    """Envoy's current routes by name, from its config dump."""
    dump = harness.get_json(f"{envoy.admin_url}/config_dump?resource=dynamic_route_configs")
    found = {}
    for config in dump.get("configs", []):
        for vhost in config.get("route_config", {}).get("virtual_hosts", []):
            for route in vhost.get("routes", []):
                found[route.get("name", "")] = route
    return found


def weights(envoy, route: str = "native-default") -> dict[str, int] | None:
    """The clusters and weights of a native route (``None``: no such route, or it goes to the router)."""
    found = routes(envoy).get(route)
    if not found or "weighted_clusters" not in found.get("route", {}):
        return None
    return {c["name"]: int(c.get("weight", 0)) for c in found["route"]["weighted_clusters"]["clusters"]}


def learns(envoy, route: str = "native-default") -> bool:
    """Whether the learn filter is on for a native route."""
    filters = routes(envoy).get(route, {}).get("typed_per_filter_config", {})
    return "trino-router.learn" in filters


def decisions(stack) -> int:
    """New statements the router decided (debug log lines)."""
    return sum(1 for line in stack.router.log().splitlines() if DECIDED.search(line))


def served_by(stack, user: str, n: int, **connect) -> list[str]:
    """Run ``n`` one-page queries (4 at a time); the cluster that answered each."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(lambda i: _run(stack, f"{user}-{i}", "SELECT 1", **connect), range(n)))
    return [r[0][0] for r in rows]


def native_stack(make_stack, clusters=(("a", "adhoc"), ("b", "adhoc")), extra=None, **kw):
    config = dict(NATIVE)
    config.update(extra or {})
    return make_stack(clusters=list(clusters), extra_config=config,
                      router_env={"RUST_LOG": "trino_router=debug"}, **kw)


@pytest.mark.parametrize("version", ["476", "483"])
def test_new_statements_skip_the_router_and_learn_only_while_ids_are_unknown(make_stack, version):
    """Trino 476 does not publish its coordinator id: the router reads first answers until it knows both
    ids. From 477 `/v1/info` names it: the ids are known from the first poll, and no answer is read."""
    stack = native_stack(make_stack, emulator_args={c: ["--trino-version", version] for c in ("a", "b")})
    assert harness.wait_for(lambda: weights(stack.envoy) == {"a": 100, "b": 100}), routes(stack.envoy).keys()
    publishes = version == "483"
    if publishes:
        assert harness.wait_for(lambda: not learns(stack.envoy)), "ids published in /v1/info: no learn stream"
    else:
        assert learns(stack.envoy), "no coordinator id known yet: the first answers are read"
    assert "decide" not in str(routes(stack.envoy)["native-default"].get("typed_per_filter_config", {}))

    served = served_by(stack, "warm", 16)
    assert harness.wait_for(lambda: not learns(stack.envoy)), "both ids known: no learn stream any more"
    assert set(served) == {"a", "b"}, served
    log = stack.router.log()
    assert log.count("learned a cluster's coordinator id") == 2, log.count("learned a cluster's coordinator id")
    assert log.count("from its /v1/info") == (2 if publishes else 0), "ids from /v1/info only where published"
    assert "discovered query owner" not in log, "no lookup was needed"
    learn_streams = int(stack.envoy.stats("ext_proc.learn.streams_started").get(
        "http.trino.ext_proc.learn.streams_started", 0))
    if publishes:
        assert learn_streams == 0, stack.envoy.stats("ext_proc")
    else:
        assert learn_streams >= 2, stack.envoy.stats("ext_proc")
    learned = harness.get_json(f"{stack.envoy.admin_url}/config_dump?resource=dynamic_route_configs")
    assert "learned-a" in str(learned) and "learned-b" in str(learned), "follow-ups still go by learned routes"

    # Multi-page queries: every follow-up reaches the cluster that took the new statement.
    sql = "/* emulator: pages=4 rows=2 */ SELECT 1"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: _run(stack, f"paged-{i}", sql), range(12)))
    for rows in results:
        assert len(rows) == 8 and len({r[0] for r in rows}) == 1, rows
    assert decisions(stack) == 0, "no new statement asked the router"
    later = int(stack.envoy.stats("ext_proc.learn.streams_started").get(
        "http.trino.ext_proc.learn.streams_started", 0))
    assert later == learn_streams, f"{later - learn_streams} learn streams after both ids were known"
    stack.assert_alive()


def test_drain_and_disable_take_a_cluster_out_with_no_failed_query(make_stack):
    stack = native_stack(make_stack)
    assert harness.wait_for(lambda: weights(stack.envoy) == {"a": 100, "b": 100})
    failures: list[str] = []
    seen: list[tuple[float, str]] = []
    stop = threading.Event()

    def load(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                rows = _run(stack, f"bg{n}-{i}", "/* emulator: pages=2 delay_ms=50 */ SELECT 1")
                seen.append((time.monotonic(), rows[0][0]))
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failures.append(repr(e))

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        stack.router.admin("drain", "a", token=TOKEN)
        drained_at = time.monotonic()
        assert harness.wait_for(lambda: weights(stack.envoy) == {"b": 100}, timeout=2.0), weights(stack.envoy)
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    late_on_a = [c for at, c in seen if at > drained_at + 1.0 and c == "a"]
    assert not failures, failures
    assert {c for _, c in seen if _ < drained_at} == {"a", "b"}, "both took queries before the drain"
    assert not late_on_a, f"{len(late_on_a)} queries reached the drained cluster"
    waited = stack.router.admin("drain", "a", "--wait", "--timeout", "20s", token=TOKEN)
    assert waited.returncode == 0, waited.stdout + waited.stderr

    stack.router.admin("enable", "a", token=TOKEN)
    assert harness.wait_for(lambda: weights(stack.envoy) == {"a": 100, "b": 100}, timeout=2.0)
    stack.router.admin("disable", "b", token=TOKEN)
    assert harness.wait_for(lambda: weights(stack.envoy) == {"a": 100}, timeout=2.0)
    assert set(served_by(stack, "after", 8)) == {"a"}
    stack.router.admin("disable", "a", token=TOKEN)
    assert harness.wait_for(lambda: "weighted_clusters" not in routes(stack.envoy)["native-default"]["route"])
    # No cluster can take it: the router answers (503, Retry-After); nothing was submitted.
    resp = harness.http_request("POST", f"{stack.envoy.url}/v1/statement", "SELECT 1", {"X-Trino-User": "x"})
    assert resp.status == 503, (resp.status, resp.text[:300])
    stack.assert_alive()


def test_an_unhealthy_or_loaded_cluster_gets_no_new_queries(make_stack):
    stack = native_stack(
        make_stack,
        extra={"coordinator_auth": {"user": "router", "password": UI_PASSWORD}},
        emulator_args={name: ["--ui-password", UI_PASSWORD] for name in ("a", "b")},
    )
    a = stack.emulators["a"]
    assert harness.wait_for(lambda: weights(stack.envoy) == {"a": 100, "b": 100})

    a.set_starting(True)
    assert harness.wait_for(lambda: weights(stack.envoy) == {"b": 100}, timeout=3.0), weights(stack.envoy)
    assert set(served_by(stack, "starting", 8)) == {"b"}
    a.set_starting(False)
    assert harness.wait_for(lambda: weights(stack.envoy) == {"a": 100, "b": 100}, timeout=5.0)

    # 20 long queries straight to a's coordinator (not through Envoy): the router reads a's load.
    def long_query(i: int) -> None:
        conn = trino.dbapi.connect(host="127.0.0.1", port=a.port, user=f"long-{i}", http_scheme="http")
        try:
            cur = conn.cursor()
            cur.execute("/* emulator: pages=8 delay_ms=500 */ SELECT 1")
            cur.fetchall()
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        running = [pool.submit(long_query, i) for i in range(20)]
        loaded = harness.wait_for(lambda: weights(stack.envoy) == {"b": 100}, timeout=3.0)
        during = served_by(stack, "loaded", 8) if loaded else []
        for f in running:
            f.result(timeout=30)
    assert loaded, f"a runs 20 queries, b none: {weights(stack.envoy)}"
    assert set(during) == {"b"}, during
    assert harness.wait_for(lambda: weights(stack.envoy) == {"a": 100, "b": 100}, timeout=5.0)
    stack.assert_alive()


def test_header_rules_and_routing_groups_are_routes(make_stack):
    rules = [{"name": "team-etl", "match": {"headers.x-team": ["etl", "batch"]}, "group": "etl",
              "set_headers": {"x-trino-client-tags": "native-etl"}}]
    stack = native_stack(
        make_stack, clusters=(("a", "adhoc"), ("b", "adhoc"), ("etl", "etl"), ("v", "vault")),
        extra={"rules": rules, "groups": [{"name": "vault", "allow": {"users": ["alice"]}}]},
    )
    assert harness.wait_for(lambda: weights(stack.envoy, "native-rule-0") == {"etl": 100})
    assert weights(stack.envoy, "native-group-2") == {"etl": 100}, routes(stack.envoy).keys()

    assert set(served_by(stack, "rule", 6, http_headers={"X-Team": "batch"})) == {"etl"}
    assert set(served_by(stack, "group", 6, http_headers={"X-Trino-Routing-Group": "etl"})) == {"etl"}
    assert set(served_by(stack, "plain", 8, http_headers={"X-Team": "web"})) == {"a", "b"}
    tagged = [q for q in stack.emulators["etl"].queries() if "native-etl" in str(q)]
    assert tagged, "the rule's set_headers reached the coordinator"
    assert decisions(stack) == 0, "all placed by Envoy"

    # What Envoy cannot check goes to the router: a group it has no route for, a restricted group (the
    # router checks who asks; not alice: the default group).
    before = decisions(stack)
    assert set(served_by(stack, "other", 2, http_headers={"X-Trino-Routing-Group": "ETL"})) <= {"a", "b"}
    assert set(served_by(stack, "vault", 2, http_headers={"X-Trino-Routing-Group": "vault"})) <= {"a", "b"}
    assert decisions(stack) == before + 4
    stack.assert_alive()


def test_configs_envoy_cannot_express_still_go_through_the_router(make_stack):
    sql_rule = [{"name": "inserts", "match": {"statement.kind": "insert"}, "group": "etl"}]
    stack = native_stack(make_stack, clusters=(("a", "adhoc"), ("etl", "etl")), extra={"rules": sql_rule})
    assert harness.wait_for(lambda: "new-statement" in routes(stack.envoy))
    assert not [n for n in routes(stack.envoy) if n.startswith("native-")]
    assert "rule `inserts` tests what Envoy cannot match" in stack.router.log()
    assert set(served_by(stack, "sql", 4)) == {"a"}
    assert _run(stack, "ins", "INSERT INTO iceberg.a.b VALUES 1")[0][0] == "etl"
    assert decisions(stack) == 5

    kill = native_stack(make_stack, extra={"placement_from_sql": True})
    assert harness.wait_for(lambda: "new-statement" in routes(kill.envoy))
    assert not [n for n in routes(kill.envoy) if n.startswith("native-")]
    served_by(kill, "kq", 2)
    assert decisions(kill) == 2


def test_static_routes_leave_every_new_statement_to_the_router(envoy_bin):
    """``envoy-config --static-routes`` writes the routes into the bootstrap: no RDS, so no native routes;
    under ``new_query_routing: envoy`` the router still decides every new statement, drains included."""
    emulators = {name: harness.start_emulator(name) for name in ("a", "b")}
    try:
        doc = harness.router_config_doc([(n, e.url, "adhoc") for n, e in emulators.items()], extra=NATIVE)
        path = harness.write_yaml(harness.scratch_dir("router-config") / "router.yaml", doc)
        router = harness.start_router(path, env={"RUST_LOG": "trino_router=debug"})
        envoy = harness.start_envoy(harness.render_envoy_config(path, router.grpc_addr, static_routes=True))
        stack = harness.Stack(emulators=emulators, groups={"a": "adhoc", "b": "adhoc"}, router=router,
                              envoy=envoy, config_path=path, config_doc=doc)
        try:
            assert set(served_by(stack, "static", 8)) == {"a", "b"}
            assert decisions(stack) == 8
            router.admin("drain", "a", token=TOKEN)
            assert set(served_by(stack, "drained", 8)) == {"b"}
            stack.assert_alive()
        finally:
            stack.stop()
    finally:
        for emu in emulators.values():
            emu.stop()


def test_every_replica_serves_zero_weight_for_a_cluster_drained_through_another():
    """Two replicas (``fleet.peers``) behind Envoy; the drain is given to the replica that does not hold
    Envoy's RDS stream, or to either: every replica's routes give the drained cluster no weight, so
    whichever serves Envoy's routes, no new query goes there."""
    import test_replicas

    try:
        fleet = test_replicas.start_fleet([("a", "adhoc"), ("b", "adhoc")], replicas=2,
                                          extra={"new_query_routing": "envoy"})
        stack = fleet.stack
        assert harness.wait_for(lambda: weights(stack.envoy) == {"a": 100, "b": 100}, timeout=10)
        fleet.routers[1].admin("drain", "a", token=test_replicas.TOKEN)
        assert harness.wait_for(lambda: weights(stack.envoy) == {"b": 100}, timeout=5.0), weights(stack.envoy)
        for router in fleet.routers:
            assert harness.wait_for(lambda: "native-default: b=100" in router.log().rsplit("publishing routes", 1)[-1],
                                    timeout=5.0), f"{router.proc.name} does not publish the drain"
        assert set(served_by(stack, "fleet", 8)) == {"b"}
        stack.assert_alive()
    finally:
        while test_replicas._DNS:
            test_replicas._DNS.pop().stop()
