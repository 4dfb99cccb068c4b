"""Quickstart: two emulators, the router and a real Envoy on ephemeral loopback ports, one real query.

Run by ``scripts/quickstart`` (which builds everything first) as ``.venv/bin/python tests/e2e/quickstart.py``.
Prints the Envoy URL and which cluster served the query, then stops every process (also on Ctrl-C or an
error). Exit status 0 on success.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def main() -> int:
    harness.install_signal_handlers()
    try:
        import trino.dbapi
    except ImportError as exc:
        print(f"quickstart: the trino client is missing ({exc}): run scripts/setup", file=sys.stderr)
        return 1
    stack = None
    try:
        stack = harness.start_stack(clusters=(("trino-a", "adhoc"), ("trino-b", "adhoc")))
        print(f"emulators:   {', '.join(f'{n} {e.url}' for n, e in stack.emulators.items())}")
        print(f"router gRPC: {stack.router.grpc_addr} (config {stack.config_path})")
        print(f"Envoy:       {stack.url} (admin {stack.envoy.admin_url})")
        conn = trino.dbapi.connect(host=stack.host, port=stack.port, user="quickstart", http_scheme="http")
        cur = conn.cursor()
        sql = "/* emulator: pages=3 rows=2 */ SELECT 1"
        cur.execute(sql)
        rows = cur.fetchall()
        clusters = sorted({row[0] for row in rows})
        print(f"query:       {sql}")
        print(f"             id {cur.query_id}, {len(rows)} rows")
        if len(clusters) != 1:
            print(f"quickstart: the rows came from several clusters: {clusters}", file=sys.stderr)
            return 1
        print(f"served by:   {clusters[0]}")
        return 0
    except (harness.ProcessFailed, harness.Missing) as exc:
        print(f"quickstart: {exc}", file=sys.stderr)
        return 1
    finally:
        if stack is not None:
            stack.stop()
        harness.stop_all()
        print(f"logs:        {harness._log_root()}")


if __name__ == "__main__":
    sys.exit(main())
