"""The router's own surface, hardened (issue 16, items 2–6), with the real Envoy and the real client:

- fallback chains: ``check`` follows every chain (loops, groups that can place nothing: every problem at
  once); a default group two fallbacks away from its clusters places new queries and anything else;
- weak admin tokens (``change-me``, short ones) are refused at start with a clear error;
- one 5xx that Envoy made itself (a hung coordinator's new query timing out) ejects no cluster; three in
  a short while do;
- router ↔ coordinators cut (every poll times out, none refused): new queries keep flowing, counted as
  doubtful placements;
- made-up ids of a draining cluster's coordinator, polled through Envoy, do not hold ``drain --wait``;
- a new statement's SQL larger than tonic's default 4 MiB message passes through the router.

Forged learn streams (no Envoy) are tested at the server tier, ``tests/server.rs``; the ports' limits
under 2,000 idle connections in ``test_port_limits.py``.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests

import harness

TOKEN = "e2e-security-admin-token-7b21"


def health() -> dict:
    return {"interval": "200ms", "timeout": "300ms", "healthy_threshold": 2, "unhealthy_threshold": 2}


def metric(router: harness.Router, name: str, **labels: str) -> float | None:
    """One sample of ``trino_router_NAME`` with these labels (the replica label aside)."""
    text = requests.get(router.metrics_url, timeout=5).text
    for line in text.splitlines():
        if not line.startswith(f"trino_router_{name}{{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def check(config_path) -> harness.subprocess.CompletedProcess:
    return harness.run_router_cli("check", "--config", str(config_path))


def test_check_follows_every_fallback_chain(envoy_bin, trino_connect):
    """``front`` → ``middle`` → ``back``: only ``back`` has clusters. ``check`` accepts it and the router
    places a new query and a non-statement request there (before: every new query refused, and
    ``/v1/info`` hit a panic). A loop and a group that can place nothing are rejected together."""
    groups = [{"name": "front", "fallback": ["middle"]}, {"name": "middle", "fallback": ["back"]}]
    stack = harness.start_stack(clusters=(("trino-back", "back"),), default_group="front",
                                extra_config={"groups": groups})
    try:
        assert check(stack.config_path).returncode == 0
        conn = trino_connect(target=stack)
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchall()[0][0] == "trino-back", "the emulator names itself in the first column"
        info = requests.get(f"{stack.url}/v1/info", timeout=10)
        assert info.status_code == 200, info.text
        assert stack.upstream_requests()["trino-back"] >= 2
        stack.assert_alive()
        assert "panicked" not in stack.router.log()
    finally:
        stack.stop()

    looping = harness.router_config_doc(
        [("trino-x", "http://127.0.0.1:9", "x")], default_group="a",
        extra={"groups": [{"name": "a", "fallback": ["b"]}, {"name": "b", "fallback": ["a"]},
                          {"name": "lonely"}]},
    )
    path = harness.write_yaml(harness.scratch_dir("chains") / "router.yaml", looping)
    out = check(path)
    assert out.returncode == 1, out
    problems = [line for line in out.stderr.splitlines() if "router.yaml: field" in line]
    wanted = ["`groups[0].fallback`: the fallback chain `a → b → a` loops back on itself",
              "`groups[0]`: group `a` has no clusters",
              "`groups[1]`: group `b` has no clusters",
              "`groups[2]`: group `lonely` has no clusters and no fallback"]
    for want in wanted:
        assert any(want in p for p in problems), (want, out.stderr)


@pytest.mark.parametrize("how", ["file", "env", "short"])
def test_weak_admin_tokens_are_refused_at_start(envoy_bin, how):
    extra = {"admin": {"token": "change-me"}} if how == "file" else {}
    if how == "short":
        extra = {"admin": {"token": "abc123"}}
    doc = harness.router_config_doc([("trino-a", "http://127.0.0.1:9", "adhoc")], extra=extra)
    path = harness.write_yaml(harness.scratch_dir("weak-token") / "router.yaml", doc)
    env = {"TRINO_ROUTER_ADMIN_TOKEN": "change-me"} if how == "env" else {}
    out = harness.run_router_cli("serve", "--config", str(path), env=env, timeout=30)
    assert out.returncode == 1, out
    assert "listening on" not in out.stdout
    want = "too short" if how == "short" else "`change-me` is an example value, not a secret"
    assert "admin.token" in out.stderr and want in out.stderr, out.stderr
    if how == "env":
        assert "TRINO_ROUTER_ADMIN_TOKEN" in out.stderr, out.stderr


def _post_statement(stack: harness.Stack, group: str, sql: str = "SELECT 1", timeout: float = 30):
    return requests.post(f"{stack.url}/v1/statement", data=sql.encode(), timeout=timeout,
                         headers={"X-Trino-User": "e2e", "X-Trino-Routing-Group": group})


def test_one_envoy_made_5xx_does_not_eject_a_cluster(make_stack):
    """A hung coordinator's new query times out in Envoy (504, made by Envoy): once is a suspicion (the
    router polls; the coordinator answers polls), not an ejection; three within 10 s eject it."""
    stack = make_stack(
        clusters=(("trino-a", "solo"), ("trino-b", "adhoc")),
        extra_config={"health": health(), "new_query_timeout": "1s", "metrics_listen": "127.0.0.1:0"},
    )
    emulator = stack.emulators["trino-a"]
    emulator.set_fault("hang", scope="new_queries")
    first = _post_statement(stack, "solo")
    assert first.status_code == 504, first.text
    assert "could not be delivered" not in stack.router.log()
    assert metric(stack.router, "cluster_accepts_new_queries", cluster="trino-a") == 1
    for _ in range(2):
        assert _post_statement(stack, "solo").status_code == 504
    harness.wait_for(lambda: "a new query could not be delivered" in stack.router.log(), timeout=5)
    assert re.search(r"a new query could not be delivered cluster=\"?trino-a", stack.router.log()), \
        stack.router.log()[-2000:]
    emulator.set_fault("none")
    # Polls bring it back; a query of its group runs there again.
    harness.wait_for(lambda: metric(stack.router, "cluster_accepts_new_queries", cluster="trino-a") == 1)
    before = stack.upstream_requests()["trino-a"]
    rows = harness.run_query(stack, "e2e", "SELECT 1", http_headers={"X-Trino-Routing-Group": "solo"})
    assert rows[0][0] == "trino-a"
    assert stack.upstream_requests()["trino-a"] > before


def test_router_cut_from_the_coordinators_keeps_new_queries_flowing(envoy_bin):
    """The router's polls all time out (its config points at an address that accepts and never answers,
    Envoy's at the real coordinators): every cluster looks unhealthy, none is known down. New queries
    still run (before: 100% 503), each counted as a doubtful placement."""
    import socket

    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(512)  # accepted by the kernel, never answered
    hole = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
    emulators = {n: harness.start_emulator(n, forwarded=harness.EMULATOR_FORWARDED_DEFAULT)
                 for n in ("trino-a", "trino-b")}
    processes = [e.proc for e in emulators.values()]
    try:
        extra = {"health": health(), "metrics_listen": "127.0.0.1:0"}
        scratch = harness.scratch_dir("cut")
        real = harness.write_router_config(scratch / "envoy-view.yaml",
                                           [(n, e.url, "adhoc") for n, e in emulators.items()], extra=extra)
        cut = harness.write_router_config(scratch / "router.yaml",
                                          [(n, hole, "adhoc") for n in emulators], extra=extra)
        router = harness.start_router(cut)
        processes.append(router.proc)
        envoy = harness.start_envoy(harness.render_envoy_config(real, router.grpc_addr))
        processes.append(envoy.proc)
        stack = harness.Stack(emulators=emulators, groups={n: "adhoc" for n in emulators}, router=router,
                              envoy=envoy, config_path=cut)
        unhealthy = lambda: all(  # noqa: E731 - unhealthy: taking no new queries by the router's judgement
            metric(router, "cluster_accepts_new_queries", cluster=n) == 0 for n in emulators)
        assert harness.wait_for(unhealthy, timeout=15), router.log()[-3000:]
        for _ in range(6):
            assert harness.run_query(stack, "e2e", "SELECT 1")[0][0] in emulators
        doubtful = metric(router, "safeguards_total", outcome="doubtful_placement")
        assert doubtful is not None and doubtful >= 6, doubtful
        assert sum(stack.upstream_requests().values()) >= 6
    finally:
        for proc in processes:
            proc.stop()
        blackhole.close()


def test_made_up_ids_do_not_hold_a_drain(make_stack):
    """A client polls made-up query ids carrying the draining cluster's coordinator id, through Envoy,
    the whole time: they never count as in flight (its coordinator does not know them), so
    ``drain --wait`` returns (before: never)."""
    stack = make_stack(
        clusters=(("trino-a", "adhoc"), ("trino-b", "etl")),
        extra_config={"health": health(), "admin": {"token": TOKEN}},
        emulator_args={"trino-a": ["--coordinator-id", "aaaaa"]},
    )
    assert harness.run_query(stack, "e2e", "SELECT 1")[0][0] == "trino-a"
    assert stack.router.admin("drain", "trino-a", token=TOKEN).returncode == 0
    stop = threading.Event()
    answers: list[int] = []

    def poll_fakes():
        n = 0
        while not stop.is_set():
            n += 1
            fake = f"20260101_120000_{n % 500:05d}_aaaaa"
            try:
                r = requests.get(f"{stack.url}/v1/statement/executing/{fake}/y/1", timeout=5,
                                 headers={"X-Trino-User": "mallory"})
                answers.append(r.status_code)
            except requests.RequestException:
                answers.append(0)
            time.sleep(0.01)

    poller = threading.Thread(target=poll_fakes, daemon=True)
    poller.start()
    try:
        started = time.monotonic()
        waited = stack.router.admin("drain", "trino-a", "--wait", "--timeout", "40s", token=TOKEN, timeout=60)
        took = time.monotonic() - started
    finally:
        stop.set()
        poller.join(10)
    print(f"drain --wait returned after {took:.1f}s while {len(answers)} fake polls were made")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert len(answers) > 50, "the fake polls ran"


def test_a_statement_larger_than_four_mib_passes(make_stack):
    """tonic reads at most 4 MiB per message by default; the router reads up to 9 MiB (Envoy buffers up
    to 8 MiB), so a 5 MiB statement whose SQL the rules need is decided, and reaches its coordinator."""
    rules = [{"name": "writes", "when": 'statement.kind == "insert"', "group": "etl"}]
    stack = make_stack(clusters=(("trino-a", "adhoc"), ("trino-etl", "etl")), extra_config={"rules": rules})
    sql = "SELECT 1 -- " + "x" * (5 * 1024 * 1024)
    answer = _post_statement(stack, "adhoc", sql)
    assert answer.status_code == 200, answer.text[:500]
    assert "id" in answer.json()
    stack.assert_alive()


def test_envoy_carries_the_envoy_auth_token(make_stack):
    """With ``envoy_auth``, ``envoy-config`` writes the token into both filters' gRPC metadata: queries
    run (decided and learned: their follow-ups are placed), and no stream was refused."""
    token = "e2e-envoy-auth-token-0c4f9a"
    stack = make_stack(extra_config={"envoy_auth": {"token": token}, "metrics_listen": "127.0.0.1:0",
                                     "query_log": {"query_ids": True}})
    assert token in stack.envoy.bootstrap_path.read_text()
    for _ in range(3):
        assert harness.run_query(stack, "e2e", "SELECT 1")[0][0] in stack.emulators
    assert metric(stack.router, "safeguards_total", outcome="unauthenticated_stream") == 0
    assert metric(stack.router, "ext_proc_streams_total", role="learn") >= 3
    assert re.search(r'new query query_id="\d{8}_\d{6}_\d{5}_\w{5}"', stack.router.log()), "learned ids"
