"""End-to-end acceptance of one truth across router replicas (issue 17): the operator's say (drain, disable,
enable) shared by every replica and kept across restarts, with the real Envoy, two and three routers with
``fleet.peers``, strict emulators and the real ``trino`` client.

The replicas listen on one port of 127.0.0.1, 127.0.0.2, ... and Envoy finds them as it would behind a
Kubernetes headless Service: ``envoy-config --router trino-router-headless:PORT`` (a STRICT_DNS cluster),
resolved by a DNS server of the test's that answers every replica's address; each is its own
health-checked endpoint. The replicas name each other by address in ``fleet.peers``.

Where each new query ran is counted on the emulators (every statement carries a ``/* ha-... */`` tag), and
which replica decided it from each router's own log line (``new query``). Each test prints its figures.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
import yaml

import harness
from test_affinity import router_hosts
from test_deploy import _DnsServer
from test_ha import (TOKEN, Load, health, parse_fleet_table, phase_table, sleep_until, tags_on,
                     wait_until)

#: Queries of about 0.1 s: many per second, so a misroute shows.
QUICK = "/* emulator: pages=2 delay_ms=20 */ SELECT 1"
#: Queries of about 3 s: in flight through a drain.
LONG = "/* emulator: pages=8 delay_ms=400 */ SELECT 1"
#: URL-carried placement: every follow-up names its cluster, so no replica looks a query up. For the tests
#: whose subject is where new queries go.
URL_PLACED = {"url_prefix": "/_trino"}
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z\s")


# --------------------------------------------------------------------------------------------------
# a fleet: N routers on fixed ports that name each other as peers, each with its own state file


@dataclass
class Fleet:
    stack: harness.Stack
    routers: list[harness.Router]
    #: Each router's state file (``TRINO_ROUTER_STATE_FILE``).
    state_files: list


#: The DNS servers the tests started (stopped after each test).
_DNS: list[_DnsServer] = []


@pytest.fixture(autouse=True)
def _stop_dns_servers():
    yield
    while _DNS:
        _DNS.pop().stop()


def envoy_for(config_path, port: int, replicas: int) -> harness.Envoy:
    """Envoy from ``envoy-config --router trino-router-headless:PORT``, resolving the name with a DNS
    server of the test's that answers 127.0.0.1 ... 127.0.0.N (the only change to the bootstrap)."""
    dns = _DnsServer("trino-router-headless", [f"127.0.0.{i + 1}" for i in range(replicas)])
    _DNS.append(dns)
    text = harness.render_envoy_config(config_path, f"127.0.0.1:{port}", replicas=[f"trino-router-headless:{port}"])
    bootstrap = yaml.safe_load(text)
    router_cluster = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "trino-router")
    assert router_cluster["type"] == "STRICT_DNS", router_cluster
    router_cluster["typed_dns_resolver_config"] = {"name": "envoy.network.dns_resolver.cares", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
        "resolvers": [{"socket_address": {"address": "127.0.0.1", "port_value": dns.port}}],
        "use_resolvers_as_fallback": False, "dns_resolver_options": {"no_default_search_domain": True}}}
    return harness.start_envoy(yaml.safe_dump(bootstrap))


def start_fleet(clusters: list[tuple[str, str]], replicas: int, running: int | None = None,
                state_files: bool = True, extra: dict | None = None) -> Fleet:
    """Emulators, ``replicas`` router addresses (127.0.0.N:PORT) in ``fleet.peers`` and behind Envoy's
    name, of which the first ``running`` are started (``router-0``, ``router-1``, ...), and Envoy.
    ``extra``: more top-level config. Processes are stopped by the per-test reaper."""
    harness.require_trino_client()
    running = replicas if running is None else running
    emulators = {name: harness.start_emulator(name) for name, _ in clusters}
    groups = dict(clusters)
    port = harness.free_port()
    addrs = [f"127.0.0.{i + 1}:{port}" for i in range(replicas)]
    work = harness.scratch_dir("fleet")
    doc = harness.router_config_doc(
        [(n, emulators[n].url, groups[n]) for n in emulators], listen=addrs[0],
        extra={"health": health(), "admin": {"token": TOKEN},
               "fleet": {"peers": addrs, "sync_interval": "1s", "startup_wait": "5s"}, **(extra or {})})
    config_path = harness.write_yaml(work / "router.yaml", doc)
    files = [work / f"router-{i}" / "operator-state.json" for i in range(replicas)]
    routers = [_start_router(config_path, addrs[i], i, files[i] if state_files else None) for i in range(running)]
    envoy = envoy_for(config_path, port, replicas)
    stack = harness.Stack(emulators=emulators, groups=groups, router=routers[0], envoy=envoy,
                          config_path=config_path, config_doc=doc)
    fleet = Fleet(stack, routers, files)
    wait_until(lambda: len(healthy_routers(stack)) == running, 15, f"Envoy to see {running} healthy router(s)")
    return fleet


