"""The data-path benchmark: the same load against the same emulators through three set-ups, in one run.

  (a) direct   client -> emulators
  (b) envoy    client -> Envoy, static routes, no ext_proc (the client names the cluster in a header)
  (c) router   client -> Envoy + trino-router, exactly as `trino-router envoy-config` prints it

Run it with `scripts/bench` (release build). It prints one table per scenario with the figures of each
set-up and the ratios (c)/(b) and (b)/(a), then the issue-6 targets with pass/miss, and writes the whole
report, with the machine it ran on, to benches/datapath-results.md (`--no-write` to skip that).
The load generator is `trino-load` (tools/src/bin/trino-load); each scenario runs every set-up back to back, in
several rounds whose order rotates (no set-up always runs first), and reports each set-up's median run:
the machine is shared and noisy, and one run per set-up swung ratios by a third between runs.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))
os.environ.setdefault("TRINO_ROUTER_BIN_DIR", str(REPO / "target" / "release"))
os.environ.setdefault("TRINO_E2E_LOG_DIR", str(REPO / "target" / "bench-logs"))

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

# (scenario, connections, duration seconds): what the targets are measured on, plus long polls.
RUNS = [
    ("short", 1), ("short", 32),
    ("paged", 32),
    ("newquery", 1), ("newquery", 32),
    ("large", 4),
    ("long", 32),
]


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


def static_envoy_bootstrap(router_bootstrap: dict) -> dict:
    """Set-up (b): the router's bootstrap without the router — same listener, buffer limit and coordinator
    clusters, the routing header set by the client, no ext_proc filter."""
    b = copy.deepcopy(router_bootstrap)
    b.pop("node", None)
    b["static_resources"]["clusters"] = [c for c in b["static_resources"]["clusters"] if c["name"] != "trino-router"]
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
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


class Bench:
    def __init__(self, duration: float, warmup: float):
        self.duration = duration
        self.warmup = warmup
        self.load = harness.require_binary("trino-load")
        self.emulators = {n: harness.start_emulator(n) for n in CLUSTERS}
        doc = harness.router_config_doc([(n, self.emulators[n].url, "adhoc", None) for n in CLUSTERS],
                                        default_group="adhoc", extra={"rules": RULES})
        config_path = harness.write_yaml(harness.scratch_dir("bench-config") / "router.yaml", doc)
        self.router = harness.start_router(config_path)
        router_bootstrap = harness.render_envoy_config(config_path, self.router.grpc_addr)
        self.envoy_router = harness.start_envoy(router_bootstrap, name="envoy-router")
        static = yaml.safe_dump(static_envoy_bootstrap(yaml.safe_load(router_bootstrap)))
        self.envoy_static = harness.start_envoy(static, name="envoy-static")
        self.setups = {
            "direct": [arg for n in CLUSTERS for arg in ("--url", self.emulators[n].url)],
            "envoy": ["--url", self.envoy_static.url, "--spread-header", "x-trino-cluster=" + ",".join(CLUSTERS)],
            "router": ["--url", self.envoy_router.url],
        }

    def processes(self, setup: str) -> dict[str, int]:
        pids = {f"emulator-{n}": e.proc.proc.pid for n, e in self.emulators.items()}
        if setup == "envoy":
            pids["envoy"] = self.envoy_static.proc.proc.pid
        if setup == "router":
            pids["envoy"] = self.envoy_router.proc.proc.pid
            pids["router"] = self.router.proc.proc.pid
        return pids

    def run(self, setup: str, scenario: str, connections: int) -> dict:
        pids = self.processes(setup)
        before = {name: proc_stat(pid)[0] for name, pid in pids.items()}
        argv = [str(self.load), *self.setups[setup], "--mix", scenario, "--connections", str(connections),
                "--duration", f"{self.duration}s", "--warmup", f"{self.warmup}s", "--json"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=self.duration + self.warmup + 60)
        if out.returncode != 0:
            raise SystemExit(f"trino-load failed ({setup} {scenario}):\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout)
        result["cpu"] = {name: proc_stat(pid)[0] - before[name] for name, pid in pids.items()}
        result["rss"] = {name: proc_stat(pid)[1] for name, pid in pids.items()}
        return result

    def stop(self) -> None:
        for proc in (self.envoy_static.proc, self.envoy_router.proc, self.router.proc,
                     *(e.proc for e in self.emulators.values())):
            proc.stop()


def median_run(runs: list[dict]) -> dict:
    """The run with the median queries/s (its figures kept together); errors summed over all runs."""
    chosen = dict(sorted(runs, key=lambda r: r["queries_per_s"])[len(runs) // 2])
    chosen["errors"] = sum(r["errors"] for r in runs)
    return chosen


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}" if den else "-"


def scenario_table(scenario: str, connections: int, results: dict[str, dict]) -> list[str]:
    a, b, c = results["direct"], results["envoy"], results["router"]
    rows = [
        ("queries/s", "queries_per_s", 1),
        ("requests/s", "requests_per_s", 0),
        ("follow-ups/s", "followups_per_s", 0),
        ("result MB/s", "mb_per_s", 1),
    ]
    lines = [f"### {scenario}, {connections} connection(s)", "",
             "| figure | (a) direct | (b) Envoy | (c) Envoy + router | (c)/(b) | (b)/(a) |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, key, digits in rows:
        lines.append(f"| {label} | {fmt(a[key], digits)} | {fmt(b[key], digits)} | {fmt(c[key], digits)} "
                     f"| {ratio(c[key], b[key])} | {ratio(b[key], a[key])} |")
    for kind in ("post", "followup"):
        for p in ("p50", "p90", "p99"):
            va, vb, vc = (r["latency_ms"][kind][p] for r in (a, b, c))
            if not (r["latency_ms"][kind]["count"] for r in (a, b, c)):
                continue
            lines.append(f"| {kind} {p} ms | {va:.3f} | {vb:.3f} | {vc:.3f} | {vc - vb:+.3f} ms | {vb - va:+.3f} ms |")
    lines.append(f"| errors | {a['errors']} | {b['errors']} | {c['errors']} | | |")
    cpu = lambda r: ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["cpu"].items()))  # noqa: E731
    lines.append(f"| CPU s (load tool; processes) | {a['cpu_s']:.1f}; {cpu(a)} | {b['cpu_s']:.1f}; {cpu(b)} "
                 f"| {c['cpu_s']:.1f}; {cpu(c)} | | |")
    lines.append("")
    return lines


def targets(results: dict[tuple[str, int], dict[str, dict]], peak_rss: dict[str, int]) -> list[str]:
    def get(scenario, conns, setup):
        return results[(scenario, conns)][setup]

    checks = []
    large = next(k for k in results if k[0] == "large")
    c, b = get(*large, "router"), get(*large, "envoy")
    checks.append(("result MB/s on large results, (c)/(b)", c["mb_per_s"] / b["mb_per_s"], ">=", 0.95))
    c, b = get("short", 32, "router"), get("short", 32, "envoy")
    checks.append(("follow-up requests/s, short queries, 32 conns, (c)/(b)",
                   c["followups_per_s"] / b["followups_per_s"], ">=", 0.90))
    c, b = get("newquery", 32, "router"), get("newquery", 32, "envoy")
    checks.append(("new queries/s, 2 KB SQL + rules, 32 conns, (c)/(b)",
                   c["queries_per_s"] / b["queries_per_s"], ">=", 0.40))
    c, b = get("short", 1, "router"), get("short", 1, "envoy")
    checks.append(("added follow-up p99 at 1 conn, ms", c["latency_ms"]["followup"]["p99"] - b["latency_ms"]["followup"]["p99"], "<=", 0.25))
    c, b = get("newquery", 1, "router"), get("newquery", 1, "envoy")
    checks.append(("added new-query (POST) p99 at 1 conn, ms", c["latency_ms"]["post"]["p99"] - b["latency_ms"]["post"]["p99"], "<=", 1.0))
    checks.append(("router peak RSS, MiB", peak_rss["router"] / 2**20, "<=", 64))
    lines = ["## Targets (issue 6)", "", "| target | measured | goal | |", "|---|---:|---:|---|"]
    for name, value, op, goal in checks:
        ok = value >= goal if op == ">=" else value <= goal
        lines.append(f"| {name} | {value:.2f} | {op} {goal} | {'met' if ok else 'MISSED'} |")
    lines.append("")
    return lines


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    envoy = harness.envoy_version()
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
            f"Envoy {envoy}, Python {platform.python_version()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per set-up and scenario, interleaved; the median run (by queries/s) is reported")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--only", help="run only this scenario (short, paged, newquery, large, long)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(REPO)}")
    args = parser.parse_args()

    runs = [r for r in RUNS if not args.only or r[0] == args.only]
    bench = Bench(args.duration, args.warmup)
    results: dict[tuple[str, int], dict[str, dict]] = {}
    order = ["direct", "envoy", "router"]
    try:
        for i, (scenario, conns) in enumerate(runs):
            rounds: dict[str, list[dict]] = {setup: [] for setup in order}
            for n in range(args.rounds):
                rotated = order[(i + n) % 3:] + order[:(i + n) % 3]
                for setup in rotated:
                    print(f"  {scenario:9} {conns:3} conns  {setup:7} round {n + 1} ...", end="", flush=True,
                          file=sys.stderr)
                    r = bench.run(setup, scenario, conns)
                    rounds[setup].append(r)
                    print(f" {r['queries_per_s']:9.1f} q/s {r['requests_per_s']:9.1f} req/s {r['mb_per_s']:8.1f} MB/s"
                          f"  errors {r['errors']}", file=sys.stderr)
            results[(scenario, conns)] = {setup: median_run(runs) for setup, runs in rounds.items()}
        peak = {"router": proc_stat(bench.router.proc.proc.pid)[1],
                "envoy (with router)": proc_stat(bench.envoy_router.proc.proc.pid)[1],
                "envoy (static)": proc_stat(bench.envoy_static.proc.proc.pid)[1]}
    finally:
        bench.stop()

    errors = sum(r["errors"] for per in results.values() for r in per.values())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = [
        "# Data-path benchmark", "",
        f"Run {now} on {machine()}.",
        f"Command: `scripts/bench` ({args.rounds} interleaved rounds per set-up, the median reported; "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up per run; "
        f"2 emulated clusters; the router config has {len(RULES)} statement rules). "
        "Ratios compare set-ups measured in the same run; the machine is shared and noisy.", "",
    ]
    for (scenario, conns), per in results.items():
        report += scenario_table(scenario, conns, per)
    report += ["## Peak RSS", "", "| process | MiB |", "|---|---:|"]
    report += [f"| {name} | {rss / 2**20:.1f} |" for name, rss in peak.items()] + [""]
    if not args.only:
        report += targets(results, {"router": peak["router"]})
    report.append(f"Errors in all runs: {errors}.")
    text = "\n".join(report) + "\n"
    print(text)
    if not args.no_write and not args.only:
        RESULTS.write_text(text)
        print(f"wrote {RESULTS.relative_to(REPO)}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
