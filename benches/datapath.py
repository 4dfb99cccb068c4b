"""The data-path benchmark: the same load against the same emulators through several set-ups, in one run.

  (a)  direct          client -> emulators
  (b)  envoy           client -> Envoy, static routes, no ext_proc (the client names the cluster in a header)
  (c)  router          client -> Envoy + trino-router exactly as `trino-router envoy-config` prints it (routes
                       over RDS), with the bench's 10 statement rules
  (c0) router-norules  as (c) without rules, the router's defaults otherwise: the config compared with trino-lb
  (r)  router-native   as (c0) with `new_query_routing: envoy`: Envoy places new statements by RDS-served weights
  (d)  trino-lb        client -> trino-lb (`--trino-lb PATH`): in-memory persistence, one cluster group
                       holding both clusters, no routers, plain HTTP

and, for the new-query cost study (`benches/new-query-cost.md`), set-ups that take one step of the router's
new-query path away at a time (`--setups`, see SETUPS): headers-only, static-learned, no-learn,
observe-learn, nowait, one-message, native.

Run it with `scripts/bench` (release build). For each mix it prints one table, a row per set-up, with the
median run's figures, its ratio to (b) and to (d), and the spread of queries/s over the rounds; then a summary
(router vs Envoy vs trino-lb per mix) and the targets (issues 6 and 18). A complete default run writes the
report, with the machine it ran on, to benches/datapath-results.md (`--no-write` to skip, `--results PATH` to
write any run elsewhere). The load generator is `trino-load` (tools/src/bin/trino-load); each mix runs every
set-up back to back, in several rounds whose order rotates (no set-up always runs first), and reports each
set-up's median run: the machine is shared and noisy, and one run per set-up swung ratios by a third.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import harness  # noqa: E402

CLUSTERS = ["a", "b"]
RESULTS = REPO / "benches" / "datapath-results.md"

# Statement rules the router evaluates on every new query (the newquery scenario sends 2 KB of SQL):
# nine that do not match, then one that does. All send queries to the clusters' own group.
RULES = [
    {"name": f"catalog-{i}", "when": f'"cat{i}" in statement.catalogs', "group": "adhoc"} for i in range(3)
] + [
    {"name": f"writes-{i}", "when": f'statement.kind == "insert" && "cat{i}.s" in statement.schemas', "group": "adhoc"}
    for i in range(3)
] + [
    {"name": f"tables-{i}", "when": f'statement.tables_read.exists(t, t.startsWith("cat{i}."))', "group": "adhoc"}
    for i in range(3)
] + [{"name": "hive-readers", "when": '"hive" in statement.catalogs && request.user != "guest"', "group": "adhoc"}]

# (mix, connections): what the targets are measured on, the peer comparison, plus long polls.
RUNS = [
    ("short", 1), ("short", 16), ("short", 32),
    ("tiny", 16),
    ("paged", 32),
    ("newquery", 1), ("newquery", 16), ("newquery", 32),
    ("large", 4),
    ("long", 32),
]

DECIDE_FILTER = "trino-router.decide"
LEARN_FILTER = "trino-router.learn"
#: The router's new-statement route (one since every spelling of a new statement shares it).
NEW_STATEMENT_ROUTES = ("new-statement",)


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    what: str
    #: Which router it asks (None: no router): "rules", "defaults" (no rules) or "headers" (no rules,
    #: placement_from_sql off, so the SQL is never sent); "rules-nowait" is a second router with the rules.
    router: str | None = None


SETUPS = {s.key: s for s in [
    Setup("direct", "(a)", "the load tool straight to the emulators"),
    Setup("envoy", "(b)", "plain Envoy: the router's listener and coordinator clusters, one static route on the "
          "client's `x-trino-cluster` header, no ext_proc"),
    Setup("router", "(c)", "Envoy + router as `envoy-config` prints it (RDS), the bench's 10 statement rules: "
          "decide reads headers then the SQL (BUFFERED_PARTIAL), rules analyse it, learn reads the answer's headers",
          "rules"),
    Setup("router-norules", "(c0)", "as (c) with no rules, the router's defaults otherwise "
          "(`placement_from_sql: true` still asks for the SQL and scans it): the config compared with trino-lb",
          "defaults"),
    Setup("router-native", "(r)", "as (c0) with `new_query_routing: envoy` (its `placement_from_sql` default is "
          "then off): Envoy places new statements by the weights the router serves over RDS, no ext_proc stream "
          "once every coordinator id is known", "native"),
    Setup("trino-lb", "(d)", "trino-lb: in-memory persistence, one cluster group with both clusters, no routers, "
          "`maxRunningQueries` high enough never to queue"),
    Setup("headers-only", "(c1)", "as (c0) with `placement_from_sql: false`: decide gets the request headers only "
          "(the headers reply turns the body off), learn as shipped", "headers"),
    Setup("static-learned", "(c1s)", "(c1) on static routes with every coordinator's learned route written in "
          "(RDS's steady state, no RDS): the control for (c2)–(c5), which are built the same way", "headers"),
    Setup("no-learn", "(c2)", "(c1) without the learn filter on the new-statement routes (static routes with every "
          "coordinator's learned route written in, as RDS serves them)", "headers"),
    Setup("observe-learn", "(c3)", "(c1) with the learn filter in `observability_mode` (Envoy does not wait for "
          "it; static routes + learned routes). A router of its own: today's router keeps such a learn stream "
          "open, waiting for a body that never comes, until Envoy's `deferred_close_timeout` (5 s)",
          "headers-observe"),
    Setup("nowait", "(c4)", "(c) with decide's body STREAMED and `send_body_without_waiting_for_header_response`: "
          "headers and SQL go out together (static routes + learned routes; the router's code unchanged, so its "
          "body-phase reply cannot re-route any more: an estimate, not a working config). A router of its own: "
          "its learn filter sees answers from the headers-phase cluster under the body-phase note, and would "
          "teach a shared router wrong coordinator ids", "rules-nowait"),
    Setup("one-message", "(c5)", "decide gets one message: request headers SKIP, the body BUFFERED_PARTIAL "
          "carrying the headers as `request_attributes`; no learn; the client names the cluster (today's router "
          "cannot decide from it: an upper bound for one message per new query)", "headers"),
    Setup("native", "(n)", "Envoy alone, routing as RDS-served weights would: POST /v1/statement by "
          "`weighted_clusters`, follow-ups by the coordinator-id routes; no ext_proc at all"),
]}
DEFAULT_SETUPS = ["direct", "envoy", "router"]
PEER_SETUPS = ["router-norules", "router-native", "trino-lb"]


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds used, peak RSS in bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return cpu, hwm


def hcm_of(bootstrap: dict) -> dict:
    return bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def static_envoy_bootstrap(router_bootstrap: dict) -> dict:
    """Set-up (b): the router's bootstrap without the router — same listener, buffer limit and coordinator
    clusters, the routing header set by the client, no ext_proc filter."""
    b = copy.deepcopy(router_bootstrap)
    b.pop("node", None)
    b["static_resources"]["clusters"] = [c for c in b["static_resources"]["clusters"] if c["name"] != "trino-router"]
    hcm = hcm_of(b)
    hcm.pop("rds", None)
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
    hcm["route_config"] = {
        "name": "static",
        "virtual_hosts": [{
            "name": "static", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster_header": "x-trino-cluster", "timeout": "0s"}}],
        }],
    }
    return b


def learned_route(cluster: str, coordinator_id: str) -> dict:
    """The route the router serves over RDS once it learned a cluster's coordinator id
    (`envoy_bootstrap::route_config`): follow-ups naming it go straight to the cluster, no filter."""
    regex = ("^/(?:v1|ui/api)/(?:statement/(?:queued|executing)|query)/[0-9]{8}_[0-9]{6}_[0-9]{5}_"
             f"(?:{coordinator_id})(?:/.*)?$")
    return {"name": f"learned-{cluster}", "match": {"safe_regex": {"regex": regex}},
            "route": {"cluster": cluster, "timeout": "0s"}}


def with_learned_routes(static_bootstrap: dict, coordinator_ids: dict[str, str]) -> dict:
    """`envoy-config --static-routes` output plus the learned routes RDS would carry, in RDS's order (after
    the new-statement routes, before the catch-all): the steady state of (c), without the router's RDS."""
    b = copy.deepcopy(static_bootstrap)
    routes = hcm_of(b)["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[-1]["name"] == "trino", [r.get("name") for r in routes]
    routes[-1:-1] = [learned_route(c, i) for c, i in coordinator_ids.items()]
    return b


def filter_named(bootstrap: dict, name: str) -> dict:
    return next(f for f in hcm_of(bootstrap)["http_filters"] if f["name"] == name)["typed_config"]


def new_statement_routes(bootstrap: dict) -> list[dict]:
    routes = hcm_of(bootstrap)["route_config"]["virtual_hosts"][0]["routes"]
    found = [r for r in routes if r.get("name") in NEW_STATEMENT_ROUTES]
    assert len(found) == len(NEW_STATEMENT_ROUTES), [r.get("name") for r in routes]
    return found


def without_learn(bootstrap: dict) -> dict:
    b = copy.deepcopy(bootstrap)
    for route in new_statement_routes(b):
        route["typed_per_filter_config"].pop(LEARN_FILTER)
    return b


def observing_learn(bootstrap: dict) -> dict:
    b = copy.deepcopy(bootstrap)
    filter_named(b, LEARN_FILTER)["observability_mode"] = True
    return b


def body_without_waiting(bootstrap: dict) -> dict:
    b = copy.deepcopy(bootstrap)
    filter_named(b, DECIDE_FILTER)["send_body_without_waiting_for_header_response"] = True
    for route in new_statement_routes(b):
        mode = route["typed_per_filter_config"][DECIDE_FILTER]["config"]["overrides"]["processing_mode"]
        mode["request_body_mode"] = "STREAMED"
    return b


def one_message(bootstrap: dict) -> dict:
    """decide: no headers message; the body (BUFFERED_PARTIAL) carries the request headers as attributes."""
    b = without_learn(bootstrap)
    for route in new_statement_routes(b):
        overrides = route["typed_per_filter_config"][DECIDE_FILTER]["config"]["overrides"]
        overrides["processing_mode"]["request_header_mode"] = "SKIP"
        overrides["request_attributes"] = ["request.headers", "request.method", "request.path"]
    return b


def native_bootstrap(static_bootstrap: dict, coordinator_ids: dict[str, str]) -> dict:
    """Envoy routing by itself what the router's RDS could express: the router's routes (virtual host,
    retries, transaction rewrite) with new statements and the catch-all on equal `weighted_clusters`, the
    learned follow-up routes, and no ext_proc filter."""
    b = with_learned_routes(static_bootstrap, coordinator_ids)
    b.pop("node", None)
    b["static_resources"]["clusters"] = [c for c in b["static_resources"]["clusters"] if c["name"] != "trino-router"]
    hcm = hcm_of(b)
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
    weighted = {"clusters": [{"name": c, "weight": 1} for c in coordinator_ids]}
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        route.pop("typed_per_filter_config", None)
        if "cluster_header" in route["route"]:
            del route["route"]["cluster_header"]
            route["route"]["weighted_clusters"] = weighted
    return b


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TrinoLb:
    """trino-lb from a binary built elsewhere (README: Performance), on ports of its own."""

    def __init__(self, binary: Path, emulators: dict):
        self.port, https, metrics = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "trinoLb": {
                "externalAddress": self.url,
                "persistence": {"inMemory": {}},
                "tls": {"enabled": False},
                "ports": {"http": self.port, "https": https, "metrics": metrics},
            },
            "trinoClusterGroups": {
                "default": {
                    # Never queue in trino-lb: the router does not queue either.
                    "maxRunningQueries": 1_000_000,
                    "trinoClusters": [
                        {"name": n, "endpoint": e.url, "credentials": {"username": "bench", "password": "bench"}}
                        for n, e in emulators.items()
                    ],
                },
            },
            "routers": [],
            "routingFallback": "default",
        }
        workdir = harness.scratch_dir("trino-lb")
        path = harness.write_yaml(workdir / "trino-lb.yaml", config)
        # Its log (a line per finished query at its default level) goes straight to a file: a pipe read by
        # this process would cost the bench CPU on a 2-core machine.
        self.log = workdir / "trino-lb.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(binary), "--config-file", str(path)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _failure(self, what: str) -> SystemExit:
        tail = self.log.read_text("utf-8", "replace")[-3000:]
        return SystemExit(f"trino-lb (pid {self.proc.pid}) {what}\n--- {self.log} ---\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Until a query goes through to a coordinator (trino-lb marks clusters ready on its first
        reconcile; before that it queues queries itself)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._failure(f"exited {self.proc.returncode}")
            try:
                resp = harness.http_request("POST", f"{self.url}/v1/statement", "SELECT 1 /* emulator: pages=0 */",
                                            {"X-Trino-User": "bench"}, timeout=5)
                page = resp.json() if resp.status == 200 else {}
                next_uri = page.get("nextUri", "")
                while next_uri:  # finish it, so trino-lb's query counter goes back down
                    if "queued_in_trino_lb" in next_uri:
                        break
                    page = harness.get_json(next_uri)
                    next_uri = page.get("nextUri", "")
                else:
                    if resp.status == 200 and not page.get("error"):
                        return
                last = f"{resp.status} {resp.text[:200]}"
            except (OSError, urllib.error.URLError, ValueError) as e:
                last = repr(e)
            time.sleep(0.5)
        raise self._failure(f"ran no query within {timeout:.0f}s (last: {last})")


