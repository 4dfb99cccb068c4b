"""The router's own ports under idle and half-sent connections (issue 16, item 3), with the real Envoy:

2,000 idle TCP connections to each router port (gRPC ``listen``, ``admin.listen``, ``metrics_listen``),
plus half-sent ones (part of an HTTP/2 preface, part of an HTTP/1 request):

- decisions are still served through Envoy (every request answered) and the metrics port still answers a
  new client; the latency of decisions is printed before and during, as a ratio (p50, p99) — figures,
  not a bound: the machine is shared;
- every idle and half-sent connection is closed by the router within its port's documented idle timeout
  (``operate::listener``: 30 s on the gRPC ports, 10 s on the HTTP port), with slack for a loaded machine.

Runnable on its own: ``.venv/bin/python -m pytest tests/e2e/test_port_limits.py -s`` prints the figures.
"""

from __future__ import annotations

import selectors
import socket
import statistics
import time

import requests

import harness

IDLE_PER_PORT = 2000
HALF_SENT_PER_PORT = 50
#: The documented idle timeouts (src/operate/listener.rs).
GRPC_IDLE = 30.0
HTTP_IDLE = 10.0
#: A loaded machine may close late; never early matters less than never.
SLACK = 20.0


def decision_latencies(url: str, n: int) -> list[float]:
    """``n`` sequential requests through Envoy that the router decides (``GET /v1/info``: the default
    group); each must be answered 200."""
    session = requests.Session()
    took = []
    for _ in range(n):
        started = time.perf_counter()
        answer = session.get(f"{url}/v1/info", timeout=10)
        took.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text[:300]
    return took


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def open_connections(addr: tuple[str, int], n: int, first_bytes: bytes = b"") -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(addr, timeout=10)
        if first_bytes:
            s.sendall(first_bytes)
        s.setblocking(False)
        out.append(s)
    return out


def wait_closed(sockets: dict[str, list[socket.socket]], deadline_s: dict[str, float]) -> dict[str, float]:
    """Waits until the router closed every socket (EOF or reset); returns, per kind, when the last one
    closed (seconds since the call). Fails when a kind is still open after its deadline."""
    selector = selectors.DefaultSelector()
    open_by_kind = {}
    for kind, socks in sockets.items():
        open_by_kind[kind] = len(socks)
        for s in socks:
            selector.register(s, selectors.EVENT_READ, kind)
    started = time.monotonic()
    last = {kind: 0.0 for kind in sockets}
    while any(open_by_kind.values()):
        now = time.monotonic() - started
        late = [k for k, left in open_by_kind.items() if left and now > deadline_s[k]]
        assert not late, f"still open after the deadline: {[(k, open_by_kind[k]) for k in late]}"
        for key, _ in selector.select(timeout=0.5):
            s, kind = key.fileobj, key.data
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                continue  # the server's HTTP/2 settings or a ping: not closed yet
            selector.unregister(s)
            s.close()
            open_by_kind[kind] -= 1
            last[kind] = time.monotonic() - started
    selector.close()
    return last


def test_idle_and_half_sent_connections(envoy_bin):
    stack = harness.start_stack(
        extra_config={
            "metrics_listen": "127.0.0.1:0",
            "admin": {"token": "e2e-port-limits-admin-token", "listen": "127.0.0.1:0"},
        },
    )
    opened: list[socket.socket] = []
    try:
        out = stack.router.proc.stdout_tail(50)
        metrics_addr = next(l.split()[-1] for l in out.splitlines() if l.startswith("metrics on "))
        admin_addr = next(l.split()[-1] for l in out.splitlines() if l.startswith("admin on "))
        ports = {
            "grpc": ("127.0.0.1", stack.router.port),
            "admin": ("127.0.0.1", int(admin_addr.rsplit(":", 1)[1])),
            "metrics": ("127.0.0.1", int(metrics_addr.rsplit(":", 1)[1])),
        }
        decision_latencies(stack.url, 50)  # warm up
        normal = decision_latencies(stack.url, 300)

        idle = {name: open_connections(addr, IDLE_PER_PORT) for name, addr in ports.items()}
        half = {
            "grpc-half": open_connections(ports["grpc"], HALF_SENT_PER_PORT, b"PRI * HTTP/2.0\r\n"),
            "metrics-half": open_connections(ports["metrics"], HALF_SENT_PER_PORT,
                                             b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
        }
        for socks in [*idle.values(), *half.values()]:
            opened.extend(socks)
        opened_at = time.monotonic()
        loaded = decision_latencies(stack.url, 300)
        page = requests.get(f"http://{metrics_addr}/metrics", timeout=10)
        assert page.status_code == 200, "a new client of the metrics port is served"
        stack.assert_alive()
        print(
            f"\ndecisions through Envoy, normal vs with {IDLE_PER_PORT} idle connections on each of "
            f"{len(ports)} router ports: p50 {p(normal, 50) * 1e3:.2f} ms vs {p(loaded, 50) * 1e3:.2f} ms "
            f"(x{p(loaded, 50) / p(normal, 50):.2f}), p99 {p(normal, 99) * 1e3:.2f} ms vs "
            f"{p(loaded, 99) * 1e3:.2f} ms (x{p(loaded, 99) / p(normal, 99):.2f})"
        )

        kinds = {**idle, **half}
        elapsed = time.monotonic() - opened_at
        deadlines = {
            kind: (HTTP_IDLE if kind.startswith("metrics") else GRPC_IDLE) + SLACK - elapsed for kind in kinds
        }
        closed = wait_closed(kinds, deadlines)
        print("every connection closed by the router; the last of each kind after (s, from opening): "
              + ", ".join(f"{k} {v + elapsed:.1f}" for k, v in closed.items()))
        opened.clear()
        # Still serving after all that.
        decision_latencies(stack.url, 20)
        stack.assert_alive()
    finally:
        for s in opened:
            s.close()
        stack.stop()
