"""Operating the router: its Prometheus metrics after a mixed workload, through real Envoy and real clients.

The counters must match what the test sent: new queries per cluster (checked against each strict emulator's
own list of queries), per rule and per group; config reloads by outcome.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import harness

RULES = [{"name": "etl-writes", "when": 'statement.kind in ["insert", "create_table_as"]', "group": "etl"}]
_SAMPLE = re.compile(r'^(trino_router_\w+)(?:\{([^}]*)\})? (\S+)$')


def scrape(router: harness.Router) -> dict[tuple[str, frozenset], float]:
    """``/metrics`` as {(name, labels): value}."""
    resp = harness.http_request("GET", router.metrics_url)
    assert resp.status == 200, resp.status
    samples = {}
    for line in resp.text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def total(samples, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_metrics_count_what_was_sent(make_stack):
    stack = make_stack(clusters=[("a", "adhoc"), ("b", "adhoc"), ("etl", "etl")],
                       extra_config={"metrics_listen": "127.0.0.1:0", "rules": RULES})
    sent = Counter()
    for n in range(6):
        harness.run_query(stack, f"reader-{n}", f"SELECT {n} /* emulator: pages=2 */")
        sent[("adhoc", "")] += 1
    for n in range(4):
        harness.run_query(stack, f"writer-{n}", f"INSERT INTO hive.s.t SELECT {n}")
        sent[("etl", "etl-writes")] += 1
    for n in range(3):
        harness.run_query(stack, f"grouped-{n}", "SELECT 1", http_headers={"X-Trino-Routing-Group": "etl"})
        sent[("etl", "")] += 1

    samples = scrape(stack.router)
    got = {key: total(samples, "trino_router_new_queries_total", group=key[0], rule=key[1]) for key in sent}
    print(f"sent {dict(sent)}; counted {got}")
    assert got == {key: float(n) for key, n in sent.items()}
    for name, emu in stack.emulators.items():
        received = len(emu.queries())
        counted = total(samples, "trino_router_new_queries_total", cluster=name)
        print(f"  {name}: emulator received {received}, router counted {counted}")
        assert counted == received, name
    assert total(samples, "trino_router_new_queries_total") == sum(sent.values())
    assert total(samples, "trino_router_ext_proc_streams_total", role="decide") >= sum(sent.values())
    assert total(samples, "trino_router_decision_duration_seconds_count") >= sum(sent.values())
    assert total(samples, "trino_router_cluster_healthy", cluster="etl") == 1
    assert total(samples, "trino_router_cluster_accepts_new_queries") == 3

    # An unknown query id: looked up on every cluster, found nowhere, answered 404.
    resp = harness.http_request("GET", f"{stack.envoy.url}/v1/query/20260101_000000_00000_zzzzz")
    assert resp.status == 404
    samples = scrape(stack.router)
    assert total(samples, "trino_router_discovery_lookups_total", outcome="not_found") == 1
    assert total(samples, "trino_router_refusals_total", outcome="query_not_found") == 1

    # Reloads: a broken file is counted as failed (and changes nothing), the fixed one as ok.
    good = stack.config_path.read_text()
    stack.config_path.write_text(good.replace("clusters:", "clusters: [", 1))
    assert harness.wait_for(lambda: total(scrape(stack.router), "trino_router_config_reloads_total", outcome="failed") == 1, 10)
    time.sleep(0.1)
    stack.config_path.write_text(good + "\n# touched\n")
    assert harness.wait_for(lambda: total(scrape(stack.router), "trino_router_config_reloads_total", outcome="ok") == 1, 10)


def test_one_log_line_per_new_query_with_its_id_and_no_sql(make_stack):
    stack = make_stack(clusters=[("a", "adhoc"), ("etl", "etl")],
                       extra_config={"rules": RULES, "query_log": {"query_ids": True}},
                       router_env={"TRINO_ROUTER_LOG_FORMAT": "json"})
    harness.run_query(stack, "alice", "SELECT 42 /* emulator: pages=2 */")
    harness.run_query(stack, "bob", "INSERT INTO hive.s.t SELECT 'secret-literal'")
    import json
    lines = [json.loads(line) for line in stack.router.log().splitlines() if '"new query"' in line]
    print("\n".join(json.dumps(line["fields"]) for line in lines))
    assert len(lines) == 2, lines
    ids = {name: {q["id"] for q in emu.queries()} for name, emu in stack.emulators.items()}
    alice, bob = (next(line["fields"] for line in lines if line["fields"]["user"] == u) for u in ("alice", "bob"))
    assert alice["query_id"] in ids["a"] and alice["cluster"] == "a" and alice["group"] == "adhoc"
    assert alice["rule"] == ""
    assert bob["query_id"] in ids["etl"] and bob["cluster"] == "etl" and bob["rule"] == "etl-writes"
    assert all(line["fields"]["decision_us"] >= 0 for line in lines)
    assert "secret-literal" not in stack.router.log(), "no SQL text unless query_log.sql"


def test_grafana_dashboard_queries_metrics_the_router_exports(make_stack):
    """Every metric the dashboard's queries name exists in a live router's /metrics (after some traffic)."""
    import json
    dashboard = json.loads((harness.REPO_ROOT / "envoy" / "grafana" / "trino-router-dashboard.json").read_text())
    stack = make_stack(clusters=[("a", "adhoc")], extra_config={"metrics_listen": "127.0.0.1:0"})
    harness.run_query(stack, "u", "SELECT 1")
    harness.http_request("GET", f"{stack.envoy.url}/v1/query/20260101_000000_00000_zzzzz")
    # A refusal the router makes without asking any coordinator (the unknown id above is refused after a
    # lookup finds it nowhere).
    harness.http_request("GET", f"{stack.envoy.url}/v1/query/not-a-query-id")
    exported = {name for name, _ in scrape(stack.router)}
    # Families declared but without a sample yet (nothing refused, say) appear in their # TYPE lines.
    text = harness.http_request("GET", stack.router.metrics_url).text
    for name, kind in re.findall(r"^# TYPE (trino_router_\w+) (\w+)$", text, re.MULTILINE):
        exported |= {name, name + "_total"} if kind == "counter" else {name, name + "_bucket"}
    named = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            named |= set(re.findall(r"trino_router_\w+", target["expr"]))
    missing = {n for n in named if n not in exported and re.sub(r"_bucket$", "", n) not in exported}
    print(f"dashboard names {len(named)} metrics")
    assert named and not missing, f"the dashboard queries metrics the router does not export: {missing}"


def test_status_page_in_a_real_browser(make_stack, tmp_path):
    """The status page on the metrics port, loaded by headless Chromium (Debian's package): its DOM lists
    every cluster and the recent queries, and a screenshot is taken (kept with the test logs)."""
    import shutil
    import subprocess

    chromium = shutil.which("chromium")
    if chromium is None:
        harness._missing("chromium is not installed: run scripts/setup as root (Debian package chromium)")
    stack = make_stack(clusters=[("a", "adhoc"), ("etl", "etl")],
                       extra_config={"metrics_listen": "127.0.0.1:0", "rules": RULES})
    harness.run_query(stack, "page-reader", "SELECT 1")
    harness.run_query(stack, "page-writer", "INSERT INTO hive.s.t SELECT 1")
    url = stack.router.metrics_url.removesuffix("metrics")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for expected in ('id="clusters"', "<td>a</td><td>adhoc</td>", "<td>etl</td><td>etl</td>", "page-reader",
                     "page-writer", "etl-writes"):
        assert expected in dom.stdout, f"{expected!r} missing from the page:\n{dom.stdout[:3000]}"
    shot = harness.scratch_dir("status-page") / "status-page.png"
    taken = subprocess.run([chromium, *flags, f"--screenshot={shot}", url], capture_output=True, text=True,
                           timeout=60)
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000, shot
    print(f"screenshot: {shot} ({shot.stat().st_size} bytes)")
