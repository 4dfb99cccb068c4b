"""End-to-end acceptance of high availability: cluster death, blue/green, graceful shutdown, fallback
groups, live reload and the admin API, with the real Envoy (from ``trino-router envoy-config``), the router,
emulated coordinators and the real ``trino`` Python client (default retries: ``max_attempts=3``).

Every test builds its own stack (``make_stack``), since these tests kill, restart and reconfigure
processes. Health polling is fast in most tests (``interval: 250ms``) to keep the file short; the death
test also runs with the default health settings (``interval: 1s``), and so does the graceful shutdown
under traffic. Each test prints its figures (queries submitted, succeeded and failed by phase, latencies,
the router's own log lines) so that the CI log shows them.

Clients are real ``trino.dbapi`` connections, one per thread, whose every HTTP answer is recorded
(a ``requests`` response hook) so that a failure can be explained, not just counted. Queries carry a
``/* ha-... */`` tag, matched against each emulator's ``/v1/emulator/queries`` to prove where each query
ran and that none was submitted twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest

import harness

TOKEN = "e2e-admin-token-3f9c"
UI_PASSWORD = "e2e-ui-password"
#: The poll interval of most tests, in seconds (the death test also runs with the default 1s).
INTERVAL = 0.25
#: 3 pages, each ready 150 ms after the previous one: ~0.6 s per query, in flight most of the time.
SLOW3 = "/* emulator: pages=3 delay_ms=150 */ SELECT 1"
QUICK = "/* emulator: pages=2 delay_ms=20 */ SELECT 1"
TABLE_COLUMNS = ["REPLICA", "CLUSTER", "GROUP", "HEALTH", "OPERATOR", "NEW", "LOAD", "COORD", "IN_FLIGHT", "ROUTED",
                 "WEIGHT", "URL"]
_TAG = re.compile(r"/\* (ha-\S+) \*/")


def health(interval: str = "250ms", **more) -> dict:
    settings = {"interval": interval, "timeout": "500ms", "healthy_threshold": 2, "unhealthy_threshold": 2,
                "retry_after": "1s"}
    settings.update(more)
    return settings


def with_stats(names) -> dict:
    """Emulator options that let the router log in to their web UI and read ``/ui/api/stats``."""
    return {name: ["--ui-password", UI_PASSWORD] for name in names}


COORDINATOR_AUTH = {"user": "router", "password": UI_PASSWORD}


# --------------------------------------------------------------------------------------------------
# helpers


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (AssertionError, OSError) as exc:  # e.g. an emulator not answering yet
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}"
                                 + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)


def sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def tags_on(emu: harness.Emulator) -> Counter:
    """How many times each test query (by its ``/* ha-... */`` tag) was submitted to ``emu``."""
    found: Counter = Counter()
    for q in emu.queries():
        match = _TAG.search(q.get("sql") or "")
        if match:
            found[match.group(1)] += 1
    return found


def queries_by_tag(emu: harness.Emulator) -> dict[str, dict]:
    out = {}
    for q in emu.queries():
        match = _TAG.search(q.get("sql") or "")
        if match:
            out[match.group(1)] = q
    return out


def coordinator_ids(stack: harness.Stack) -> dict[str, str]:
    """Coordinator id (the suffix of every query id it issues) → cluster name."""
    return {emu.emulator_info()["coordinatorId"]: name for name, emu in stack.emulators.items()}


def admin_ok(router: harness.Router, *args: str, token: str = TOKEN) -> str:
    out = router.admin(*args, token=token)
    assert out.returncode == 0, f"admin {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def parse_fleet_table(text: str) -> tuple[dict[tuple[str, str], dict[str, str]], list[str]]:
    """``admin clusters``: the table (one row per replica and cluster) as ``{(replica, cluster): row}``,
    and the note lines under it (which replicas answered, who set each operator's say, disagreements)."""
    table, _, notes = text.partition("\n\n")
    lines = [line for line in table.splitlines() if line.strip()]
    assert lines and lines[0].split() == TABLE_COLUMNS, f"unexpected table header:\n{text}"
    rows = {}
    for line in lines[1:]:
        cells = line.split()
        assert len(cells) == len(TABLE_COLUMNS), f"row {line!r} has {len(cells)} cells:\n{text}"
        rows[(cells[0], cells[1])] = dict(zip(TABLE_COLUMNS, cells))
    return rows, [line for line in notes.splitlines() if line.strip()]


def parse_table(text: str) -> dict[str, dict[str, str]]:
    """``admin clusters`` of a single router: ``{cluster: row}``."""
    rows, _ = parse_fleet_table(text)
    replicas = {replica for replica, _ in rows}
    assert len(replicas) <= 1, f"several replicas in the table:\n{text}"
    return {cluster: row for (_, cluster), row in rows.items()}


def admin_clusters(router: harness.Router, token: str = TOKEN) -> dict[str, dict[str, str]]:
    return parse_table(admin_ok(router, "clusters", token=token))


def wait_health(router: harness.Router, cluster: str, health_state: str, timeout: float) -> float:
    """Wait until the router reports ``cluster`` with ``health_state``; returns the seconds it took."""
    started = time.monotonic()
    wait_until(lambda: admin_clusters(router)[cluster]["HEALTH"] == health_state, timeout,
               f"the router to report {cluster} {health_state}", interval=0.05)
    return time.monotonic() - started


def router_log_count(router: harness.Router, pattern: str) -> int:
    return len(re.findall(pattern, router.log()))


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z\s")


def router_events(router: harness.Router, pattern: str, since_wall: float = 0.0) -> list[tuple[float, str]]:
    """Router log lines matching ``pattern`` at or after ``since_wall`` (Unix time), with their time."""
    from datetime import datetime, timezone

    events = []
    for line in router.log().splitlines():
        match = _LOG_TIME.match(line)
        if not match or not re.search(pattern, line):
            continue
        stamp = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc).timestamp()
        if stamp >= since_wall:
            events.append((stamp, line))
    return events


# --------------------------------------------------------------------------------------------------
# client load: threads of the real trino client submitting queries back to back


@dataclass
class Outcome:
    load: str
    thread: int
    n: int
    tag: str
    group: str | None
    submitted: float  # time.monotonic() just before cursor.execute
    ended: float = 0.0
    ended_wall: float = 0.0  # time.time() when the client returned or raised
    query_id: str | None = None
    rows: list = field(default_factory=list)
    error: BaseException | None = None
    #: Every HTTP answer the client got for this query: (time.time(), method, path, status, body of a non-200).
    exchanges: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def clusters(self) -> set[str]:
        return {row[0] for row in self.rows}

    @property
    def cluster(self) -> str | None:
        clusters = self.clusters
        return next(iter(clusters)) if len(clusters) == 1 else None

    def error_kind(self) -> str:
        """What the client raised, in a few words: the error name of a failed query or the HTTP error."""
        import trino.exceptions as tex

        err = self.error
        if err is None:
            return "ok"
        if isinstance(err, tex.TrinoQueryError):
            return f"{type(err).__name__}:{err.error_name}"
        return f"{type(err).__name__}:{str(err)[:80]}"

    def describe(self) -> str:
        answers = " ".join(f"{m} {st}" for (_, m, _, st, _) in self.exchanges)
        return (f"{self.tag} qid={self.query_id} submitted={self.submitted:.3f} ended={self.ended:.3f} "
                f"clusters={sorted(self.clusters)} error={self.error!r} answers=[{answers}]")


