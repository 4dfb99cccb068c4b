"""The fault suite: faults injected on purpose under client load, with the real Envoy (``trino-router
envoy-config``, learned routes from the router), routers, strict emulators and real ``trino`` clients
(default retries: ``max_attempts=3``).

Each test is one fault and one row of the table it prints (all rows so far): queries sent, succeeded,
failed, and failed-but-should-not-have. A query may fail only when nothing anyone could do would save it:
it ran on a coordinator that was killed (its state died with the process). Every other failure is in the
last column, and the target is zero there.

Faults:
- coordinator killed (SIGKILL, not restarted);
- coordinator hung: SIGSTOP for 4 s (connections are accepted by the kernel, nothing answers), then
  SIGCONT;
- coordinator slow: every answer 2 s late for 6 s (the emulator's ``slow`` fault);
- router killed: one of two replicas, SIGKILL;
- router paused: one of two replicas SIGSTOPped for 3 s, past Envoy's message timeout, then SIGCONT;
- network blip between Envoy and a coordinator: a relay between them drops every connection and refuses
  new ones for 0.5 s (the router's own polls go direct and see nothing).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass

import harness
from test_affinity import start_replicated
from test_ha import Load, Outcome, health, sleep_until, wait_until

#: 4 pages, 200 ms apart: about a second per query, in flight most of the time.
SQL = "/* emulator: pages=4 delay_ms=200 */ SELECT 1"
THREADS = 8
CONFIG = {"health": health(), "new_query_timeout": "3s"}


@dataclass
class Row:
    fault: str
    sent: int
    succeeded: int
    failed: int
    lost_with_coordinator: int
    should_not_have: int
    note: str


ROWS: list[Row] = []


def print_rows() -> None:
    print(f"\nfault suite: {len(ROWS)} faults so far")
    print(f"  {'fault':<44} {'sent':>5} {'ok':>5} {'failed':>6} {'lost w/ coord':>13} {'failed-but-should-not-have':>26}  note")
    for r in ROWS:
        print(f"  {r.fault:<44} {r.sent:>5} {r.succeeded:>5} {r.failed:>6} {r.lost_with_coordinator:>13} "
              f"{r.should_not_have:>26}  {r.note}")


def record(fault: str, outcomes: list[Outcome], lost: callable = lambda o: False, note: str = "") -> list[Outcome]:
    """Adds the fault's row; returns the failures that should not have happened."""
    failed = [o for o in outcomes if not o.ok]
    unsaved = [o for o in failed if not lost(o)]
    ROWS.append(Row(fault, len(outcomes), len(outcomes) - len(failed), len(failed), len(failed) - len(unsaved),
                    len(unsaved), note))
    print_rows()
    for out in unsaved:
        print(f"  should not have failed: {out.error_kind()}: {out.describe()}")
    return unsaved


def run_load(stack: harness.Stack, name: str, inject, hold: float, restore=None, after: float = 2.5):
    """Client load; ``inject()`` once every cluster has queries in flight; ``restore()`` ``hold`` s later;
    ``after`` s more of load. Returns (outcomes, time of the fault)."""
    load = Load(stack, name, threads=THREADS, sql=SQL).start()
    try:
        wait_until(lambda: all(len(e.queries()) >= 3 for e in stack.emulators.values()), 20,
                   "every cluster to serve queries")
        t_fault = time.monotonic()
        inject()
        sleep_until(t_fault + hold)
        if restore:
            restore()
        sleep_until(time.monotonic() + after)
    finally:
        outcomes = load.stop(timeout=90)
    assert len(outcomes) >= THREADS * 2, f"too little load to tell anything: {len(outcomes)} queries"
    return outcomes, t_fault


def coordinator_id(emu: harness.Emulator) -> str:
    return emu.emulator_info()["coordinatorId"]


# --------------------------------------------------------------------------------------------------
# coordinators


def test_coordinator_killed(make_stack):
    stack = make_stack(clusters=[("a", "adhoc"), ("b", "adhoc")], extra_config=CONFIG)
    a = stack.emulators["a"]
    dead = coordinator_id(a)
    outcomes, t_kill = run_load(stack, "killed", inject=a.kill, hold=0.0, after=4.0)

    def lost(out: Outcome) -> bool:  # it ran on a when a died
        return out.submitted < t_kill and bool(out.query_id) and out.query_id.endswith("_" + dead)

    unsaved = record("coordinator killed (SIGKILL)", outcomes, lost,
                     note="a's in-flight queries die with it; nothing else may fail")
    assert not unsaved
    assert any(lost(o) and not o.ok for o in outcomes), "no query was in flight on a: the fault was not exercised"


def test_coordinator_hung(make_stack):
    stack = make_stack(clusters=[("a", "adhoc"), ("b", "adhoc")], extra_config=CONFIG)
    a = stack.emulators["a"]
    outcomes, _ = run_load(stack, "hung", inject=lambda: os.kill(a.proc.pid, signal.SIGSTOP), hold=4.0,
                           restore=lambda: os.kill(a.proc.pid, signal.SIGCONT))
    on_a = sum(o.ok and o.cluster == "a" for o in outcomes)
    states = re.findall(r'cluster="?a"? health=(\w+)', stack.router.log())
    unsaved = record("coordinator hung 4 s (SIGSTOP, SIGCONT)", outcomes,
                     note=f"{on_a} queries finished on a; the router saw a {' -> '.join(states)}")
    assert not unsaved
    assert "unhealthy" in states, "the router never noticed the hang: the fault was not exercised"


