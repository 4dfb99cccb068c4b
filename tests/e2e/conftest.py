"""Fixtures for the end-to-end tests: a whole stack (emulators, router, real Envoy) and a real Trino client.

- ``stack`` (session): emulators ``trino-a`` and ``trino-b`` (group ``adhoc``) and ``trino-etl`` (group
  ``etl``), a router config naming them, ``trino-router serve`` and Envoy from ``trino-router envoy-config``.
- ``fresh_stack`` (function): the same, private to one test (for tests that count every query).
- ``make_stack(**kw)`` (function): a factory of private stacks with any clusters and router config (for
  tests that kill, restart or reconfigure processes).
- ``trino_connect(**kw)``: ``trino.dbapi.connect`` through Envoy; ``routing_group=`` sends
  ``X-Trino-Routing-Group``, ``headers=`` adds HTTP headers, ``target=`` picks another stack.

Every process a test starts is stopped when the test ends (an autouse fixture), the stacks are stopped by
their fixtures' finalizers, and ``harness`` kills whatever is left at exit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def pytest_configure(config):
    harness.install_signal_handlers()


def pytest_sessionfinish(session, exitstatus):
    harness.stop_all()
    left = harness.leftover_groups()
    if left:
        print("\nprocesses left running by the end-to-end tests:\n  " + "\n  ".join(left), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _reap_test_processes():
    """Stop every (unpinned) process started during one test, also when it fails."""
    marker = harness.current_seq()
    yield
    harness.stop_started_since(marker)


def _check_exit_clean(stack: harness.Stack) -> None:
    """Called before stopping a stack: the router and Envoy must still run and the router must not panic."""
    problems = []
    for proc in (stack.router.proc, stack.envoy.proc):
        if not proc.alive():
            problems.append(str(proc.failure("exited while the tests ran")))
    if "panicked" in stack.router.proc.stderr_tail(10_000):
        problems.append(f"the router panicked:\n{stack.router.proc.stderr_tail()}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def _start_stack() -> harness.Stack:
    harness.require_trino_client()
    return harness.start_stack()


@pytest.fixture(scope="session")
def envoy_bin() -> Path:
    """The real Envoy from .venv (fails under CI, skips elsewhere when absent)."""
    return harness.require_envoy()


@pytest.fixture(scope="session")
def stack(envoy_bin) -> harness.Stack:
    stack = _start_stack().pin()
    try:
        yield stack
        _check_exit_clean(stack)
    finally:
        stack.stop()


@pytest.fixture
def fresh_stack(envoy_bin) -> harness.Stack:
    stack = _start_stack()
    try:
        yield stack
        _check_exit_clean(stack)
    finally:
        stack.stop()


@pytest.fixture
def make_stack(envoy_bin):
    """A factory of stacks private to one test: ``make_stack(**harness.start_stack kwargs)``.

    For tests that kill, restart or reconfigure processes. Each stack's router and Envoy must still run,
    and the router must not have panicked, when the test ends; every stack is stopped either way.
    """
    harness.require_trino_client()
    stacks: list[harness.Stack] = []

    def make(**kw) -> harness.Stack:
        stack = harness.start_stack(**kw)
        stacks.append(stack)
        return stack

    try:
        yield make
        for stack in stacks:
            _check_exit_clean(stack)
    finally:
        for stack in stacks:
            stack.stop()


@pytest.fixture
def trino_connect(request):
    """``trino_connect(user=..., routing_group=None, headers=None, target=None, **connect_kwargs)``."""
    trino = harness.require_trino_client()
    opened = []

    def connect(user: str = "e2e", routing_group: str | None = None, headers: dict | None = None,
                target: harness.Stack | None = None, **kw):
        target = target or request.getfixturevalue("stack")
        http_headers = dict(headers or {})
        if routing_group is not None:
            http_headers["X-Trino-Routing-Group"] = routing_group
        kw.setdefault("request_timeout", 30)
        conn = trino.dbapi.connect(
            host=target.host,
            port=target.port,
            user=user,
            http_scheme="http",
            http_headers=http_headers or None,
            **kw,
        )
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
