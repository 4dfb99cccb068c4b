"""The benchmark's load generator, briefly, through the default stack (Envoy + router + strict emulators).

Not a benchmark: it checks that `trino-load` runs every mix's whole query lifecycle through the set-up the
benchmark measures without a single error (a misrouted follow-up would be one), so `scripts/bench` cannot
rot unnoticed. Figures come from `scripts/bench` only.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import harness

sys.path.insert(0, str(harness.REPO_ROOT / "benches"))
import datapath  # noqa: E402  (the benchmark's set-up builders)


@pytest.mark.parametrize("mix", ["tiny", "short", "newquery", "paged"])
def test_every_mix_runs_clean_through_envoy_and_the_router(stack, mix):
    load = harness.require_binary("trino-load")
    argv = [str(load), "--url", stack.envoy.url, "--mix", mix, "--connections", "4",
            "--duration", "1s", "--warmup", "200ms", "--json"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    print(f"{mix}: {report['queries']} queries, {report['requests']} requests, errors {report['errors']}")
    assert report["errors"] == 0, report["error_samples"]
    # Every mix has at least 2 follow-ups per query; the measuring window cuts some queries in two.
    assert report["queries"] > 0 and report["followups"] >= report["queries"], report
    assert report["latency_ms"]["followup"]["count"] == report["followups"], report


def test_the_tiny_mix_is_the_shortest_query_trino_has(stack):
    """tiny: POST, the queued GET that dispatches, one executing answer that is already final: two
    follow-ups per query, no rows (a query with rows always gets one more page from Trino)."""
    load = harness.require_binary("trino-load")
    argv = [str(load), "--url", stack.envoy.url, "--mix", "tiny", "--connections", "2",
            "--duration", "1s", "--warmup", "200ms", "--json"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["errors"] == 0, report["error_samples"]
    assert report["queries"] > 10, report
    assert report["rows"] == 0, report
    # Each client may have one query cut by each end of the measuring window (at most 2 follow-ups each).
    slack = 2 * report["connections"]
    assert abs(report["followups"] - 2 * report["queries"]) <= slack, report
    assert abs(report["latency_ms"]["post"]["count"] - report["queries"]) <= report["connections"], report


@pytest.mark.parametrize("kind", ["rules", "headers"])
def test_the_bench_set_ups_envoy_accepts(kind):
    """benches/datapath.py builds its cost-study set-ups by editing envoy-config's output (learned routes
    written in, learn off or observing, one-message, STREAMED without waiting, native weighted clusters):
    each must stay a bootstrap Envoy 1.40 accepts, and must still find the routes and filters it edits."""
    extra = {"rules": datapath.RULES} if kind == "rules" else {"placement_from_sql": False}
    clusters = [("a", "http://127.0.0.1:18081", "adhoc"), ("b", "http://127.0.0.1:18082", "adhoc")]
    doc = harness.router_config_doc(clusters, extra=extra)
    path = harness.write_yaml(harness.scratch_dir("bench-set-ups") / "router.yaml", doc)
    rds = yaml.safe_load(harness.render_envoy_config(path, "127.0.0.1:50051"))
    static = yaml.safe_load(harness.render_envoy_config(path, "127.0.0.1:50051", static_routes=True))
    ids = {"a": "abcde", "b": "fghij"}
    learned = datapath.with_learned_routes(static, ids)
    routes = datapath.hcm_of(learned)["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in routes[-3:]] == ["learned-a", "learned-b", "trino"], [r["name"] for r in routes]
    variants = {
        "envoy": datapath.static_envoy_bootstrap(rds),
        "no-learn": datapath.without_learn(learned),
        "observe-learn": datapath.observing_learn(learned),
        "nowait": datapath.body_without_waiting(learned),
        "one-message": datapath.one_message(learned),
        "native": datapath.native_bootstrap(static, ids),
    }
    for name, bootstrap in variants.items():
        out = harness.validate_envoy_config(yaml.safe_dump(bootstrap))
        assert out.returncode == 0, f"{name}: {out.stdout[-2000:]}{out.stderr[-2000:]}"