def test_coordinator_slow(make_stack):
    stack = make_stack(clusters=[("a", "adhoc"), ("b", "adhoc")], extra_config=CONFIG)
    a = stack.emulators["a"]
    slow = {}
    outcomes, _ = run_load(stack, "slow", inject=lambda: slow.update(a.set_fault("slow", scope="all", delay_ms=2000)),
                           hold=6.0, restore=lambda: slow.update(a.set_fault("none")))
    faulted = slow.get("faulted", 0)
    unsaved = record("coordinator slow (2 s per answer, 6 s)", outcomes, note=f"{faulted} answers of a were late")
    assert not unsaved
    assert faulted >= 3, "the slow fault touched almost nothing"


# --------------------------------------------------------------------------------------------------
# routers


def test_router_killed():
    rep = start_replicated([("a", "adhoc"), ("b", "adhoc")], replicas=2)
    victim = rep.replicas[1]
    outcomes, _ = run_load(rep.stack, "router-killed", inject=victim.proc.kill, hold=0.0, after=4.0)
    unsaved = record("router killed (one of two replicas, SIGKILL)", outcomes)
    assert not unsaved
    rep.replicas[0].proc.assert_alive()


def test_router_paused_past_the_message_timeout():
    rep = start_replicated([("a", "adhoc"), ("b", "adhoc")], replicas=2)
    victim = rep.replicas[1]
    outcomes, _ = run_load(rep.stack, "router-paused", inject=lambda: os.kill(victim.proc.pid, signal.SIGSTOP),
                           hold=3.0, restore=lambda: os.kill(victim.proc.pid, signal.SIGCONT))
    timeouts = sum(int(v) for k, v in rep.stack.envoy.stats("ext_proc").items() if k.endswith("message_timeouts"))
    retried = sum(st == 503 for o in outcomes for (_, _, _, st, _) in o.exchanges)
    unsaved = record("router paused 3 s (one of two, SIGSTOP)", outcomes,
                     note=f"{timeouts} ext_proc messages timed out (0.5 s); clients retried {retried} 503s")
    assert not unsaved
    assert timeouts >= 1, "no message to the paused replica timed out: the fault was not exercised"
    victim.proc.assert_alive()


# --------------------------------------------------------------------------------------------------
# the network between Envoy and a coordinator


class Relay:
    """A TCP relay on loopback; :meth:`blip` drops every connection (RST) and refuses new ones for a while."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        # Holds the port while the listener is closed (both SO_REUSEPORT), so that no outgoing connection
        # takes it as its own port meanwhile; not listening, it refuses connections.
        self._placeholder = self._socket()
        self._placeholder.bind(("127.0.0.1", 0))
        self.port = self._placeholder.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._closed = False
        self.connections = 0
        self._listen()

    @staticmethod
    def _socket() -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return sock

    def _listen(self) -> None:
        listener = self._socket()
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="relay-accept").start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True, name="relay-pump").start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _drop_all(self) -> int:
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            # Linger 0: closed with a reset. The shutdown first, because a close alone would neither wake the
            # pump blocked in recv() nor, while it is blocked there, release the socket: the connection would
            # hang instead of dropping.
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return len(conns) // 2

    def blip(self, seconds: float) -> int:
        """Reset every relayed connection and refuse new ones for ``seconds``; returns how many were cut."""
        assert self._listener is not None
        self._listener.close()
        cut = self._drop_all()
        time.sleep(seconds)
        if not self._closed:
            self._listen()
        return cut

    def close(self) -> None:
        self._closed = True
        if self._listener:
            self._listener.close()
        self._placeholder.close()
        self._drop_all()


def test_network_blip_between_envoy_and_a_coordinator(make_stack):
    stack = make_stack(clusters=[("a", "adhoc"), ("b", "adhoc")], extra_config=CONFIG)
    a = stack.emulators["a"]
    relay = Relay(a.port)
    try:
        # Envoy reaches a through the relay; the router's polls still go direct.
        bootstrap = stack.envoy.bootstrap_path.read_text()
        assert bootstrap.count(f"port_value: {a.port}\n") == 1, "a's endpoint is not unique in the bootstrap"
        stack.envoy.stop()
        stack.envoy = harness.start_envoy(bootstrap.replace(f"port_value: {a.port}\n", f"port_value: {relay.port}\n"))
        cut = {}
        outcomes, _ = run_load(stack, "blip", inject=lambda: cut.update(n=relay.blip(0.5)), hold=0.5)
    finally:
        relay.close()
    retries = int(stack.envoy.stats("cluster.a.upstream_rq_retry").get("cluster.a.upstream_rq_retry", "0"))
    unsaved = record("network blip Envoy-coordinator 0.5 s", outcomes,
                     note=f"{cut.get('n', 0)} connections cut; {relay.connections} relayed; Envoy retried {retries}")
    assert not unsaved
    assert cut.get("n", 0) >= 1, "no connection went through the relay when it blipped"