class Bench:
    def __init__(self, setups: list[str], duration: float, warmup: float, trino_lb: Path | None):
        self.duration = duration
        self.warmup = warmup
        self.load = harness.require_binary("trino-load")
        self.emulators = {n: harness.start_emulator(n) for n in CLUSTERS}
        self.coordinator_ids = {n: e.emulator_info()["coordinatorId"] for n, e in self.emulators.items()}
        self.routers: dict[str, harness.Router] = {}
        self.envoys: dict[str, harness.Envoy] = {}
        self.trino_lb: TrinoLb | None = None
        self.urls: dict[str, list[str]] = {}
        for key in setups:
            self._start(SETUPS[key], trino_lb)

    def _router(self, kind: str) -> tuple[harness.Router, str]:
        if kind not in self.routers:
            extra: dict = {"rules": RULES} if kind.startswith("rules") else {}
            if kind.startswith("headers"):
                extra["placement_from_sql"] = False
            if kind == "native":
                extra["new_query_routing"] = "envoy"
            doc = harness.router_config_doc([(n, self.emulators[n].url, "adhoc", None) for n in CLUSTERS],
                                            default_group="adhoc", extra=extra)
            path = harness.write_yaml(harness.scratch_dir(f"bench-config-{kind}") / "router.yaml", doc)
            self.routers[kind] = harness.start_router(path, name=f"router-{kind}")
        router = self.routers[kind]
        return router, str(router.config_path)

    def _bootstrap(self, kind: str, static: bool) -> dict:
        router, path = self._router(kind)
        return yaml.safe_load(harness.render_envoy_config(path, router.grpc_addr, static_routes=static))

    def _start(self, setup: Setup, trino_lb: Path | None) -> None:
        key = setup.key
        spread = ["--spread-header", "x-trino-cluster=" + ",".join(CLUSTERS)]
        if key == "direct":
            self.urls[key] = [arg for n in CLUSTERS for arg in ("--url", self.emulators[n].url)]
            return
        if key == "trino-lb":
            if trino_lb is None:
                raise SystemExit("set-up trino-lb needs --trino-lb PATH (README: Performance)")
            self.trino_lb = TrinoLb(trino_lb, self.emulators)
            self.urls[key] = ["--url", self.trino_lb.url]
            return
        if key == "envoy":
            bootstrap = static_envoy_bootstrap(self._bootstrap("rules", static=False))
        elif key in ("router", "router-norules", "headers-only", "router-native"):
            bootstrap = self._bootstrap(setup.router, static=False)
        else:
            learned = with_learned_routes(self._bootstrap(setup.router or "headers", static=True),
                                          self.coordinator_ids)
            bootstrap = {
                "static-learned": lambda b: b,
                "no-learn": without_learn,
                "observe-learn": observing_learn,
                "nowait": body_without_waiting,
                "one-message": one_message,
                "native": lambda b: native_bootstrap(b, self.coordinator_ids),
            }[key](learned)
        self.envoys[key] = harness.start_envoy(yaml.safe_dump(bootstrap), name=f"envoy-{key}")
        self.urls[key] = ["--url", self.envoys[key].url] + (spread if key in ("envoy", "one-message") else [])

    def processes(self, key: str) -> dict[str, int]:
        pids = {f"emulator-{n}": e.proc.proc.pid for n, e in self.emulators.items()}
        if key in self.envoys:
            pids["envoy"] = self.envoys[key].proc.proc.pid
        router = SETUPS[key].router
        if router:
            pids["router"] = self.routers[router].proc.proc.pid
        if key == "trino-lb" and self.trino_lb:
            pids["trino-lb"] = self.trino_lb.proc.pid
        return pids

    def run(self, key: str, mix: str, connections: int) -> dict:
        """One trino-load run; the processes' CPU is sampled at the start and the end of its measuring
        window (the load tool's own clock: warm-up, then duration)."""
        pids = self.processes(key)
        argv = [str(self.load), *self.urls[key], "--mix", mix, "--connections", str(connections),
                "--duration", f"{self.duration}s", "--warmup", f"{self.warmup}s", "--json"]
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(max(0.0, started + self.warmup - time.monotonic()))
        before = {name: proc_stat(pid)[0] for name, pid in pids.items()}
        time.sleep(max(0.0, started + self.warmup + self.duration - time.monotonic()))
        after = {name: proc_stat(pid)[0] for name, pid in pids.items()}
        try:
            out, err = proc.communicate(timeout=self.duration + self.warmup + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        if proc.returncode != 0:
            raise SystemExit(f"trino-load failed ({key} {mix}):\n{err[-3000:]}")
        result = json.loads(out)
        result["cpu"] = {name: after[name] - before[name] for name in pids}
        result["rss"] = {name: proc_stat(pid)[1] for name, pid in pids.items()}
        return result

    def peak_rss(self) -> dict[str, int]:
        peak = {f"router ({kind})": proc_stat(r.proc.proc.pid)[1] for kind, r in self.routers.items()}
        peak.update({f"envoy ({key})": proc_stat(e.proc.proc.pid)[1] for key, e in self.envoys.items()})
        if self.trino_lb:
            peak["trino-lb"] = proc_stat(self.trino_lb.proc.pid)[1]
        return peak

    def ext_proc_stats(self) -> dict[str, dict[str, int]]:
        """Envoy's ext_proc counters per set-up: streams and messages of the decide and learn filters."""
        out = {}
        for key, envoy in self.envoys.items():
            stats = envoy.stats("ext_proc")
            out[key] = {name.removeprefix("http.trino.ext_proc."): int(value) for name, value in stats.items()
                        if value.isdigit() and int(value)}
        return out

    def stop(self) -> None:
        if self.trino_lb:
            self.trino_lb.stop()
        procs = [e.proc for e in self.envoys.values()] + [r.proc for r in self.routers.values()]
        procs += [e.proc for e in self.emulators.values()]
        for proc in procs:
            proc.stop()


def median_key(mix: str) -> str:
    """What a mix's median run is chosen by: result MB/s for `large` (a few 100 MB queries per run, so
    queries/s takes a handful of values and ties), queries/s otherwise."""
    return "mb_per_s" if mix == "large" else "queries_per_s"


def median_run(runs: list[dict], key: str = "queries_per_s") -> dict:
    """The run with the median `key` (its figures kept together); errors summed over all runs, and the
    spread of queries/s over the rounds."""
    ordered = sorted(runs, key=lambda r: r[key])
    chosen = dict(ordered[len(runs) // 2])
    chosen["errors"] = sum(r["errors"] for r in runs)
    chosen["rounds"] = [r[key] for r in runs]
    return chosen


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}" if den else "-"


def cpu_per_query(r: dict) -> str:
    """CPU µs per measured query, per process (the emulators summed)."""
    if not r["queries"]:
        return "- (no query finished in the window)"
    queries = r["queries"]
    emulators = sum(v for k, v in r["cpu"].items() if k.startswith("emulator"))
    parts = [f"{k} {v / queries * 1e6:,.0f}" for k, v in sorted(r["cpu"].items()) if not k.startswith("emulator")]
    parts.append(f"emulators {emulators / queries * 1e6:,.0f}")
    return ", ".join(parts)


def spread(r: dict) -> str:
    values = r["rounds"]
    lo, hi = min(values), max(values)
    med = sorted(values)[len(values) // 2]
    return f"{lo:,.0f}–{hi:,.0f} (±{(hi - lo) / 2 / med * 100:.0f}%)" if med else "-"


def scenario_table(mix: str, connections: int, results: dict[str, dict]) -> list[str]:
    base = results.get("envoy")
    peer = results.get("trino-lb")
    key = median_key(mix)
    per_round = "result MB/s" if key == "mb_per_s" else "queries/s"
    lines = [f"### {mix}, {connections} connection(s)", "",
             f"| set-up | queries/s | ×(b) | ×(d) | result MB/s | POST p50 / p99 ms | follow-up p50 / p99 ms "
             f"| CPU µs per query | {per_round} over the rounds | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for setup, r in results.items():
        post, follow = r["latency_ms"]["post"], r["latency_ms"]["followup"]
        lines.append(
            f"| {SETUPS[setup].label} {setup} | {fmt(r['queries_per_s'])} "
            f"| {ratio(r[key], base[key]) if base else '-'} "
            f"| {ratio(r[key], peer[key]) if peer else '-'} "
            f"| {fmt(r['mb_per_s'])} | {post['p50']:.3f} / {post['p99']:.3f} "
            f"| {follow['p50']:.3f} / {follow['p99']:.3f} | {cpu_per_query(r)} | {spread(r)} | {r['errors']} |")
    lines.append("")
    return lines


def summary(results: dict[tuple[str, int], dict[str, dict]]) -> list[str]:
    """Router vs plain Envoy vs trino-lb per mix (the issue-18 view)."""
    have = set.intersection(*(set(per) for per in results.values())) if results else set()
    if not {"envoy", "router"} <= have:
        return []
    cols = [k for k in ("envoy", "router", "router-norules", "router-native", "trino-lb") if k in have]
    routers = [k for k in ("router", "router-norules", "router-native") if k in cols]
    head = " | ".join(f"{SETUPS[k].label} {k} q/s" for k in cols)
    ratios = [f"{k}/Envoy" for k in routers]
    if "trino-lb" in cols:
        ratios += [f"{k}/trino-lb" for k in routers]
    lines = ["## Summary: router vs Envoy vs trino-lb", "",
             "Queries/s of each set-up's median run; for `large`, result MB/s (its runs finish a handful of "
             "queries). The peer comparison of issue 18 is router-norules/trino-lb and router-native/trino-lb "
             "(no rules on either side; router-native with `new_query_routing: envoy`).", "",
             f"| mix, connections | {head} | {' | '.join(ratios)} | POST p50 ms (b) → (c) |",
             "|---|" + "---:|" * (len(cols) + len(ratios)) + "---|"]
    for (mix, conns), per in results.items():
        q = {k: per[k][median_key(mix)] for k in cols}
        row = [fmt(q[k]) for k in cols] + [ratio(q[k], q["envoy"]) for k in routers]
        if "trino-lb" in cols:
            row += [ratio(q[k], q["trino-lb"]) for k in routers]
        p50 = lambda k: per[k]["latency_ms"]["post"]["p50"]  # noqa: E731
        unit = " MB/s" if mix == "large" else ""
        lines.append(f"| {mix}, {conns}{unit} | {' | '.join(row)} | {p50('envoy'):.2f} → {p50('router'):.2f} |")
    lines.append("")
    return lines


def targets(results: dict[tuple[str, int], dict[str, dict]], router_rss: int | None) -> list[str]:
    def get(mix, conns, key):
        return results.get((mix, conns), {}).get(key)

    checks = []

    def check(name, value_of, op, goal, *needs):
        got = [get(*n) for n in needs]
        if all(got):
            checks.append((name, value_of(*got), op, goal))

    large = next((k for k in results if k[0] == "large"), None)
    if large:
        check("(6) result MB/s on large results, (c)/(b)", lambda c, b: c["mb_per_s"] / b["mb_per_s"], ">=", 0.95,
              (*large, "router"), (*large, "envoy"))
    check("(6) follow-up requests/s, short queries, 32 conns, (c)/(b)",
          lambda c, b: c["followups_per_s"] / b["followups_per_s"], ">=", 0.90,
          ("short", 32, "router"), ("short", 32, "envoy"))
    check("(6) new queries/s, 2 KB SQL + rules, 32 conns, (c)/(b)",
          lambda c, b: c["queries_per_s"] / b["queries_per_s"], ">=", 0.40,
          ("newquery", 32, "router"), ("newquery", 32, "envoy"))
    check("(6) added follow-up p99 at 1 conn, ms",
          lambda c, b: c["latency_ms"]["followup"]["p99"] - b["latency_ms"]["followup"]["p99"], "<=", 0.25,
          ("short", 1, "router"), ("short", 1, "envoy"))
    check("(6, 18) added new-query (POST) p99 at 1 conn, ms",
          lambda c, b: c["latency_ms"]["post"]["p99"] - b["latency_ms"]["post"]["p99"], "<=", 1.0,
          ("newquery", 1, "router"), ("newquery", 1, "envoy"))
    check("(18) new queries/s, 2 KB SQL + rules, 32 conns, (c)/(b)",
          lambda c, b: c["queries_per_s"] / b["queries_per_s"], ">=", 0.50,
          ("newquery", 32, "router"), ("newquery", 32, "envoy"))
    for mix in ("short", "newquery", "tiny"):
        for key, label in (("router-norules", "(c0)"), ("router-native", "(r)")):
            check(f"(18) {mix} queries/s at 16 conns, {label}/(d)",
                  lambda c, d: c["queries_per_s"] / d["queries_per_s"], ">=", 1.2, (mix, 16, key), (mix, 16, "trino-lb"))
            check(f"(18) {mix} queries/s at 1 conn, {label}/(d)", lambda c, d: c["queries_per_s"] / d["queries_per_s"],
                  ">=", 1.0, (mix, 1, key), (mix, 1, "trino-lb"))
    check("(18) follow-ups/s, paged, 32 conns, (c)/(b)", lambda c, b: c["followups_per_s"] / b["followups_per_s"],
          ">=", 0.95, ("paged", 32, "router"), ("paged", 32, "envoy"))
    if large:
        check("(18) result MB/s on large results, (c)/(b)", lambda c, b: c["mb_per_s"] / b["mb_per_s"], ">=", 0.95,
              (*large, "router"), (*large, "envoy"))
    if router_rss is not None:
        checks.append(("(6, 18) router peak RSS, MiB", router_rss / 2**20, "<=", 64))
    if not checks:
        return []
    lines = ["## Targets (issues 6 and 18)", "", "| target | measured | goal | |", "|---|---:|---:|---|"]
    for name, value, op, goal in checks:
        ok = value >= goal if op == ">=" else value <= goal
        lines.append(f"| {name} | {value:.2f} | {op} {goal} | {'met' if ok else 'MISSED'} |")
    lines.append("")
    return lines


def ext_proc_table(stats: dict[str, dict[str, int]]) -> list[str]:
    """Per set-up with a router filter: streams, and messages each way per stream, over the whole run."""
    rows = []
    for key, counters in stats.items():
        for role in ("decide", "learn"):
            streams = counters.get(f"{role}.streams_started", 0)
            if not streams:
                continue
            sent = counters.get(f"{role}.stream_msgs_sent", 0)
            received = counters.get(f"{role}.stream_msgs_received", 0)
            failed = counters.get(f"{role}.streams_failed", 0)
            rows.append(f"| {SETUPS[key].label} {key} | {role} | {streams:,} | {sent / streams:.2f} "
                        f"| {received / streams:.2f} | {failed:,} |")
    if not rows:
        return []
    return ["## Envoy's ext_proc streams (whole run, warm-ups included)", "",
            "| set-up | filter | streams | messages sent per stream | replies per stream | failed streams |",
            "|---|---|---:|---:|---:|---:|", *rows, ""]


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    envoy = harness.envoy_version()
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
            f"Envoy {envoy}, Python {platform.python_version()}")


def trino_lb_version(binary: Path) -> str:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or out.stderr.strip()
    except OSError as e:
        return f"unknown ({e})"


def parse_runs(text: str) -> list[tuple[str, int]]:
    runs = []
    for item in text.split(","):
        mix, _, conns = item.strip().partition(":")
        if not mix or not conns.isdigit():
            raise argparse.ArgumentTypeError(f"--runs {item!r}: expected MIX:CONNECTIONS")
        runs.append((mix, int(conns)))
    return runs


def parse_setups(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SETUPS]
    if unknown:
        raise argparse.ArgumentTypeError(f"--setups: unknown {unknown}; known: {', '.join(SETUPS)}")
    return keys


def measure(args: argparse.Namespace) -> dict:
    """Runs every mix through every set-up; returns every run's figures and what the report needs."""
    runs = args.runs or RUNS
    runs = [r for r in runs if not args.only or r[0] == args.only]
    setups = args.setups or (DEFAULT_SETUPS + (PEER_SETUPS if args.trino_lb else []))
    if args.trino_lb and not args.trino_lb.is_file():
        raise SystemExit(f"--trino-lb {args.trino_lb}: no such file")
    bench = Bench(setups, args.duration, args.warmup, args.trino_lb)
    raw: list[dict] = []
    try:
        for i, (mix, conns) in enumerate(runs):
            for n in range(args.rounds):
                shift = (i + n) % len(setups)
                for key in setups[shift:] + setups[:shift]:
                    print(f"  {mix:9} {conns:3} conns  {key:15} round {n + 1} ...", end="", flush=True,
                          file=sys.stderr)
                    r = bench.run(key, mix, conns)
                    raw.append({"mix": mix, "connections": conns, "setup": key, "round": n + 1, **r})
                    print(f" {r['queries_per_s']:9.1f} q/s {r['requests_per_s']:9.1f} req/s {r['mb_per_s']:8.1f} MB/s"
                          f"  errors {r['errors']}", file=sys.stderr)
        peak = bench.peak_rss()
        ext_proc = bench.ext_proc_stats()
    finally:
        bench.stop()
    return {
        "command": "scripts/bench" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "rounds": args.rounds, "duration": args.duration, "warmup": args.warmup, "setups": setups,
        "trino_lb": trino_lb_version(args.trino_lb) if args.trino_lb else None,
        "runs": raw, "peak_rss": peak, "ext_proc": ext_proc,
    }


def render(data: dict) -> tuple[str, int]:
    """The report (markdown) of a measurement, and its error count."""
    results: dict[tuple[str, int], dict[str, dict]] = {}
    for run in data["runs"]:
        results.setdefault((run["mix"], run["connections"]), {}).setdefault(run["setup"], []).append(run)
    results = {k: {s: median_run(rs, median_key(k[0])) for s, rs in per.items()} for k, per in results.items()}
    errors = sum(r["errors"] for per in results.values() for r in per.values())
    report = [
        "# Data-path benchmark", "",
        f"Run {data['time']} on {data['machine']}.",
        f"Command: `{data['command']}` ({data['rounds']} interleaved rounds per set-up, the median run reported; "
        f"{data['duration']:g} s measured after {data['warmup']:g} s warm-up per run; "
        f"2 emulated clusters; (c) has {len(RULES)} statement rules). "
        "Ratios compare set-ups measured in the same run; the machine is shared and noisy: the last column but "
        "one gives each set-up's spread over the rounds.",
    ]
    if data.get("rerendered"):
        report.append(f"Report rendered again from that run's figures (`{data['rerendered']}`).")
    if data.get("trino_lb"):
        report.append(f"trino-lb: `{data['trino_lb']}` (built as README: Performance says).")
    report += ["", "Set-ups:", ""]
    report += [f"- {SETUPS[k].label} `{k}`: {SETUPS[k].what}" for k in data["setups"]] + [""]
    report += summary(results)
    for (mix, conns), per in results.items():
        report += scenario_table(mix, conns, {k: per[k] for k in data["setups"] if k in per})
    peak = data["peak_rss"]
    report += ["## Peak RSS (VmHWM at the end of the run)", "", "| process | MiB |", "|---|---:|"]
    report += [f"| {name} | {rss / 2**20:.1f} |" for name, rss in peak.items()] + [""]
    report += ext_proc_table(data["ext_proc"])
    router_rss = max((v for k, v in peak.items() if k.startswith("router")), default=None)
    report += targets(results, router_rss)
    report.append(f"Errors in all runs: {errors}.")
    return "\n".join(report) + "\n", errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per set-up and mix, interleaved; the median run (by queries/s, by MB/s for large) is reported")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--only", help="run only this mix (tiny, short, paged, newquery, large, long)")
    parser.add_argument("--runs", type=parse_runs,
                        help="MIX:CONNECTIONS,... instead of the default list (e.g. tiny:16,newquery:1)")
    parser.add_argument("--setups", type=parse_setups,
                        help=f"set-ups to run, comma-separated (default {','.join(DEFAULT_SETUPS)}, plus "
                             f"{','.join(PEER_SETUPS)} with --trino-lb); all: {', '.join(SETUPS)}")
    parser.add_argument("--trino-lb", type=Path, metavar="PATH",
                        help="a trino-lb binary (README: Performance): adds set-ups (c0) router-norules, (r) router-native "
                             "and (d) trino-lb")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every run's figures as JSON")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="measure nothing: render the report of a run saved with --json")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(REPO)}")
    parser.add_argument("--results", type=Path, metavar="PATH",
                        help=f"write the report here (default: {RESULTS.relative_to(REPO)}, complete runs only)")
    args = parser.parse_args()
    # Release binaries and logs of their own (set here, not at import: tests import the set-up builders).
    os.environ.setdefault("TRINO_ROUTER_BIN_DIR", str(REPO / "target" / "release"))
    os.environ.setdefault("TRINO_E2E_LOG_DIR", str(REPO / "target" / "bench-logs"))
    harness.install_signal_handlers()  # SIGTERM too stops every process the bench started

    if args.from_json:
        data = json.loads(args.from_json.read_text())
        data["rerendered"] = "scripts/bench " + " ".join(sys.argv[1:])
    else:
        data = measure(args)
    text, errors = render(data)
    print(text)
    if args.json and not args.from_json:
        args.json.write_text(json.dumps(data, indent=1))
    complete = not args.only and not args.runs and not args.setups and not args.from_json
    target = args.results or (RESULTS if complete else None)
    if target and not args.no_write:
        target.write_text(text)
        print(f"wrote {target}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