def _start_router(config_path, addr: str, index: int, state_file) -> harness.Router:
    env = {"TRINO_ROUTER_REPLICA": f"router-{index}"}
    if state_file is not None:
        env["TRINO_ROUTER_STATE_FILE"] = str(state_file)
    return harness.start_router(config_path, env=env, listen=addr, name=f"router-{index}")


def wait_ready(router: harness.Router, timeout: float = 15.0) -> None:
    """Until the router logged that it reports SERVING (first health round done, operator state settled)."""
    wait_until(lambda: log_times(router, ": ready"), timeout, f"{router.proc.name} to report SERVING")


def healthy_routers(stack: harness.Stack) -> list[str]:
    return [addr for addr, stats in router_hosts(stack).items() if stats.get("health_flags") == "healthy"]


def local_view(router: harness.Router) -> dict[str, dict[str, str]]:
    """One replica's own rows (``admin clusters --local``): ``{cluster: row}``."""
    out = router.admin("clusters", "--local", token=TOKEN)
    assert out.returncode == 0, out.stderr
    rows, _ = parse_fleet_table(out.stdout)
    return {cluster: row for (_, cluster), row in rows.items()}


def admin_ok(router: harness.Router, *args: str) -> str:
    out = router.admin(*args, token=TOKEN)
    assert out.returncode == 0, f"admin {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def log_times(router: harness.Router, pattern: str) -> list[float]:
    """Unix times of the router's log lines matching ``pattern``."""
    times = []
    for line in router.log().splitlines():
        match = _LOG_TIME.match(line)
        if match and re.search(pattern, line):
            times.append(datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc).timestamp())
    return times


def decided_by(routers: list[harness.Router], since_wall: float, cluster: str | None = None) -> dict[str, int]:
    """New queries each replica decided (its ``new query`` log lines) since ``since_wall``."""
    pattern = r"new query.*cluster=" + (re.escape(cluster) + r"\b" if cluster else "")
    return {r.proc.name: sum(t >= since_wall for t in log_times(r, pattern)) for r in routers}


def reached_after(emu: harness.Emulator, outcomes, moment: float) -> list:
    """The queries submitted at or after ``moment`` (monotonic) that reached ``emu``."""
    on = tags_on(emu)
    return [o for o in outcomes if o.submitted >= moment and on[o.tag]]