class Load:
    """``threads`` client threads, each with its own connection, submitting ``sql`` back to back (or
    ``per_thread`` times) until :meth:`stop`. Bounded: every thread stops by itself after ``max_seconds``."""

    def __init__(self, stack: harness.Stack, name: str, threads: int, sql: str, routing_group: str | None = None,
                 per_thread: int | None = None, max_seconds: float = 90.0):
        self.stack = stack
        self.name = name
        self.threads = threads
        self.sql = sql
        self.routing_group = routing_group
        self.per_thread = per_thread
        self.max_seconds = max_seconds
        self.run = uuid.uuid4().hex[:6]
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.setup_errors: list[BaseException] = []

    def _worker(self, index: int) -> None:
        import requests
        import trino

        exchanges: list = []

        def record(response, *args, **kwargs):
            body = "" if response.status_code == 200 else response.text[:200]
            exchanges.append((time.time(), response.request.method, response.request.path_url,
                              response.status_code, body))

        try:
            session = requests.Session()
            session.hooks["response"].append(record)
            conn = trino.dbapi.connect(
                host="127.0.0.1", port=self.stack.port, user=f"{self.name}-{index}", http_scheme="http",
                http_headers={"X-Trino-Routing-Group": self.routing_group} if self.routing_group else None,
                request_timeout=30, http_session=session,
            )
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.setup_errors.append(exc)
            return
        deadline = time.monotonic() + self.max_seconds
        n = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if self.per_thread is not None and n >= self.per_thread:
                    break
                tag = f"ha-{self.name}-{self.run}-t{index}-q{n}"
                out = Outcome(self.name, index, n, tag, self.routing_group, time.monotonic())
                first_exchange = len(exchanges)
                cur = conn.cursor()
                try:
                    cur.execute(f"{self.sql} /* {tag} */")
                    out.rows = cur.fetchall()
                except Exception as exc:  # noqa: BLE001 - recorded, asserted by the test
                    out.error = exc
                out.ended = time.monotonic()
                out.ended_wall = time.time()
                out.exchanges = exchanges[first_exchange:]
                out.query_id = cur.query_id or getattr(out.error, "query_id", None)
                with self._lock:
                    self.outcomes.append(out)
                n += 1
        finally:
            conn.close()

    def start(self) -> "Load":
        for i in range(self.threads):
            thread = threading.Thread(target=self._worker, args=(i,), name=f"load-{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def join(self, timeout: float = 60.0) -> list[Outcome]:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"client threads still running after {timeout}s: {alive}"
        assert not self.setup_errors, f"client setup failed: {self.setup_errors}"
        return self.snapshot()

    def stop(self, timeout: float = 60.0) -> list[Outcome]:
        self._stop.set()
        return self.join(timeout)


def check_pages(outcomes: list[Outcome], pages: int, rows_per_page: int = 1) -> None:
    """Every successful query read all its pages, each from one and the same cluster."""
    for out in outcomes:
        if not out.ok:
            continue
        assert len(out.rows) == pages * rows_per_page, f"{out.tag}: {len(out.rows)} rows: {out.describe()}"
        assert len(out.clusters) == 1, f"{out.tag}: pages came from several clusters: {out.describe()}"


def phase_table(title: str, outcomes: list[Outcome], edges: list[tuple[str, float]]) -> dict[str, dict]:
    """Counts by phase (by submission time: phase i = [edges[i], edges[i+1])); printed and returned."""
    bounds = edges + [("", float("inf"))]
    table = {}
    for (name, start), (_, end) in zip(bounds, bounds[1:]):
        picked = [o for o in outcomes if start <= o.submitted < end]
        table[name] = {
            "submitted": len(picked),
            "succeeded": sum(o.ok for o in picked),
            "failed": sum(not o.ok for o in picked),
            "by_cluster": dict(sorted(Counter(o.cluster for o in picked if o.ok).items())),
        }
    print(f"\n{title}")
    print(f"  {'phase':<28} {'submitted':>9} {'succeeded':>9} {'failed':>6}  served by")
    for name, row in table.items():
        print(f"  {name:<28} {row['submitted']:>9} {row['succeeded']:>9} {row['failed']:>6}  {row['by_cluster']}")
    return table


# --------------------------------------------------------------------------------------------------
# 1. cluster death under load


@pytest.mark.parametrize("interval", ["250ms", "default"])
def test_cluster_death_under_load(make_stack, interval):
    """kill -9 one of three coordinators under 16 client threads; restart it on the same port.

    - The router marks the dead cluster unreachable within one poll interval of the kill (a refused poll),
      as its log shows; a new query's failed delivery may stop new queries going there sooner (unhealthy).
      Only unreachable gives its queries up: an unhealthy cluster's follow-ups still go to it.
    - Queries in flight on the dead cluster fail within 2 s of the router knowing. Once it knows, their next
      poll gets the router's clear error: a FAILED page, errorName CLUSTER_UNAVAILABLE, naming the cluster
      and the query (the client raises TrinoExternalError). A poll whose three attempts (the client's
      retries, 0-0.2 s and 0-0.4 s apart) all came *before* the router knew gets Envoy's own 503 three
      times ("upstream connect error or disconnect/reset before headers") and the client raises
      Http503Error (after a last back-off of up to 0.8 s). The test asserts that from the client's own
      record of every HTTP answer and the router's log (seen now and then with either interval).
    - No other query fails: every query submitted after the kill succeeds (its POST may meet the dead
      cluster once: Envoy's 503 marks it unhealthy at once and the client's retry goes elsewhere).
    - No successful query is submitted twice, and none reads pages from two clusters.
    - The restarted coordinator (new coordinator id) takes new queries again within 5 s.
    """
    # "default": no health section at all (interval 1s, timeout 1s, thresholds 2, retry_after 1s).
    stack = make_stack(clusters=[("a", "adhoc"), ("b", "adhoc"), ("c", "adhoc")],
                       extra_config={"health": health(interval=interval)} if interval != "default" else None)
    owners = coordinator_ids(stack)
    old_id = next(cid for cid, name in owners.items() if name == "a")
    load = Load(stack, "death", threads=16, sql=SLOW3).start()
    try:
        # Steady state first: queries of every thread at different stages, on every cluster.
        wait_until(lambda: all(len(e.queries()) >= 8 for e in stack.emulators.values()), 20,
                   "every cluster to serve queries")
        wait_until(lambda: sum(q["state"] in ("QUEUED", "RUNNING") for q in stack.emulators["a"].queries()) >= 2,
                   10, "queries in flight on a")
        in_flight_at_kill = sum(q["state"] in ("QUEUED", "RUNNING") for q in stack.emulators["a"].queries())
        t_kill = time.monotonic()
        kill_wall = time.time()
        stack.emulators["a"].kill()
        t_killed = time.monotonic()
        sleep_until(t_kill + 4.0)

        t_restart = time.monotonic()
        new_a = stack.restart_emulator("a")
        t_listening = time.monotonic()
        new_id = new_a.emulator_info()["coordinatorId"]
        owners[new_id] = "a"
        wait_until(lambda: new_a.queries(), 10.0, "the restarted a to receive a query")
        t_first_new = time.monotonic()
        sleep_until(t_first_new + 1.5)
    finally:
        outcomes = load.stop()

    table = phase_table(
        f"cluster death (health.interval={interval}; kill took {1000 * (t_killed - t_kill):.0f} ms; "
        f"{in_flight_at_kill} queries in flight on a at the kill per its emulator)",
        outcomes,
        [("before kill", 0.0), ("kill .. kill+2s", t_kill), ("kill+2s .. restart", t_kill + 2.0),
         ("after restart", t_listening)],
    )
    failed = [o for o in outcomes if not o.ok]
    kinds = Counter(o.error_kind() for o in failed)
    latencies = sorted(o.ended - t_kill for o in failed)
    detected = router_events(stack.router, r'cluster="?a"? health=unreachable', since_wall=kill_wall - 0.05)
    assert detected, f"the router never logged a as unreachable:\n{stack.router.proc.stderr_tail()}"
    detect_wall, detect_line = detected[0]
    print(f"  router marked a unreachable {detect_wall - kill_wall:.3f}s after the kill: {detect_line[28:]}")
    print(f"  in-flight failures on a: {len(failed)}; errors: {dict(kinds)}")
    for out in failed:
        answers = ", ".join(f"{m} {st} at {at - kill_wall:+.3f}s" for (at, m, _, st, _) in out.exchanges[-4:])
        print(f"    {out.query_id}: {out.error_kind()} raised at +{out.ended_wall - kill_wall:.3f}s; last answers: {answers}")
    if latencies:
        print(f"  failed after the kill: min {latencies[0]:.2f}s, max {latencies[-1]:.2f}s")
    print(f"  restarted a: coordinator id {old_id} -> {new_id}; listening {t_listening - t_restart:.2f}s after "
          f"the restart began; first new query {t_first_new - t_listening:.2f}s after it listened")

    import trino.exceptions as tex

    # In-flight queries on the dead cluster fail, fast and clearly; nothing else fails.
    for out in failed:
        assert out.submitted < t_kill, f"a query submitted after the kill failed: {out.describe()}"
        assert out.query_id and out.query_id.endswith("_" + old_id), (
            f"a query not owned by the dead cluster failed: {out.describe()}")
        # Once the router knows, the client's next poll fails the query; that poll may wait out the client's
        # back-off after an Envoy 503 (0.2, 0.4, then up to 0.8 s): 2 s from the router knowing.
        known_at = t_kill + (detect_wall - kill_wall)
        assert out.ended - known_at <= 2.0, (
            f"an in-flight query took {out.ended - known_at:.2f}s after the router knew a was down to fail "
            f"({out.ended - t_kill:.2f}s after the kill): {out.describe()}")
        if isinstance(out.error, tex.TrinoExternalError):
            assert out.error.error_name == "CLUSTER_UNAVAILABLE", out.describe()
            assert "cluster a" in out.error.message and out.query_id in out.error.message, out.error.message
            assert out.exchanges[-1][3] == 200, out.describe()
        else:
            # Envoy's 503 (nothing listens on a) for all three attempts: only before the router knew. Envoy's
            # own answer is Trino-shaped (envoy-config's local_reply_config) and names the cluster.
            assert isinstance(out.error, tex.Http503Error), f"unexpected error: {out.describe()}"
            last3 = out.exchanges[-3:]
            assert len(last3) == 3 and all(
                st == 503 and '"errorName":"CLUSTER_UNAVAILABLE"' in body and "Trino cluster a could not be reached" in body
                for (_, _, _, st, body) in last3), f"not three 503s from Envoy: {last3}"
            late = [round(at - detect_wall, 3) for (at, *_) in last3 if at > detect_wall + 0.05]
            assert not late, (
                f"Envoy's 503 for a query on a came {late}s after the router marked a unreachable: the router "
                f"should have answered CLUSTER_UNAVAILABLE: {out.describe()}")
    assert failed, "no query was in flight on the killed cluster: the test did not exercise the failure"
    detect_limit = {"250ms": 0.25, "default": 1.0}[interval] + 0.25  # one poll interval, plus scheduling slack
    assert detect_wall - kill_wall <= detect_limit, (
        f"the router took {detect_wall - kill_wall:.2f}s to mark the dead cluster unreachable (interval {interval})")
    assert table["kill+2s .. restart"]["failed"] == 0 and table["after restart"]["failed"] == 0
    assert table["kill+2s .. restart"]["submitted"] >= 16, table

    # Successful queries: all pages, one cluster, the cluster that issued the query id.
    check_pages(outcomes, pages=3)
    for out in outcomes:
        if out.ok:
            assert owners.get(out.query_id.rsplit("_", 1)[1]) == out.cluster, out.describe()
    # Nothing served by the dead cluster after it died (until it was back).
    late_on_a = [o for o in outcomes if o.ok and o.cluster == "a" and t_kill <= o.submitted < t_restart]
    assert not late_on_a, f"queries submitted after the kill ran on the dead a: {[o.describe() for o in late_on_a]}"

    # No query was submitted twice: every query that ran on a live emulator appears there exactly once.
    live = {name: tags_on(emu) for name, emu in stack.emulators.items()}
    for out in outcomes:
        if out.ok and not (out.cluster == "a" and out.query_id.endswith("_" + old_id)):
            seen = {name: tags[out.tag] for name, tags in live.items() if tags[out.tag]}
            assert seen == {out.cluster: 1}, f"{out.tag} submitted {seen}: {out.describe()}"
    for name, tags in live.items():
        dup = [t for t, n in tags.items() if n > 1]
        assert not dup, f"{name} got these queries more than once: {dup}"

    # The restarted coordinator is back in rotation within 5 s.
    assert new_id != old_id, "the restarted emulator kept its coordinator id"
    assert t_first_new - t_listening <= 5.0, f"the restarted a took {t_first_new - t_listening:.1f}s to get a query"
    assert all(q["id"].endswith("_" + new_id) for q in new_a.queries())
    assert table["after restart"]["by_cluster"].get("a", 0) >= 1, table
    stack.router.proc.assert_alive()
    stack.envoy.proc.assert_alive()


# --------------------------------------------------------------------------------------------------
# 2. blue/green


def _admin_in_background(router: harness.Router, *args: str) -> tuple[threading.Thread, dict]:
    """Run ``trino-router admin ARGS`` in a thread; the dict gets ``result`` and ``ended`` (monotonic)."""
    box: dict = {}

    def run():
        try:
            box["result"] = router.admin(*args, token=TOKEN, timeout=120)
        finally:
            box["ended"] = time.monotonic()

    thread = threading.Thread(target=run, name="admin-" + "-".join(args), daemon=True)
    thread.start()
    return thread, box


def test_blue_green_switch(make_stack):
    """blue serves, green (``enabled: false``) stands by; while queries run on blue, ``admin enable green``
    and ``admin drain blue``.

    - Zero failed queries, before, during and after the switch.
    - Every query that started on blue finishes on blue (all its pages' cluster column = blue).
    - Queries submitted after the switch go to green only.
    - ``admin drain blue --wait`` reports drained, and only after the last query on blue finished.
    """
    stack = make_stack(
        clusters=[("blue", "adhoc"), ("green", "adhoc")],
        cluster_options={"green": {"enabled": False}},
        emulator_args=with_stats(["blue", "green"]),
        extra_config={"health": health(), "admin": {"token": TOKEN}, "coordinator_auth": COORDINATOR_AUTH},
    )
    router = stack.router
    blue, green = stack.emulators["blue"], stack.emulators["green"]
    before = admin_clusters(router)
    assert (before["green"]["OPERATOR"], before["green"]["NEW"]) == ("disabled", "no"), before
    assert (before["blue"]["OPERATOR"], before["blue"]["NEW"]) == ("active", "yes"), before

    long = Load(stack, "bg-long", threads=6, sql="/* emulator: pages=6 delay_ms=400 */ SELECT 1", per_thread=1)
    short = Load(stack, "bg-short", threads=4, sql="/* emulator: pages=2 delay_ms=100 */ SELECT 1")
    long.start()
    short.start()
    try:
        wait_until(lambda: sum(t.startswith("ha-bg-long") for t in tags_on(blue)) == 6, 15,
                   "the 6 long queries to run on blue")
        sleep_until(time.monotonic() + 0.5)
        during = admin_clusters(router)
        t_enable = time.monotonic()
        enabled = admin_ok(router, "enable", "green")
        drained = admin_ok(router, "drain", "blue")
        t_switch = time.monotonic()
        waiter, box = _admin_in_background(router, "drain", "blue", "--wait", "--timeout", "1m")
        sleep_until(t_switch + 2.0)
    finally:
        short_outcomes = short.stop()
    long_outcomes = long.join(30)
    waiter.join(90)
    assert "result" in box, "admin drain --wait did not finish"
    wait_result = box["result"]
    after = admin_clusters(router)

    outcomes = long_outcomes + short_outcomes
    table = phase_table("blue/green", outcomes, [("blue only", 0.0), ("enable green .. drain blue", t_enable),
                                                  ("after the switch", t_switch)])
    on_blue = [o for o in outcomes if o.ok and o.cluster == "blue"]
    last_blue_end = max(o.ended for o in on_blue)
    print(f"  admin during the run:\n    " + "\n    ".join(
        f"{n}: health={r['HEALTH']} operator={r['OPERATOR']} load={r['LOAD']} coord={r['COORD']} "
        f"in_flight={r['IN_FLIGHT']}" for n, r in during.items()))
    print(f"  enable: {enabled.strip()}\n  drain: {drained.strip()}")
    print(f"  drain --wait returned {box['ended'] - t_switch:.2f}s after the switch, "
          f"{box['ended'] - last_blue_end:.2f}s after the last query on blue finished:\n    "
          + wait_result.stdout.strip().replace("\n", "\n    "))

    failed = [o.describe() for o in outcomes if not o.ok]
    assert not failed, "queries failed:\n" + "\n".join(failed)
    check_pages(long_outcomes, pages=6)
    check_pages(short_outcomes, pages=2)
    for out in long_outcomes:
        assert out.cluster == "blue" and out.submitted < t_enable, f"long query not on blue: {out.describe()}"
    assert int(during["blue"]["IN_FLIGHT"]) >= 6, during
    assert int(during["blue"]["COORD"]) >= 6, f"blue's coordinator reported no load: {during}"
    for out in short_outcomes:
        if out.submitted < t_enable:
            assert out.cluster == "blue", f"green took a query before it was enabled: {out.describe()}"
        if out.submitted >= t_switch:
            assert out.cluster == "green", f"a query after the switch ran on {out.cluster}: {out.describe()}"
    assert table["after the switch"]["submitted"] >= 8, table

    # What the coordinators saw: each query exactly once, where the client saw it run.
    seen = {"blue": tags_on(blue), "green": tags_on(green)}
    for out in outcomes:
        assert {n: c[out.tag] for n, c in seen.items() if c[out.tag]} == {out.cluster: 1}, out.describe()
    assert sum(seen["blue"].values()) == len(on_blue) and sum(seen["green"].values()) == len(outcomes) - len(on_blue)
    for q in blue.queries():
        assert q["state"] == "FINISHED", f"blue query not finished: {q}"

    # The drain report, and only once blue was idle.
    assert "green: active" in enabled and "takes new queries" in enabled, enabled
    assert "blue: draining" in drained, drained
    assert wait_result.returncode == 0, f"drain --wait failed:\n{wait_result.stdout}\n{wait_result.stderr}"
    assert "blue: drained, no query in flight: safe to stop" in wait_result.stdout, wait_result.stdout
    assert box["ended"] > last_blue_end, "drain --wait reported drained before the last blue query finished"
    assert (after["blue"]["OPERATOR"], after["blue"]["NEW"], after["blue"]["IN_FLIGHT"]) == ("drained", "no", "0"), after
    assert (after["green"]["OPERATOR"], after["green"]["NEW"]) == ("active", "yes"), after


# --------------------------------------------------------------------------------------------------
# 3. graceful shutdown of a coordinator


def _slow_queries_on(stack: harness.Stack, prefix: str, count: int) -> dict[str, list[str]]:
    """Wait until ``count`` queries tagged ``prefix`` run; returns cluster → their tags."""
    def placed():
        where = {name: [t for t in tags_on(emu) if t.startswith(prefix)] for name, emu in stack.emulators.items()}
        return where if sum(map(len, where.values())) == count else None

    return wait_until(placed, 15, f"{count} {prefix} queries to start")


def test_graceful_shutdown_of_a_coordinator(make_stack):
    """``PUT /v1/emulator/state "SHUTTING_DOWN"`` on a while slow queries run on it.

    - The router sees it within about two poll intervals (admin: health shutting_down).
    - The slow queries on a complete there, every page from a.
    - From then on no new query reaches a: its query list does not grow and it rejects nothing
      (``rejected_new_queries`` stays 0); b takes every new query, none fails.
    """
    stack = make_stack(clusters=[("a", "adhoc"), ("b", "adhoc")],
                       extra_config={"health": health(), "admin": {"token": TOKEN}})
    a, b = stack.emulators["a"], stack.emulators["b"]
    slow = Load(stack, "gs-slow", threads=4, sql="/* emulator: pages=8 delay_ms=300 */ SELECT 1", per_thread=1).start()
    placed = _slow_queries_on(stack, "ha-gs-slow", 4)
    assert placed["a"], f"no slow query on a: {placed}"

    t_put = time.monotonic()
    a.set_state("SHUTTING_DOWN")
    assert a.node_state() == "SHUTTING_DOWN"
    seen_after = wait_health(stack.router, "a", "shutting_down", timeout=5.0)
    queries_before = len(a.queries())
    counters_before = a.counters()

    fresh = Load(stack, "gs-new", threads=4, sql=QUICK, per_thread=6).start()
    fresh_outcomes = fresh.join(60)
    slow_outcomes = slow.join(30)
    table = admin_clusters(stack.router)
    counters_after = a.counters()
    outcomes = slow_outcomes + fresh_outcomes
    phase_table("graceful shutdown of a", outcomes, [("before SHUTTING_DOWN", 0.0), ("after", t_put)])
    print(f"  router saw a shutting down {seen_after:.2f}s after the PUT (poll interval {INTERVAL}s); "
          f"slow queries on a: {len(placed['a'])}, on b: {len(placed['b'])}")
    print(f"  a: queries {queries_before} -> {len(a.queries())}, rejected_new_queries "
          f"{counters_before.get('rejected_new_queries')} -> {counters_after.get('rejected_new_queries')}")

    failed = [o.describe() for o in outcomes if not o.ok]
    assert not failed, "queries failed:\n" + "\n".join(failed)
    assert seen_after <= 2 * INTERVAL + 0.25, f"the router took {seen_after:.2f}s to notice SHUTTING_DOWN"
    check_pages(slow_outcomes, pages=8)
    check_pages(fresh_outcomes, pages=2)
    on_a = queries_by_tag(a)
    for out in slow_outcomes:
        if out.tag in placed["a"]:
            assert out.cluster == "a", out.describe()
            assert on_a[out.tag]["state"] == "FINISHED", on_a[out.tag]
    assert all(o.cluster == "b" for o in fresh_outcomes), [o.describe() for o in fresh_outcomes if o.cluster != "b"]
    assert len(fresh_outcomes) == 24
    assert len(a.queries()) == queries_before, "a received new queries while shutting down"
    assert counters_after["rejected_new_queries"] == counters_before["rejected_new_queries"] == 0
    assert counters_after["statement_post"] == counters_before["statement_post"]
    assert (table["a"]["HEALTH"], table["a"]["NEW"]) == ("shutting_down", "no"), table


def _just_polled(emu: harness.Emulator, timeout: float = 5.0) -> None:
    """Return right after the router's next health poll of ``emu`` (its ``/v1/info/state`` request)."""
    start = emu.counters()["node_api"]
    wait_until(lambda: emu.counters()["node_api"] >= start + 2, timeout, f"a health poll of {emu.name}", interval=0.005)


def test_graceful_shutdown_under_traffic(make_stack):
    """The same shutdown while 8 client threads keep submitting queries (the realistic case), with the
    default health settings (``interval: 1s``); the PUT comes right after a poll, so the router learns of
    the shutdown about one interval later.

    Until then new queries still reach a, which answers 503 (nothing submitted, ``rejected_new_queries``)
    and the clients retry them elsewhere. Must hold:
    - zero failed queries; in particular the slow queries running on a complete there, all pages from a
      (a coordinator in graceful shutdown finishes its queries, and it answers the router's polls);
    - two poll intervals after the PUT no new query reaches a any more.
    """
    interval = 1.0
    stack = make_stack(clusters=[("a", "adhoc"), ("b", "adhoc")])
    a = stack.emulators["a"]
    slow = Load(stack, "gst-slow", threads=4, sql="/* emulator: pages=16 delay_ms=300 */ SELECT 1", per_thread=1).start()
    placed = _slow_queries_on(stack, "ha-gst-slow", 4)
    assert placed["a"], f"no slow query on a: {placed}"
    busy = Load(stack, "gst-busy", threads=8, sql=QUICK).start()
    try:
        sleep_until(time.monotonic() + 0.5)
        _just_polled(a)
        t_put = time.monotonic()
        put_wall = time.time()
        a.set_state("SHUTTING_DOWN")
        sleep_until(t_put + 2 * interval + 0.3)
        queries_settled = len(a.queries())
        counters_settled = a.counters()
        sleep_until(t_put + 3.0)
    finally:
        busy_outcomes = busy.stop()
    slow_outcomes = slow.join(30)
    counters_end = a.counters()
    outcomes = slow_outcomes + busy_outcomes
    table = phase_table("graceful shutdown of a under traffic (interval 1s)", outcomes,
                        [("before SHUTTING_DOWN", 0.0), ("first 2 intervals", t_put),
                         ("after", t_put + 2 * interval + 0.3)])
    changes = router_events(stack.router, r'cluster="?a"? health=|could not be delivered cluster=a', put_wall - 0.01)
    print(f"  a rejected {counters_settled['rejected_new_queries']} new queries before the router noticed, "
          f"{counters_end['rejected_new_queries'] - counters_settled['rejected_new_queries']} after; "
          f"queries on a {queries_settled} -> {len(a.queries())}")
    print("  router's view of a after the PUT:\n    " + "\n    ".join(
        f"+{at - put_wall:.3f}s {line[28:]}" for at, line in changes))
    print(f"  slow queries: " + ", ".join(f"{o.tag[-6:]} on {o.cluster or '-'}: {o.error_kind()}" for o in slow_outcomes))

    failed = [o.describe() for o in outcomes if not o.ok]
    assert not failed, (f"{len(failed)} queries failed during a graceful shutdown (a answered 503 to a new "
                        "query; see the router's view above):\n" + "\n".join(failed))
    check_pages(outcomes[: len(slow_outcomes)], pages=16)
    for out in slow_outcomes:
        if out.tag in placed["a"]:
            assert out.cluster == "a", out.describe()
    assert len(a.queries()) == queries_settled, "a still received new queries two poll intervals after the PUT"
    assert counters_end["rejected_new_queries"] == counters_settled["rejected_new_queries"]
    assert table["after"]["by_cluster"].keys() == {"b"}, table


# --------------------------------------------------------------------------------------------------
# 4. fallback groups, and no capacity at all


def _run_batch(stack: harness.Stack, name: str, count: int, group: str | None = None, sql: str = QUICK,
               threads: int = 2) -> list[Outcome]:
    return Load(stack, name, threads=threads, sql=sql, routing_group=group,
                per_thread=-(-count // threads)).start().join(60)


def test_fallback_group_and_no_capacity(make_stack):
    """Group adhoc (cluster ad1) falls back to etl (cluster etl1).

    - ad1 killed: adhoc queries run on etl1, each submitted once.
    - etl1 shutting down too: the router answers a new query itself — 503, ``Retry-After``, a Trino-shaped
      FAILED QueryResults with errorName NO_CLUSTER_AVAILABLE; the Python client retries (3 attempts) and
      raises Http503Error. Nothing reached a coordinator: etl1's query list, its statement POST counter
      and Envoy's upstream request counters do not move.
    - etl1 ACTIVE again: adhoc queries succeed again, on etl1; ad1 restarted: adhoc queries go home to ad1.
    """
    stack = make_stack(
        clusters=[("ad1", "adhoc"), ("etl1", "etl")],
        extra_config={"groups": [{"name": "adhoc", "fallback": ["etl"]}], "health": health(),
                      "admin": {"token": TOKEN}},
    )
    ad1, etl1 = stack.emulators["ad1"], stack.emulators["etl1"]
    router = stack.router
    import trino
    import trino.exceptions as tex

    home = _run_batch(stack, "fb-home", 4)
    etl_own = _run_batch(stack, "fb-etl", 4, group="etl")
    assert all(o.ok and o.cluster == "ad1" for o in home), [o.describe() for o in home]
    assert all(o.ok and o.cluster == "etl1" for o in etl_own), [o.describe() for o in etl_own]

    # adhoc's only cluster dies: adhoc queries fall back to etl.
    t_kill = time.monotonic()
    ad1.kill()
    noticed = wait_health(router, "ad1", "unreachable", timeout=3.0)
    fell_back = _run_batch(stack, "fb-fallback", 6)
    etl_tags = tags_on(etl1)
    assert all(o.ok and o.cluster == "etl1" for o in fell_back), [o.describe() for o in fell_back]
    assert all(etl_tags[o.tag] == 1 for o in fell_back), "a fallback query was submitted twice"

    # etl shuts down as well: no cluster can take a query.
    etl1.set_state("SHUTTING_DOWN")
    wait_health(router, "etl1", "shutting_down", timeout=3.0)
    tags_before, counters_before = tags_on(etl1), etl1.counters()
    upstream_before = stack.upstream_requests()
    downstream_before = int(stack.envoy.stats("downstream_rq_total").get("http.trino.downstream_rq_total", 0))

    tag = f"ha-fb-raw-{uuid.uuid4().hex[:6]}"
    raw = harness.http_request("POST", f"{stack.url}/v1/statement", f"{QUICK} /* {tag} */",
                               {"X-Trino-User": "raw", "Content-Type": "text/plain"})
    body = raw.json()
    conn = trino.dbapi.connect(host="127.0.0.1", port=stack.port, user="fb-client", http_scheme="http")
    client_tag = f"ha-fb-client-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    with pytest.raises(tex.Http503Error) as refused:
        conn.cursor().execute(f"{QUICK} /* {client_tag} */")
    client_seconds = time.monotonic() - t0
    etl_conn = trino.dbapi.connect(host="127.0.0.1", port=stack.port, user="fb-client-etl", http_scheme="http",
                                   http_headers={"X-Trino-Routing-Group": "etl"})
    with pytest.raises(tex.Http503Error):
        etl_conn.cursor().execute(f"{QUICK} /* {client_tag}-etl */")
    downstream_after = int(stack.envoy.stats("downstream_rq_total").get("http.trino.downstream_rq_total", 0))
    upstream_after = stack.upstream_requests()
    tags_after, counters_after = tags_on(etl1), etl1.counters()

    print(f"\nfallback: ad1 unhealthy per admin {noticed:.2f}s after its kill; {len(fell_back)} adhoc queries ran on "
          f"etl1 (tags once each)")
    print(f"  no capacity: raw POST -> {raw.status}, Retry-After {raw.headers.get('retry-after')!r}, "
          f"errorName {body.get('error', {}).get('errorName')}: {body.get('error', {}).get('message')}")
    print(f"  python client: {refused.value!r} after {client_seconds:.2f}s; Envoy downstream requests "
          f"+{downstream_after - downstream_before} (1 raw + 3 + 3 client attempts); upstream {upstream_before} -> "
          f"{upstream_after}; etl1 statement POSTs {counters_before['statement_post']} -> "
          f"{counters_after['statement_post']}")

    assert raw.status == 503, (raw.status, raw.text)
    assert int(raw.headers.get("retry-after", "0")) >= 1, raw.headers
    assert raw.headers.get("content-type", "").startswith("application/json"), raw.headers
    assert body["error"]["errorName"] == "NO_CLUSTER_AVAILABLE", body
    assert "adhoc" in body["error"]["message"] and "nothing was submitted" in body["error"]["message"], body
    assert body["stats"]["state"] == "FAILED" and "nextUri" not in body, body
    assert downstream_after - downstream_before == 7, "the client should have tried 3 times per query"
    assert upstream_after == upstream_before, "a refused query reached a coordinator through Envoy"
    assert tags_after == tags_before, "a refused query was submitted to etl1"
    assert counters_after["statement_post"] == counters_before["statement_post"]
    assert counters_after["rejected_new_queries"] == counters_before["rejected_new_queries"]

    # etl comes back: adhoc queries succeed again (on etl1, ad1 is still dead).
    etl1.set_state("ACTIVE")
    back = wait_health(router, "etl1", "healthy", timeout=3.0)
    again = _run_batch(stack, "fb-again", 4)
    assert all(o.ok and o.cluster == "etl1" for o in again), [o.describe() for o in again]
    # ad1 comes back: adhoc queries go home.
    new_ad1 = stack.restart_emulator("ad1")
    home_again = wait_health(router, "ad1", "healthy", timeout=5.0)
    homed = _run_batch(stack, "fb-homed", 4)
    assert all(o.ok and o.cluster == "ad1" for o in homed), [o.describe() for o in homed]
    assert tags_on(new_ad1) == Counter({o.tag: 1 for o in homed})
    print(f"  etl1 healthy again {back:.2f}s after ACTIVE; 4/4 adhoc queries on etl1; ad1 restarted, healthy "
          f"{home_again:.2f}s later; 4/4 adhoc queries back on ad1")


# --------------------------------------------------------------------------------------------------
# 5. live reload under load


def _wait_log(router: harness.Router, pattern: str, count_before: int, what: str, timeout: float = 5.0) -> float:
    """Wait until the router's log has more lines matching ``pattern`` than before; returns the seconds."""
    started = time.monotonic()
    wait_until(lambda: router_log_count(router, pattern) > count_before, timeout, what)
    return time.monotonic() - started


def test_reload_under_load(make_stack):
    """Continuous adhoc and etl queries while the config file changes under the router.

    1. c moves from group etl to adhoc (file rewritten): ``config reloaded``; adhoc queries land on c too.
    2. b is drained (admin), then an invalid file (an unknown field): ``config reload rejected``; routing is
       unchanged (adhoc on a and c, b still drained: cluster state survives).
    3. The valid file is restored, then SIGHUP: ``config reloaded`` with ``why="SIGHUP"``; b is still drained.
    Zero failed queries throughout.
    """
    stack = make_stack(clusters=[("a", "adhoc"), ("b", "adhoc"), ("c", "etl")],
                       extra_config={"health": health(), "admin": {"token": TOKEN}})
    router = stack.router
    reloaded, rejected = r"config reloaded", r"config reload rejected"
    doc = json.loads(json.dumps(stack.config_doc))
    sql = "/* emulator: pages=2 delay_ms=50 */ SELECT 1"
    adhoc = Load(stack, "rl-adhoc", threads=6, sql=sql).start()
    etl = Load(stack, "rl-etl", threads=2, sql=sql, routing_group="etl").start()
    marks: list[tuple[str, float]] = [("etl = {c}", 0.0)]
    figures = {}
    try:
        sleep_until(time.monotonic() + 1.5)

        # 1. c joins adhoc.
        moved = json.loads(json.dumps(doc))
        next(cl for cl in moved["clusters"] if cl["name"] == "c")["group"] = "adhoc"
        n = router_log_count(router, reloaded)
        t_write = time.monotonic()
        harness.replace_file(stack.config_path, harness.yaml_text(moved))
        marks.append(("file written, not yet read", t_write))
        figures["valid file picked up after"] = _wait_log(router, reloaded, n, "config reloaded (file changed)")
        marks.append(("c moved to adhoc", time.monotonic()))
        sleep_until(time.monotonic() + 2.0)

        # 2. drain b; an invalid file changes nothing.
        admin_ok(router, "drain", "b")
        marks.append(("b drained", time.monotonic()))
        sleep_until(time.monotonic() + 1.0)
        invalid = json.loads(json.dumps(moved))
        invalid["clusters"][0]["wieght"] = 2
        n = router_log_count(router, rejected)
        harness.replace_file(stack.config_path, harness.yaml_text(invalid))
        figures["invalid file rejected after"] = _wait_log(router, rejected, n, "config reload rejected")
        marks.append(("invalid file", time.monotonic()))
        sleep_until(time.monotonic() + 1.5)

        # 3. restore the valid file, then SIGHUP.
        n = router_log_count(router, reloaded)
        harness.replace_file(stack.config_path, harness.yaml_text(moved))
        _wait_log(router, reloaded, n, "config reloaded (valid file restored)")
        n = router_log_count(router, r'config reloaded.*why="?SIGHUP')
        os.kill(router.proc.pid, signal.SIGHUP)
        figures["SIGHUP reload after"] = _wait_log(router, r'config reloaded.*why="?SIGHUP', n, "config reloaded why=SIGHUP")
        marks.append(("valid again + SIGHUP", time.monotonic()))
        sleep_until(time.monotonic() + 1.5)
    finally:
        outcomes = adhoc.stop() + etl.stop()
    table_adhoc = phase_table("reload under load: adhoc queries", [o for o in outcomes if o.group is None], marks)
    table_etl = phase_table("reload under load: etl queries", [o for o in outcomes if o.group == "etl"], marks)
    log_lines = [line[28:] for line in router.log().splitlines() if "config reload" in line]
    print("  " + ", ".join(f"{k} {v:.2f}s" for k, v in figures.items()))
    print("  router log:\n    " + "\n    ".join(log_lines))
    final = admin_clusters(router)

    failed = [o.describe() for o in outcomes if not o.ok]
    assert not failed, "queries failed:\n" + "\n".join(failed)
    check_pages(outcomes, pages=2)
    assert set(table_adhoc["etl = {c}"]["by_cluster"]) == {"a", "b"}, table_adhoc
    assert set(table_etl["etl = {c}"]["by_cluster"]) == {"c"}, table_etl
    print(f"  (queries submitted in the second before the router read the new file ran on "
          f"{table_adhoc['file written, not yet read']['by_cluster']}: either config may have placed them)")
    # Queries submitted after the change: adhoc also on c; the etl group is gone, so etl queries are adhoc's.
    assert set(table_adhoc["c moved to adhoc"]["by_cluster"]) == {"a", "b", "c"}, table_adhoc
    for phase in ("invalid file", "valid again + SIGHUP"):
        assert set(table_adhoc[phase]["by_cluster"]) == {"a", "c"}, (phase, table_adhoc)
        assert set(table_etl[phase]["by_cluster"]) <= {"a", "c"}, (phase, table_etl)
    assert sum(table_adhoc[p]["submitted"] for p in table_adhoc) >= 60, table_adhoc
    assert any('why="file changed"' in line or "why=file changed" in line for line in log_lines), log_lines
    assert any(rejected in line and "wieght" in line for line in log_lines), log_lines
    assert any(reloaded in line and "SIGHUP" in line for line in log_lines), log_lines
    assert final["c"]["GROUP"] == "adhoc" and final["b"]["OPERATOR"] in ("draining", "drained"), final


# --------------------------------------------------------------------------------------------------
# 6. the admin API and CLI


def test_admin_refused_without_a_configured_token():
    """No ``admin.token`` and no ``TRINO_ROUTER_ADMIN_TOKEN`` on the router: every admin call is refused
    (exit 1, UNAUTHENTICATED), with or without a token on the command line; nothing changes."""
    config = harness.write_router_config(harness.scratch_dir("no-token") / "router.yaml",
                                         [("a", "http://127.0.0.1:9", "adhoc")], extra={"health": health()})
    router = harness.start_router(config, env={"TRINO_ROUTER_ADMIN_TOKEN": ""})
    try:
        results = {
            "clusters, no token": router.admin("clusters"),
            "clusters --token x": router.admin("clusters", token="x"),
            "drain a, env token": router.admin("drain", "a", env={"TRINO_ROUTER_ADMIN_TOKEN": "x"}),
        }
        for what, out in results.items():
            print(f"{what}: exit {out.returncode}: {out.stderr.strip()}")
            assert out.returncode == 1, (what, out.returncode, out.stdout, out.stderr)
            assert "UNAUTHENTICATED" in out.stderr, (what, out.stderr)
            assert "admin calls are disabled" in out.stderr, (what, out.stderr)
            assert out.stdout == "", (what, out.stdout)
        router.proc.assert_alive()
    finally:
        router.stop()


def test_admin_cli_and_reflection(make_stack):
    """With ``admin.token``: a wrong or missing token is refused (exit 1, UNAUTHENTICATED); the right one,
    by ``--token`` or by ``TRINO_ROUTER_ADMIN_TOKEN``, gets the clusters table: each cluster's group, health,
    operator state, load (the coordinators' own counts, read with ``coordinator_auth``), weight and URL. A
    killed cluster shows ``unhealthy``, a drained one ``draining`` while its query runs, then ``drained``.
    ``locate`` names a query's cluster. gRPC server reflection lists the admin service."""
    stack = make_stack(
        clusters=[("a", "adhoc"), ("b", "adhoc"), ("etl", "etl")],
        cluster_options={"etl": {"weight": 2.0}},
        emulator_args=with_stats(["a", "b", "etl"]),
        extra_config={"health": health(), "admin": {"token": TOKEN}, "coordinator_auth": COORDINATOR_AUTH},
    )
    router = stack.router

    # Refused: wrong token, no token.
    for what, out in {"wrong --token": router.admin("clusters", token="not-" + TOKEN),
                      "wrong env token": router.admin("clusters", env={"TRINO_ROUTER_ADMIN_TOKEN": TOKEN[:-1]}),
                      "no token": router.admin("clusters"),
                      "drain, wrong token": router.admin("drain", "a", token="nope")}.items():
        print(f"{what}: exit {out.returncode}: {out.stderr.strip()}")
        assert out.returncode == 1 and "UNAUTHENTICATED" in out.stderr and not out.stdout, (what, out)
    assert admin_clusters(router)["a"]["OPERATOR"] == "active", "a refused drain changed the cluster"

    # The right token, both ways: the same table.
    wait_until(lambda: all(r["HEALTH"] == "healthy" and r["COORD"] != "-" for r in admin_clusters(router).values()),
               5, "every cluster healthy with its coordinator's load read")
    by_flag = router.admin("clusters", token=TOKEN)
    by_env = router.admin("clusters", env={"TRINO_ROUTER_ADMIN_TOKEN": TOKEN})
    assert by_flag.returncode == 0 and by_env.returncode == 0, (by_flag, by_env)
    print(f"table (--token):\n{by_flag.stdout}")
    rows = parse_table(by_flag.stdout)
    assert parse_table(by_env.stdout).keys() == rows.keys()
    assert list(rows) == ["a", "b", "etl"], rows
    for name, row in rows.items():
        assert row["GROUP"] == stack.groups[name], row
        assert (row["HEALTH"], row["OPERATOR"], row["NEW"]) == ("healthy", "active", "yes"), row
        assert row["URL"] == stack.emulators[name].url, row
        assert row["COORD"] == "0" and row["IN_FLIGHT"] == "0", row
    assert (rows["etl"]["WEIGHT"], rows["a"]["WEIGHT"]) == ("2", "1"), rows

    # Load shows: slow queries on a and b (the coordinators report them; etl takes no adhoc query).
    slow = Load(stack, "adm-slow", threads=4, sql="/* emulator: pages=10 delay_ms=300 */ SELECT 1", per_thread=1).start()
    placed = _slow_queries_on(stack, "ha-adm-slow", 4)
    assert placed["a"], placed
    def a_loaded():
        row = admin_clusters(router)["a"]
        return int(row["COORD"]) >= 1 and int(row["LOAD"]) >= 1 and int(row["IN_FLIGHT"]) >= 1

    wait_until(a_loaded, 3, "a's load (COORD, LOAD, IN_FLIGHT) to show its slow queries")
    print(f"with slow queries running ({ {n: len(t) for n, t in placed.items()} }):\n" + admin_ok(router, "clusters"))

    # locate: the cluster of a running query.
    qid = next(q["id"] for q in stack.emulators["a"].queries() if _TAG.search(q["sql"]).group(1) in placed["a"])
    located = admin_ok(router, "locate", qid)
    assert located.strip() == f"{qid}: a", located
    unknown = router.admin("locate", "20260101_000000_00001_zzzzz", token=TOKEN)
    assert unknown.returncode == 1 and "cannot place" in unknown.stderr, unknown

    # drain a while its query runs; kill b.
    drained = admin_ok(router, "drain", "a")
    stack.emulators["b"].kill()
    wait_health(router, "b", "unreachable", timeout=3)
    during = admin_clusters(router)
    print(f"a drained with its query running, b killed:\n{admin_ok(router, 'clusters')}")
    assert (during["a"]["OPERATOR"], during["a"]["NEW"]) == ("draining", "no"), during
    assert int(during["a"]["IN_FLIGHT"]) >= 1, during
    assert (during["b"]["HEALTH"], during["b"]["NEW"]) == ("unreachable", "no"), during
    assert during["b"]["OPERATOR"] == "active", during
    assert (during["etl"]["HEALTH"], during["etl"]["NEW"]) == ("healthy", "yes"), during
    assert "a: draining" in drained

    outcomes = slow.join(30)
    by_cluster = Counter(o.cluster if o.ok else o.error_kind() for o in outcomes)
    print(f"slow queries: {dict(by_cluster)}")
    on_a = [o for o in outcomes if o.tag in placed["a"]]
    assert all(o.ok and o.cluster == "a" for o in on_a), f"a's query failed while draining: {[o.describe() for o in on_a]}"
    # b's queries fail clearly: the router's CLUSTER_UNAVAILABLE page, or (when all three attempts of a poll
    # came before the router's next health poll) Envoy's own 503, whose body names the cluster.
    on_b = [o for o in outcomes if o.tag in placed["b"]]
    assert all(
        o.error_kind() == "TrinoExternalError:CLUSTER_UNAVAILABLE"
        # Envoy's 503s: an Http503Error, or the client's OperationalError when they come during a fetch
        or o.error_kind().split(":")[0] in ("Http503Error", "OperationalError") and "503" in o.error_kind()
        for o in on_b
    ), [o.describe() for o in on_b]
    wait_until(lambda: admin_clusters(router)["a"]["OPERATOR"] == "drained", 10, "a to be drained")
    final = admin_clusters(router)
    assert (final["a"]["OPERATOR"], final["a"]["IN_FLIGHT"]) == ("drained", "0"), final
    undrained = admin_ok(router, "undrain", "a")
    assert "a: active" in undrained and "takes new queries" in undrained, undrained
    missing = router.admin("drain", "nope", token=TOKEN)
    assert missing.returncode == 1 and "not found" in missing.stderr, missing

    # gRPC server reflection (v1): lists the admin API and serves its descriptor.
    services = harness.reflection_list_services(router.grpc_addr)
    files = harness.reflection_file_containing(router.grpc_addr, "trino_router.v1.Admin")
    print(f"reflection: services {services}; descriptor files {[harness.pb_fields(f)[0][1].decode() for f in files]}")
    assert {"trino_router.v1.Admin", "grpc.health.v1.Health"} <= set(services), services
    assert any(b"ListClusters" in f and b"Drain" in f for f in files), "the Admin descriptor was not served"
