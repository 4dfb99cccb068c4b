"""The benchmark's load generator, briefly, through the default stack (Envoy + router + strict emulators).

Not a benchmark: it checks that `trino-load` runs every mix's whole query lifecycle through the set-up the
benchmark measures without a single error (a misrouted follow-up would be one), so `scripts/bench` cannot
rot unnoticed. Figures come from `scripts/bench` only.
"""

from __future__ import annotations

import json
import subprocess

import pytest

import harness


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