def run_quick(stack: harness.Stack, name: str, count: int) -> list:
    return Load(stack, name, threads=4, sql=QUICK, per_thread=-(-count // 4)).start().join(60)


def failures(outcomes) -> list:
    """The failed queries."""
    return [o for o in outcomes if not o.ok]


# --------------------------------------------------------------------------------------------------
# 1. drain through one of two replicas: both stop sending new queries; drain --wait counts both


def test_drain_through_one_replica_reaches_every_replica_and_wait_counts_them_all():
    """Two replicas behind Envoy, both deciding; long queries run on ``a``, quick ones keep coming. ``admin
    drain a --wait`` through router-0 only:

    - from 2 s after the command, 0 new queries reach ``a`` (counted on its emulator), while both replicas
      keep deciding new queries (their log lines);
    - ``drain --wait`` returns only after the last long query on ``a`` finished, and only when no replica
      counts a query in flight there (each replica's own view sampled meanwhile with ``clusters --local``).
    """
    fleet = start_fleet([("a", "adhoc"), ("b", "adhoc")], replicas=2)
    stack, (r0, r1) = fleet.stack, fleet.routers
    a = stack.emulators["a"]
    long = Load(stack, "dr-long", threads=6, sql=LONG, per_thread=1).start()
    wait_until(lambda: sum(t.startswith("ha-dr-long") for t in tags_on(a)) >= 2, 15, "long queries on a")
    quick = Load(stack, "dr-quick", threads=8, sql=QUICK).start()
    samples: list[tuple[float, str, int, str]] = []  # (asked at, replica, in flight on a, operator)
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            for router in (r0, r1):
                asked = time.monotonic()
                try:
                    row = local_view(router)["a"]
                except AssertionError:
                    continue
                samples.append((asked, router.proc.name, int(row["IN_FLIGHT"]), row["OPERATOR"]))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    box: dict = {}
    try:
        sleep_until(time.monotonic() + 1.5)
        t_cmd, cmd_wall = time.monotonic(), time.time()
        sampler.start()

        def drain():
            box["result"] = r0.admin("drain", "a", "--wait", "--timeout", "60s", "--reason", "upgrade to 477",
                                     token=TOKEN, timeout=120)
            box["ended"] = time.monotonic()

        waiter = threading.Thread(target=drain, daemon=True)
        waiter.start()
        sleep_until(t_cmd + 6.0)
    finally:
        quick_outcomes = quick.stop()
    long_outcomes = long.join(60)
    waiter.join(90)
    sampling.set()
    sampler.join(10)

    outcomes = quick_outcomes + long_outcomes
    failed = failures(outcomes)
    table = phase_table("drain a through router-0 (2 replicas)", outcomes,
                        [("before", 0.0), ("command .. +2 s", t_cmd), ("from +2 s", t_cmd + 2.0)])
    late = reached_after(a, quick_outcomes, t_cmd + 2.0)
    after_cmd = [o for o in quick_outcomes if o.submitted >= t_cmd + 2.0]
    seen_r1 = log_times(r1, r'operator changed cluster state.*cluster="?a"?.*to=draining')
    decided = decided_by([r0, r1], cmd_wall + 2.0)
    on_a_after = decided_by([r0, r1], cmd_wall + 2.0, "a")
    result = box.get("result")
    counted = {name: max((n for (_, r, n, _) in samples if r == name), default=0) for name in ("router-0", "router-1")}
    last_counted = max((t for (t, _, n, _) in samples if n > 0), default=0.0)
    last_long_end = max((o.ended for o in long_outcomes if o.cluster == "a"), default=0.0)
    print(f"  router-1 applied the drain {seen_r1[0] - cmd_wall:+.3f} s after the command" if seen_r1 else
          "  router-1 never logged the drain")
    print(f"  from 2 s after the command: {len(after_cmd)} new queries, {len(late)} reached a; decided per "
          f"replica {decided}, of them to a {on_a_after}")
    print(f"  largest in-flight count on a per replica while draining: {counted}")
    if result is not None:
        print(f"  drain --wait returned {box['ended'] - t_cmd:.2f} s after the command, "
              f"{box['ended'] - last_long_end:+.2f} s after the last long query on a ended, "
              f"{box['ended'] - last_counted:+.2f} s after a replica last counted a query there:\n    "
              + (result.stdout + result.stderr).strip().replace("\n", "\n    "))

    assert not failed, "queries failed:\n" + "\n".join(o.describe() for o in failed)
    assert seen_r1 and seen_r1[0] - cmd_wall < 2.0, "the drain did not reach router-1 within 2 s"
    assert len(after_cmd) >= 20, table
    assert not late, f"new queries reached the drained a from 2 s after the command: {[o.describe() for o in late]}"
    assert all(n > 0 for n in decided.values()), f"a replica decided no new query after the drain: {decided}"
    assert sum(on_a_after.values()) == 0, on_a_after
    assert result is not None and result.returncode == 0, result
    assert "a: drained, no query in flight: safe to stop" in result.stdout, result.stdout
    assert "router-0" in result.stdout and "router-1" in result.stdout, result.stdout
    assert any(o.cluster == "a" for o in long_outcomes), "no long query ran on a: the drain waited for nothing"
    assert box["ended"] > last_long_end, "drain --wait returned before the last query on a finished"
    assert box["ended"] > last_counted, "drain --wait returned while a replica still counted a query on a"
    assert all(n > 0 for n in counted.values()), (
        f"a replica never counted the queries in flight on a: the test did not show the wait needs both: {counted}")
    # The reason travelled with the drain: the fleet table (through router-1) shows it, and both agree.
    rows, notes = parse_fleet_table(admin_ok(r1, "clusters"))
    print("  " + "\n  ".join(notes))
    assert {rows[(r, "a")]["OPERATOR"] for r in ("router-0", "router-1")} == {"drained"}, rows
    assert any(n.startswith("a: draining since") and "router-0" in n and "upgrade to 477" in n for n in notes), notes
    assert not any(n.startswith("DISAGREE") for n in notes), notes


# --------------------------------------------------------------------------------------------------
# 2. restarts: one replica (without its state file: its peer tells it), then every replica (their files)


def test_a_drain_survives_restarting_one_and_then_every_replica():
    """``a`` drained through router-0 (queries URL-placed: :data:`URL_PLACED`). Then:

    1. router-1 is killed, its state file deleted, and started again: it learns the drain from router-0
       before it reports SERVING; 24 new queries through Envoy, 0 on ``a``;
    2. both replicas are killed (SIGKILL) and started again, each with its state file: still drained,
       and 24 new queries through Envoy, 0 on ``a``; enabling ``a`` afterwards reaches both.
    """
    fleet = start_fleet([("a", "adhoc"), ("b", "adhoc")], replicas=2, extra=URL_PLACED)
    stack, routers = fleet.stack, fleet.routers
    a = stack.emulators["a"]
    warm = run_quick(stack, "rs-warm", 8)
    assert {o.cluster for o in warm} == {"a", "b"}, [o.describe() for o in warm]
    admin_ok(routers[0], "drain", "a", "--reason", "maintenance")
    wait_until(lambda: local_view(routers[1])["a"]["OPERATOR"] in ("draining", "drained"), 3, "router-1 to drain a")
    assert fleet.state_files[0].is_file() and fleet.state_files[1].is_file(), fleet.state_files

    # 1. router-1 restarts with no state file: router-0 tells it.
    routers[1].proc.kill()
    fleet.state_files[1].unlink()
    t_restart = time.monotonic()
    routers[1] = harness.restart_router(routers[1])
    wait_ready(routers[1])
    ready = time.monotonic() - t_restart
    wait_until(lambda: len(healthy_routers(stack)) == 2, 10, "Envoy to see both routers healthy")
    assert local_view(routers[1])["a"]["OPERATOR"] in ("draining", "drained"), "restarted router-1 forgot the drain"
    settled = [line for line in routers[1].log().splitlines() if "fleet: operator state settled" in line]
    assert log_times(routers[1], "operator state settled")[0] <= log_times(routers[1], ": ready")[0], (
        "router-1 reported SERVING before it had heard its peer")
    one = run_quick(stack, "rs-one", 24)
    on_a_one = reached_after(a, one, 0.0)
    decided_one = decided_by(routers, 0.0)

    # 2. both replicas killed and started again: each reads its state file.
    for router in routers:
        router.proc.kill()
    t_all = time.monotonic()
    routers[:] = [harness.restart_router(r) for r in routers]
    for router in routers:
        wait_ready(router)
    ready_all = time.monotonic() - t_all
    wait_until(lambda: len(healthy_routers(stack)) == 2, 15, "Envoy to see both restarted routers healthy")
    views = {r.proc.name: local_view(r)["a"]["OPERATOR"] for r in routers}
    every = run_quick(stack, "rs-all", 24)
    on_a_all = reached_after(a, every, 0.0)
    read = [line for r in routers for line in r.log().splitlines() if "read the state file" in line]

    print(f"\nrestart one (no state file): SERVING {ready:.2f} s after the restart began; "
          f"{settled[-1][28:] if settled else 'no settle line'}")
    print(f"  24 queries: {Counter(o.cluster for o in one if o.ok)}, {len(on_a_one)} on a")
    print(f"restart both (SIGKILL): both SERVING {ready_all:.2f} s later; a per replica {views}; "
          f"24 queries: {Counter(o.cluster for o in every if o.ok)}, {len(on_a_all)} on a")
    print("  " + "\n  ".join(line[28:] for line in read))

    failed = failures(one + every)
    assert not failed, "queries failed:\n" + "\n".join(o.describe() for o in failed)
    assert settled and "from a settled peer" in settled[-1], settled
    assert not on_a_one, [o.describe() for o in on_a_one]
    assert set(views.values()) <= {"draining", "drained"}, views
    assert not on_a_all, [o.describe() for o in on_a_all]
    assert len(read) == 2, read

    # The say moves on from there: enable a through router-1; both take it, new queries reach a again.
    enabled = admin_ok(routers[1], "enable", "a")
    assert "a: active" in enabled and "router-0" in enabled, enabled
    assert local_view(routers[0])["a"]["OPERATOR"] == "active"
    back = run_quick(stack, "rs-back", 16)
    assert "a" in {o.cluster for o in back if o.ok}, [o.describe() for o in back]
    assert not failures(back), "queries failed:\n" + "\n".join(o.describe() for o in failures(back))


# --------------------------------------------------------------------------------------------------
# 3. three replicas: one starts after the drain


def test_a_replica_started_after_the_drain_knows_it_before_it_serves():
    """Three replica addresses in ``fleet.peers`` and behind Envoy's name; two run (queries URL-placed:
    :data:`URL_PLACED`). ``a`` is drained (and ``b``
    disabled) through router-1. router-2 starts afterwards with no state file: it reports SERVING only
    once its peers told it (its log), shows both in its own view, and decides new queries without
    sending any to ``a`` or ``b``."""
    fleet = start_fleet([("a", "adhoc"), ("b", "adhoc"), ("c", "adhoc")], replicas=3, running=2, extra=URL_PLACED)
    stack, routers = fleet.stack, fleet.routers
    admin_ok(routers[1], "drain", "a")
    admin_ok(routers[1], "disable", "b", "--reason", "standby")
    peers = stack.config_doc["fleet"]["peers"]
    hosts = {addr for addr in router_hosts(stack) if addr[:1].isdigit()}
    assert hosts == set(peers), f"Envoy resolves every replica's address: {hosts}"
    t_start, start_wall = time.monotonic(), time.time()
    routers.append(_start_router(stack.config_path, peers[2], 2, fleet.state_files[2]))
    wait_ready(routers[2])
    serving = time.monotonic() - t_start
    wait_until(lambda: len(healthy_routers(stack)) == 3, 10, "Envoy to see three healthy routers")
    view = local_view(routers[2])
    settled = log_times(routers[2], "operator state settled")
    ready = log_times(routers[2], ": ready")
    outcomes = run_quick(stack, "late", 48)
    decided = decided_by(routers, start_wall)
    where = Counter(o.cluster for o in outcomes if o.ok)
    rows, notes = parse_fleet_table(admin_ok(routers[2], "clusters"))
    print(f"\nrouter-2 started after the drain: SERVING {serving:.2f} s after it started; own view "
          f"a={view['a']['OPERATOR']} b={view['b']['OPERATOR']}; 48 queries: {dict(where)}; decided per replica "
          f"{decided}")
    print("  " + "\n  ".join(notes))

    failed = failures(outcomes)
    assert not failed, "queries failed:\n" + "\n".join(o.describe() for o in failed)
    assert view["a"]["OPERATOR"] in ("draining", "drained") and view["b"]["OPERATOR"] == "disabled", view
    assert settled and ready and settled[0] <= ready[0], "router-2 was ready before it settled"
    reached = {name: len(reached_after(stack.emulators[name], outcomes, 0.0)) for name in ("a", "b")}
    assert reached == {"a": 0, "b": 0}, f"new queries reached the drained a or the disabled b: {reached}"
    assert set(where) <= {"c"}, where
    assert decided["router-2"] > 0, f"router-2 decided nothing: {decided}"
    assert {replica for replica, _ in rows} == {"router-0", "router-1", "router-2"}, rows
    assert not any(n.startswith(("DISAGREE", "UNREACHABLE", "STARTING")) for n in notes), notes
    assert any(n.startswith("b: disabled since") and "standby" in n for n in notes), notes


# --------------------------------------------------------------------------------------------------
# 4. the replica holding Envoy's RDS stream paused under load


def test_pausing_the_replica_that_holds_envoys_routes_fails_no_new_query():
    """Envoy takes its routes (RDS) from one replica. That one is SIGSTOPped for 6 s while 8 client threads
    submit queries, and ``b`` is drained through the other one meanwhile. URL-carried placement
    (``url_prefix``): follow-ups name their cluster, so no replica has to look a query up (a replica that
    has not learned a coordinator's id yet would have to), and
    what is measured is the new queries:

    - 0 failed new queries submitted from Envoy's health-check interval (1 s) after the pause on;
    - from 2 s after the drain, 0 new queries reach ``b`` (the live replica decides every new query;
      Envoy's routes from the paused one are stale, which only ever sends follow-ups to their owner);
    - once resumed, the paused replica has the drain too (it pulls it within a sync interval).
    """
    fleet = start_fleet([("a", "adhoc"), ("b", "adhoc")], replicas=2, extra=URL_PLACED)
    stack, routers = fleet.stack, fleet.routers
    by_addr = {r.grpc_addr: r for r in routers}
    hosts = router_hosts(stack)
    holders = [addr for addr, stats in hosts.items() if int(stats.get("rq_active", "0")) >= 1]
    assert len(holders) == 1, f"expected one router holding Envoy's RDS stream: {hosts}"
    victim = by_addr[holders[0]]
    live = next(r for r in routers if r is not victim)
    load = Load(stack, "pause", threads=8, sql=QUICK).start()
    try:
        sleep_until(time.monotonic() + 2.0)
        t_pause = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGSTOP)
        sleep_until(t_pause + 2.0)
        t_drain = time.monotonic()
        admin_ok(live, "drain", "b")
        sleep_until(t_pause + 6.0)
        os.kill(victim.proc.pid, signal.SIGCONT)
        t_resume = time.monotonic()
        sleep_until(t_resume + 2.0)
    finally:
        outcomes = load.stop()
    resumed = wait_until(lambda: local_view(victim)["b"]["OPERATOR"] in ("draining", "drained"), 5,
                         "the resumed replica to have the drain")
    table = phase_table(f"{victim.proc.name} (RDS) paused 6 s; b drained through {live.proc.name}", outcomes,
                        [("before", 0.0), ("pause .. +1 s", t_pause), ("pause +1 s .. drain", t_pause + 1.0),
                         ("drain .. +2 s", t_drain), ("drain +2 s .. resume", t_drain + 2.0),
                         ("after resume", t_resume)])
    failed_after = [o for o in outcomes if not o.ok and o.submitted >= t_pause + 1.0]
    failed_first = [o for o in outcomes if not o.ok and t_pause <= o.submitted < t_pause + 1.0]
    failed_before = [o for o in outcomes if not o.ok and o.submitted < t_pause]
    late_on_b = reached_after(stack.emulators["b"], outcomes, t_drain + 2.0)
    print(f"  failed new queries: {len(failed_before)} before the pause, {len(failed_first)} submitted in the first second of "
          f"the pause, {len(failed_after)} after; queries reaching b from 2 s after the drain: {len(late_on_b)}")

    assert not failed_after, "queries failed after Envoy's health-check interval:\n" + "\n".join(
        o.describe() for o in failed_after)
    assert not late_on_b, [o.describe() for o in late_on_b]
    assert table["drain +2 s .. resume"]["submitted"] >= 10, table
    assert resumed
    unexplained = [o.describe() for o in failures(outcomes)]
    assert not unexplained, "queries failed:\n" + "\n".join(unexplained)
