"""Process harness for the end-to-end tests: emulators, the router and a real Envoy on loopback.

Everything here binds ephemeral loopback ports only (``127.0.0.1:0``) and learns the real port from the
process itself:

- ``trino-emulator`` and ``trino-router serve`` print one stdout line ``listening on 127.0.0.1:PORT`` when
  ready; :meth:`Process.wait_for_line` reads it with a deadline.
- Envoy is started with ``--admin-address-path FILE``; the harness reads the admin address from that file,
  polls ``/ready`` until ``LIVE`` and reads the listener's port from ``/listeners?format=json``.

Every process is started in its own session (``start_new_session=True``, stdin from ``/dev/null``) and is
stopped by killing its process group (SIGTERM, then SIGKILL after a grace period). Every started process is
recorded in a registry that an ``atexit`` hook empties, so nothing outlives the Python process even when a
test fails or a fixture finalizer never runs. ``stop_started_since`` lets a pytest fixture reap whatever one
test started. Logs (stdout and stderr of every process) go to files under ``target/e2e-logs/`` (or
``$TRINO_E2E_LOG_DIR``); a process that dies or misses its deadline raises :class:`ProcessFailed` carrying
the tail of its stderr.

Binaries come from ``target/debug`` or ``$TRINO_ROUTER_BIN_DIR``; Envoy from ``.venv/bin/envoy`` (or
``$TRINO_E2E_ENVOY``). Under ``CI=true`` a missing binary, Envoy or client is a failure; elsewhere the test
is skipped with the reason.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Seconds a process gets to print its readiness line (or Envoy to become LIVE).
READY_TIMEOUT = float(os.environ.get("TRINO_E2E_READY_TIMEOUT", "30"))
#: Seconds between SIGTERM and SIGKILL when stopping a process group.
STOP_GRACE = float(os.environ.get("TRINO_E2E_STOP_GRACE", "5"))

_LISTENING = re.compile(r"listening on (\S+)")


# --------------------------------------------------------------------------------------------------
# Environment: CI, binaries, Envoy, the client


def in_ci() -> bool:
    """True under CI (``CI=true``): there, anything missing is a failure, never a skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


class Missing(RuntimeError):
    """A required program is absent (raised when pytest is not available to skip or fail)."""


def _missing(reason: str):
    """Fail under CI, skip elsewhere (or raise :class:`Missing` outside pytest)."""
    pytest = sys.modules.get("pytest")
    if pytest is None:  # used outside pytest (scripts/quickstart)
        raise Missing(reason)
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing dependency is a failure)", pytrace=False)
    pytest.skip(reason)


def bin_dir() -> Path:
    """Where ``trino-router`` and ``trino-emulator`` are: ``$TRINO_ROUTER_BIN_DIR``, else cargo's debug dir."""
    override = os.environ.get("TRINO_ROUTER_BIN_DIR")
    if override:
        return Path(override).resolve()
    target = os.environ.get("CARGO_TARGET_DIR")
    return (Path(target) if target else REPO_ROOT / "target") / "debug"


def find_binary(name: str) -> Path | None:
    path = bin_dir() / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def require_binary(name: str) -> Path:
    path = find_binary(name)
    if path is None:
        _missing(f"{bin_dir() / name} not found: run `cargo build` (or set TRINO_ROUTER_BIN_DIR)")
    return path


def find_envoy() -> Path | None:
    """The real Envoy installed by scripts/setup (``.venv/bin/envoy``), or ``$TRINO_E2E_ENVOY``."""
    override = os.environ.get("TRINO_E2E_ENVOY")
    path = Path(override) if override else REPO_ROOT / ".venv" / "bin" / "envoy"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def require_envoy() -> Path:
    path = find_envoy()
    if path is None:
        _missing(f"Envoy not found at {REPO_ROOT / '.venv/bin/envoy'}: run scripts/setup")
    return path


def envoy_version(envoy: Path | None = None) -> str:
    """The output of ``envoy --version`` (one line, stripped)."""
    envoy = envoy or require_envoy()
    out = subprocess.run(
        [str(envoy), "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    return (out.stdout + out.stderr).strip()


def require_trino_client():
    """The ``trino`` Python client module (fails under CI, skips elsewhere when absent)."""
    try:
        import trino
        import trino.dbapi  # noqa: F401
    except ImportError as exc:
        _missing(f"Python package `trino` not importable ({exc}): run scripts/setup and use .venv/bin/python")
    return trino


# --------------------------------------------------------------------------------------------------
# Processes


class ProcessFailed(RuntimeError):
    """A managed process died, or did not become ready in time. The message carries its stderr tail."""


def _log_root() -> Path:
    global _LOG_ROOT
    if _LOG_ROOT is None:
        base = os.environ.get("TRINO_E2E_LOG_DIR")
        root = Path(base) if base else REPO_ROOT / "target" / "e2e-logs"
        _LOG_ROOT = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        _LOG_ROOT.mkdir(parents=True, exist_ok=True)
    return _LOG_ROOT


_LOG_ROOT: Path | None = None
_SEQ = itertools.count(1)
_LIVE: dict[int, "Process"] = {}
_STARTED: list["Process"] = []  # every process ever started, for the leftover check
_LIVE_LOCK = threading.Lock()


class Process:
    """A child process in its own session whose stdout lines can be awaited and whose group is killed."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.seq = next(_SEQ)
        log_dir = _log_root()
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        self.stdout_path = log_dir / f"{self.seq:03d}-{safe}.stdout"
        self.stderr_path = log_dir / f"{self.seq:03d}-{safe}.stderr"
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self._stderr_file = open(self.stderr_path, "wb")
        self._stdout_file = open(self.stdout_path, "wb")
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.returncode: int | None = None
        #: A pinned process belongs to a longer-lived owner (a module or session fixture): the per-test
        #: reaper (:func:`stop_started_since`) leaves it alone.
        self.pinned = False
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr_file,
                env=full_env,
                cwd=str(cwd or REPO_ROOT),
                start_new_session=True,
            )
        except BaseException:
            self._stderr_file.close()
            self._stdout_file.close()
            raise
        with _LIVE_LOCK:
            _LIVE[self.seq] = self
            _STARTED.append(self)
        self._reader = threading.Thread(target=self._read_stdout, name=f"stdout-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            for raw in iter(self.proc.stdout.readline, b""):
                try:
                    self._stdout_file.write(raw)
                    self._stdout_file.flush()
                except ValueError:  # log file closed by stop()
                    pass
                self._lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        finally:
            self._lines.put(None)

    def alive(self) -> bool:
        return not self._exited()

    def _exited(self) -> bool:
        """True once the process has exited. Does not reap it: while the leader is an unreaped zombie its
        pid (= the group id) cannot be reused, so killing the group by that id stays safe."""
        if self.proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere
            return True
        return info is not None and info.si_pid != 0

    def _wait_exited(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._exited():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def exit_status(self) -> int | None:
        """The exit status once exited (without reaping), else None."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.proc.poll()
        if info is None or info.si_pid == 0:
            return None
        return -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status

    def wait_for_line(self, pattern: str | re.Pattern, timeout: float = READY_TIMEOUT) -> re.Match:
        """Wait for a stdout line matching ``pattern``; raise :class:`ProcessFailed` on exit or timeout."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.failure(f"printed no line matching {regex.pattern!r} within {timeout:.0f}s")
            try:
                line = self._lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self._wait_exited(2)
                raise self.failure(f"closed stdout before printing a line matching {regex.pattern!r}")
            match = regex.search(line)
            if match:
                return match

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            self._stderr_file.flush()
        except ValueError:
            pass
        try:
            text = self.stderr_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stdout_tail(self, lines: int = 20) -> str:
        try:
            text = self.stdout_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ProcessFailed:
        code = self.exit_status()
        state = "still running" if code is None else f"exit status {code}"
        return ProcessFailed(
            f"{self.name} (pid {self.pid}, {state}) {what}\n"
            f"command: {' '.join(self.argv)}\n"
            f"--- stdout tail ({self.stdout_path}) ---\n{self.stdout_tail()}\n"
            f"--- stderr tail ({self.stderr_path}) ---\n{self.stderr_tail()}"
        )

    def assert_alive(self) -> None:
        if not self.alive():
            raise self.failure("exited unexpectedly")

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """Kill the process group (SIGTERM, then SIGKILL after ``grace`` s). Idempotent; returns the exit code."""
        with _LIVE_LOCK:
            registered = self.seq in _LIVE
        if registered:
            if not self._exited():
                self._signal_group(signal.SIGTERM)
                self._wait_exited(grace)
            # Whatever is left in the group (the leader after the grace period, or any child it spawned).
            # Only while the leader is unreaped: then the group id cannot name anyone else's processes.
            if self.proc.returncode is None:
                self._signal_group(signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL ignored only by D-state
                pass
            self._reader.join(timeout=2)
            for f in (self._stderr_file, self._stdout_file):
                try:
                    f.close()
                except OSError:
                    pass
            if self.proc.stdout is not None:
                try:
                    self.proc.stdout.close()
                except OSError:
                    pass
            # Unregistered only once dead: a signal that interrupts this leaves it to stop_all at exit.
            with _LIVE_LOCK:
                _LIVE.pop(self.seq, None)
        self.returncode = self.proc.returncode if self.proc.returncode is not None else self.exit_status()
        return self.returncode

    def kill(self) -> int | None:
        """SIGKILL the process group at once (a crash, not a shutdown), then clean up as :meth:`stop`."""
        with _LIVE_LOCK:
            registered = self.seq in _LIVE
        if registered and self.proc.returncode is None:
            self._signal_group(signal.SIGKILL)
            self._wait_exited(10)
        return self.stop(grace=0)

    def __repr__(self) -> str:
        return f"<Process {self.name} pid={self.pid} alive={self.alive()}>"


def live_processes() -> list[Process]:
    with _LIVE_LOCK:
        return list(_LIVE.values())


def current_seq() -> int:
    """A marker: processes started after this call have a larger ``seq``."""
    return next(_SEQ)


def stop_started_since(marker: int) -> list[Process]:
    """Stop every live, unpinned process started after ``marker`` (see :func:`current_seq`), newest first."""
    victims = sorted(
        (p for p in live_processes() if p.seq > marker and not p.pinned), key=lambda p: p.seq, reverse=True
    )
    for proc in victims:
        proc.stop()
    return victims


def stop_all() -> None:
    """Stop every process this harness started and has not stopped yet (newest first)."""
    for proc in sorted(live_processes(), key=lambda p: p.seq, reverse=True):
        try:
            proc.stop(grace=2)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(stop_all)


def leftover_groups() -> list[str]:
    """Process groups this harness started that still have a member (should be none after stop_all)."""
    left = []
    with _LIVE_LOCK:
        started = list(_STARTED)
    for proc in started:
        if not proc._exited():
            left.append(f"{proc.name} pid {proc.pid} still running")
            continue
        if proc.proc.returncode is None:
            continue  # exited but never reaped: its group id still anchored, checked by stop()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        left.append(f"{proc.name}: process group {proc.pid} still has members")
    return left


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so that finalizers and ``atexit`` still kill the children."""

    def _exit(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _exit)
        except ValueError:  # not the main thread
            pass


# --------------------------------------------------------------------------------------------------
# HTTP helpers (stdlib only, so the harness works without third-party packages)


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def http_request(
    method: str,
    url: str,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> HttpResponse:
    """One HTTP request; any status (also 4xx/5xx) comes back as an :class:`HttpResponse`."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        payload = err.read() if err.fp is not None else b""
        return HttpResponse(err.code, {k.lower(): v for k, v in (err.headers or {}).items()}, payload)


def get_json(url: str, timeout: float = 10):
    resp = http_request("GET", url, timeout=timeout)
    if resp.status != 200:
        raise AssertionError(f"GET {url} -> {resp.status}: {resp.text[:500]}")
    return resp.json()


# --------------------------------------------------------------------------------------------------
# trino-emulator


def _parse_listening(match: re.Match) -> tuple[str, int]:
    addr = match.group(1).strip().rstrip(".,")
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass
class Emulator:
    name: str
    url: str
    port: int
    proc: Process
    coordinator_id: str | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: ``(certificate, key)`` PEM files when it serves HTTPS (``url`` is then ``https://``).
    tls: tuple[Path, Path] | None = None
    #: ``--forwarded`` it was started with (``None``: Trino's default, reject).
    forwarded: str | None = None

    def stop(self) -> int | None:
        return self.proc.stop()

    def queries(self) -> list[dict]:
        """Every query this emulator received (``GET /v1/emulator/queries``)."""
        data = get_json(f"{self.url}/v1/emulator/queries")
        if isinstance(data, dict):
            data = data.get("queries", data.get("data", []))
        return list(data)

    def counters(self) -> dict[str, int]:
        """The emulator's request counters (``GET /v1/emulator/counters``)."""
        return dict(get_json(f"{self.url}/v1/emulator/counters"))

    def query(self, query_id: str) -> dict | None:
        return next((q for q in self.queries() if q.get("id") == query_id), None)

    def info(self) -> dict:
        return get_json(f"{self.url}/v1/info")

    def emulator_info(self) -> dict:
        """``GET /v1/emulator/info``: name, coordinatorId (the suffix of every query id), queries, address."""
        return get_json(f"{self.url}/v1/emulator/info")

    def node_state(self) -> str:
        """``GET /v1/info/state`` (a JSON string such as ``ACTIVE`` or ``SHUTTING_DOWN``)."""
        return str(get_json(f"{self.url}/v1/info/state"))

    def set_state(self, state: str) -> None:
        """``PUT /v1/emulator/state`` with a JSON string body: what ``/v1/info/state`` says from now on."""
        resp = http_request(
            "PUT", f"{self.url}/v1/emulator/state", json.dumps(state), {"Content-Type": "application/json"}
        )
        if resp.status not in (200, 204):
            raise AssertionError(f"PUT {self.url}/v1/emulator/state {state!r} -> {resp.status}: {resp.text[:300]}")

    def set_starting(self, starting: bool) -> None:
        """``PUT /v1/emulator/starting`` (``true``/``false``): what ``/v1/info`` says in ``starting``."""
        resp = http_request(
            "PUT", f"{self.url}/v1/emulator/starting", json.dumps(bool(starting)),
            {"Content-Type": "application/json"},
        )
        if resp.status not in (200, 204):
            raise AssertionError(f"PUT {self.url}/v1/emulator/starting -> {resp.status}: {resp.text[:300]}")

    def set_fault(self, mode: str, scope: str = "new_queries", delay_ms: int = 0) -> dict:
        """``PUT /v1/emulator/fault``: from now on the emulator hangs, answers garbage or is slow
        (``mode`` ``none`` ends it) for new queries only or for every request (``scope="all"``)."""
        body = json.dumps({"mode": mode, "scope": scope, "delay_ms": delay_ms})
        resp = http_request("PUT", f"{self.url}/v1/emulator/fault", body, {"Content-Type": "application/json"})
        if resp.status != 200:
            raise AssertionError(f"PUT {self.url}/v1/emulator/fault {body} -> {resp.status}: {resp.text[:300]}")
        return resp.json()

    def kill(self) -> int | None:
        """SIGKILL the emulator (a crashed coordinator: no graceful anything)."""
        return self.proc.kill()


#: The forwarded-header mode emulators start in unless a test says otherwise. Trino's default is
#: ``reject`` (406 for any X-Forwarded-* header), and Envoy adds X-Forwarded-Proto to every request, so an
#: Envoy-fronted coordinator only works with ``accept`` until the router makes default-mode coordinators
#: work: issue 14 phase B. Tests that exercise Trino's default pass ``forwarded=None``.
EMULATOR_FORWARDED_DEFAULT = "accept"


def start_emulator(
    name: str,
    coordinator_id: str | None = None,
    extra_args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    listen: str = "127.0.0.1:0",
    tls: tuple[Path, Path] | None = None,
    forwarded: str | None = EMULATOR_FORWARDED_DEFAULT,
) -> Emulator:
    """Start ``trino-emulator --name NAME --listen LISTEN`` (an ephemeral port by default) and wait until it
    listens. ``listen`` with a fixed port restarts an emulator where a router and Envoy expect it. ``tls``,
    ``(certificate, key)`` PEM files, makes it serve HTTPS. ``forwarded`` is its ``--forwarded`` mode
    (see :data:`EMULATOR_FORWARDED_DEFAULT`; ``None`` leaves Trino's default, reject)."""
    exe = require_binary("trino-emulator")
    extra_args = list(extra_args)
    argv: list[str] = [str(exe), "--name", name, "--listen", listen]
    if coordinator_id:
        argv += ["--coordinator-id", coordinator_id]
    if tls:
        argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    if forwarded:
        argv += ["--forwarded", forwarded]
    argv += extra_args
    proc = Process(f"emulator-{name}", argv, env=env)
    try:
        host, port = _parse_listening(proc.wait_for_line(_LISTENING))
    except BaseException:
        proc.stop()
        raise
    scheme = "https" if tls else "http"
    return Emulator(
        name=name, url=f"{scheme}://{host}:{port}", port=port, proc=proc, coordinator_id=coordinator_id,
        extra_args=extra_args, env=dict(env or {}), tls=tls, forwarded=forwarded,
    )


def restart_emulator(old: Emulator, coordinator_id: str | None = None, timeout: float = 10.0) -> Emulator:
    """Start a new emulator with ``old``'s name, port and options (after ``old`` stopped or was killed).

    Like a restarted Trino coordinator it draws a new coordinator id unless one is given. Binding the
    same port is retried for up to ``timeout`` seconds.
    """
    if old.proc.alive():
        raise AssertionError(f"{old.name} still runs (pid {old.proc.pid}): stop or kill it first")
    deadline = time.monotonic() + timeout
    while True:
        try:
            return start_emulator(
                old.name, coordinator_id=coordinator_id, extra_args=old.extra_args, env=old.env,
                listen=f"127.0.0.1:{old.port}", tls=old.tls, forwarded=old.forwarded,
            )
        except ProcessFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --------------------------------------------------------------------------------------------------
# trino-router


def router_config_doc(
    clusters: Iterable[tuple],
    default_group: str = "adhoc",
    routing_header: str = "x-trino-cluster",
    listen: str = "127.0.0.1:0",
    extra: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """A router config document from ``(name, url, group)`` or ``(name, url, group, {more fields})``
    tuples (``weight``, ``enabled``, ...), plus top-level ``extra`` fields (``health``, ``groups``, ...)."""
    entries = []
    for item in clusters:
        name, url, group, *more = item
        entry: dict[str, object] = {"name": name, "url": url, "group": group}
        for options in more:
            entry.update(options or {})
        entries.append(entry)
    doc: dict[str, object] = {
        "listen": listen,
        "routing_header": routing_header,
        "default_group": default_group,
        "clusters": entries,
    }
    if extra:
        doc.update(extra)
    return doc


def write_router_config(
    path: Path | str,
    clusters: Iterable[tuple],
    default_group: str = "adhoc",
    routing_header: str = "x-trino-cluster",
    listen: str = "127.0.0.1:0",
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Write a router config YAML (see :func:`router_config_doc`); returns the path.

    Without PyYAML the file is written as JSON, which is valid YAML too.
    """
    doc = router_config_doc(clusters, default_group, routing_header, listen, extra)
    return write_yaml(path, doc)


def yaml_text(doc: object) -> str:
    """``doc`` as YAML text (JSON, which is YAML too, when PyYAML is absent)."""
    try:
        import yaml

        return yaml.safe_dump(doc, sort_keys=False)
    except ImportError:
        return json.dumps(doc, indent=2) + "\n"


def write_yaml(path: Path | str, doc: object) -> Path:
    """Write ``doc`` as YAML (as JSON, which is YAML too, when PyYAML is absent); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml_text(doc))
    return path


def replace_file(path: Path | str, text: str) -> Path:
    """Replace a file's content atomically (write a sibling, rename over): a reader never sees half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_SEQ)}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def scratch_dir(prefix: str) -> Path:
    """A fresh directory under this run's log directory (kept with the logs)."""
    path = _log_root() / f"{next(_SEQ):03d}-{prefix}"
    path.mkdir(parents=True)
    return path


@dataclass
class Router:
    grpc_addr: str
    port: int
    proc: Process
    config_path: Path
    #: What the router was started with (``env`` and ``extra_args`` of :func:`start_router`), for a restart.
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)

    def stop(self) -> int | None:
        return self.proc.stop()

    @property
    def admin_url(self) -> str:
        """What ``trino-router admin --server`` takes: the router's gRPC address as a URL."""
        return f"http://{self.grpc_addr}"

    @property
    def metrics_url(self) -> str:
        """``http://ADDR/metrics`` from the router's ``metrics on ADDR`` line (config ``metrics_listen``)."""
        match = re.search(r"^metrics on (\S+)$", self.proc.stdout_tail(50), re.MULTILINE)
        if not match:
            raise AssertionError(f"{self.proc.name} printed no `metrics on` line: is metrics_listen set?")
        return f"http://{match.group(1)}/metrics"

    def log(self) -> str:
        """The router's stderr log so far, without ANSI colour codes."""
        try:
            self.proc._stderr_file.flush()
        except ValueError:
            pass
        try:
            text = self.proc.stderr_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return _ANSI.sub("", text)

    def admin(
        self, *args: str, token: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess:
        """``trino-router admin --server URL [--token T] ARGS...``. The caller's own
        ``TRINO_ROUTER_ADMIN_TOKEN`` is never inherited: only ``token`` or ``env`` supply one."""
        argv = ["admin", "--server", self.admin_url]
        if token is not None:
            argv += ["--token", token]
        return run_router_cli(
            *argv, *args, env=env, timeout=timeout, unset_env=("TRINO_ROUTER_ADMIN_TOKEN", "TRINO_ROUTER_ADDRESS")
        )


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Call ``predicate`` until it returns something truthy or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def run_query(stack, user: str, sql: str, **connect_kwargs) -> list:
    """Run ``sql`` through ``stack``'s Envoy with the real client as ``user``; return every row."""
    trino = require_trino_client()
    conn = trino.dbapi.connect(host=stack.host, port=stack.port, user=user, http_scheme="http", **connect_kwargs)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchall()
    finally:
        conn.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bound to port 0, read, closed), for a process that must
    keep its port across a restart. Another process could take it meanwhile: a failed bind shows as the
    process failing to print its ``listening on`` line."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_router(
    config_path: Path | str,
    env: Mapping[str, str] | None = None,
    extra_args: Iterable[str] = (),
    listen: str = "127.0.0.1:0",
    name: str = "router",
) -> Router:
    """Start ``trino-router serve --config FILE`` and wait for ``listening on``. It listens on ``listen``
    (``TRINO_ROUTER_LISTEN``; an ephemeral port by default; ``env`` may still override it)."""
    exe = require_binary("trino-router")
    full_env = {"TRINO_ROUTER_LISTEN": listen}
    full_env.update(env or {})
    extra_args = list(extra_args)
    argv = [str(exe), "serve", "--config", str(config_path), *extra_args]
    proc = Process(name, argv, env=full_env)
    try:
        host, port = _parse_listening(proc.wait_for_line(_LISTENING))
    except BaseException:
        proc.stop()
        raise
    return Router(
        grpc_addr=f"{host}:{port}", port=port, proc=proc, config_path=Path(config_path), env=full_env,
        extra_args=extra_args,
    )


def restart_router(old: Router, timeout: float = 10.0) -> Router:
    """Start a router again with ``old``'s config, environment, options and port (after ``old`` stopped or
    was killed); binding the same port is retried for up to ``timeout`` seconds."""
    if old.proc.alive():
        raise AssertionError(f"{old.proc.name} still runs (pid {old.proc.pid}): stop or kill it first")
    deadline = time.monotonic() + timeout
    env = dict(old.env, TRINO_ROUTER_LISTEN=old.grpc_addr)
    while True:
        try:
            return start_router(old.config_path, env=env, extra_args=old.extra_args, listen=old.grpc_addr,
                                name=old.proc.name)
        except ProcessFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_router_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60, unset_env: Iterable[str] = ()
) -> subprocess.CompletedProcess:
    """Run ``trino-router ARGS...`` to completion (stdin from /dev/null, output captured as text).

    ``unset_env`` names variables removed from the inherited environment (``env`` is applied after)."""
    exe = require_binary("trino-router")
    full_env = dict(os.environ)
    for name in unset_env:
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run(
        [str(exe), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=str(REPO_ROOT),
        timeout=timeout,
        start_new_session=True,
    )


def render_envoy_config(
    router_config_path: Path | str,
    router_grpc_addr: str,
    listen: str = "127.0.0.1:0",
    admin: str = "127.0.0.1:0",
    replicas: Sequence[str] = (),
    static_routes: bool = False,
    extra_args: Sequence[str] = (),
) -> str:
    """The bootstrap printed by ``trino-router envoy-config`` with its ext_proc target = ``router_grpc_addr``
    (``TRINO_ROUTER_LISTEN``), or, given ``replicas``, every replica (``--router ADDR`` each). By default
    Envoy gets its routes from the router (RDS); ``static_routes`` writes them into the bootstrap, so every
    request asks the router. ``extra_args`` go to ``envoy-config`` as they are (``--router-ca FILE``, ...)."""
    routers = [arg for addr in replicas for arg in ("--router", addr)]
    if static_routes:
        routers.append("--static-routes")
    out = run_router_cli(
        "envoy-config", "--config", str(router_config_path), "--listen", listen, "--admin", admin, *routers,
        *extra_args, env={"TRINO_ROUTER_LISTEN": router_grpc_addr},
    )
    if out.returncode != 0:
        raise ProcessFailed(
            f"trino-router envoy-config --config {router_config_path} exited {out.returncode}\n"
            f"--- stderr ---\n{out.stderr[-4000:]}"
        )
    if not out.stdout.strip():
        raise ProcessFailed("trino-router envoy-config printed nothing")
    return out.stdout


# --------------------------------------------------------------------------------------------------
# Envoy


@dataclass
class Envoy:
    url: str
    admin_url: str
    port: int
    proc: Process
    bootstrap_path: Path
    listeners: dict[str, int] = field(default_factory=dict)

    def stop(self) -> int | None:
        return self.proc.stop()

    def stats(self, prefix: str = "") -> dict[str, str]:
        """Admin ``/stats`` (text format) as a dict, optionally filtered by a name substring."""
        resp = http_request("GET", f"{self.admin_url}/stats" + (f"?filter={prefix}" if prefix else ""))
        out: dict[str, str] = {}
        for line in resp.text.splitlines():
            name, sep, value = line.partition(": ")
            if sep:
                out[name.strip()] = value.strip()
        return out


def _listener_ports(admin_url: str) -> dict[str, int]:
    data = get_json(f"{admin_url}/listeners?format=json")
    ports: dict[str, int] = {}
    for status in data.get("listener_statuses", []):
        sock = (status.get("local_address") or {}).get("socket_address") or {}
        if "port_value" in sock:
            ports[status.get("name", "")] = int(sock["port_value"])
    return ports


def start_envoy(
    bootstrap_yaml: str,
    listener: str = "trino",
    name: str = "envoy",
    extra_args: Iterable[str] = (),
    timeout: float = READY_TIMEOUT,
) -> Envoy:
    """Start the real Envoy on ``bootstrap_yaml``; return once ``/ready`` says LIVE and ``listener`` is bound.

    ``--disable-hot-restart`` lets several Envoys share the machine (no base-id domain socket).
    """
    envoy = require_envoy()
    workdir = scratch_dir(name)
    bootstrap_path = workdir / "bootstrap.yaml"
    bootstrap_path.write_text(bootstrap_yaml)
    admin_path = workdir / "admin-address"
    argv = [
        str(envoy),
        "-c", str(bootstrap_path),
        "--disable-hot-restart",
        "--admin-address-path", str(admin_path),
        "--log-level", os.environ.get("TRINO_E2E_ENVOY_LOG_LEVEL", "warn"),
        *extra_args,
    ]
    proc = Process(name, argv)
    try:
        deadline = time.monotonic() + timeout
        admin_url = None
        while admin_url is None:
            proc.assert_alive()
            try:
                text = admin_path.read_text().strip()
            except FileNotFoundError:
                text = ""
            if text:
                admin_url = f"http://{text}"
                break
            if time.monotonic() > deadline:
                raise proc.failure(f"wrote no admin address to {admin_path} within {timeout:.0f}s")
            time.sleep(0.05)
        while True:
            proc.assert_alive()
            try:
                ready = http_request("GET", f"{admin_url}/ready", timeout=2)
                if ready.status == 200 and "LIVE" in ready.text:
                    break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise proc.failure(f"admin {admin_url}/ready did not say LIVE within {timeout:.0f}s")
            time.sleep(0.05)
        ports = _listener_ports(admin_url)
        if listener not in ports:
            if len(ports) == 1 and not listener:
                listener = next(iter(ports))
            else:
                raise proc.failure(f"has no listener named {listener!r} (listeners: {ports})")
    except BaseException:
        proc.stop()
        raise
    port = ports[listener]
    return Envoy(
        url=f"http://127.0.0.1:{port}",
        admin_url=admin_url,
        port=port,
        proc=proc,
        bootstrap_path=bootstrap_path,
        listeners=ports,
    )


def validate_envoy_config(bootstrap_yaml: str) -> subprocess.CompletedProcess:
    """``envoy --mode validate -c FILE`` on the bootstrap (completed process, output as text)."""
    envoy = require_envoy()
    workdir = scratch_dir("envoy-validate")
    path = workdir / "bootstrap.yaml"
    path.write_text(bootstrap_yaml)
    return subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "--log-level", "warn"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )


# --------------------------------------------------------------------------------------------------
# A whole stack: emulators + router + Envoy


DEFAULT_CLUSTERS: tuple[tuple[str, str], ...] = (("trino-a", "adhoc"), ("trino-b", "adhoc"), ("trino-etl", "etl"))


@dataclass
class Stack:
    emulators: dict[str, Emulator]
    groups: dict[str, str]
    router: Router
    envoy: Envoy
    config_path: Path
    #: The router config as written at start (a copy to edit and write back for reload tests).
    config_doc: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.envoy.url

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.envoy.port

    def processes(self) -> list[Process]:
        return [self.envoy.proc, self.router.proc, *(e.proc for e in self.emulators.values())]

    def restart_emulator(self, name: str, coordinator_id: str | None = None) -> Emulator:
        """Restart emulator ``name`` (already stopped or killed) on its port; the stack then holds the new one."""
        emu = restart_emulator(self.emulators[name], coordinator_id=coordinator_id)
        self.emulators[name] = emu
        return emu

    def assert_alive(self) -> None:
        for proc in self.processes():
            proc.assert_alive()

    def upstream_requests(self) -> dict[str, int]:
        """Envoy's ``cluster.<name>.upstream_rq_total`` for each emulator (requests Envoy sent it)."""
        stats = self.envoy.stats("upstream_rq_total")
        missing = [n for n in self.emulators if f"cluster.{n}.upstream_rq_total" not in stats]
        if missing:
            raise AssertionError(
                f"Envoy has no upstream cluster named {missing} (the router's envoy-config should name each"
                f" Envoy cluster after the router cluster it routes to); counters: {sorted(stats)}"
            )
        return {n: int(stats[f"cluster.{n}.upstream_rq_total"]) for n in self.emulators}

    def pin(self) -> "Stack":
        """Mark every process as owned by a longer-lived fixture (see :attr:`Process.pinned`)."""
        for proc in self.processes():
            proc.pinned = True
        return self

    def stop(self) -> None:
        errors = []
        for proc in self.processes():
            try:
                proc.stop()
            except Exception as exc:  # noqa: BLE001 - stop the rest regardless
                errors.append(exc)
        if errors:
            raise errors[0]


def start_stack(
    clusters: Iterable[tuple[str, str]] = DEFAULT_CLUSTERS,
    default_group: str = "adhoc",
    router_env: Mapping[str, str] | None = None,
    extra_config: Mapping[str, object] | None = None,
    cluster_options: Mapping[str, Mapping[str, object]] | None = None,
    emulator_args: Mapping[str, Sequence[str]] | None = None,
    emulator_forwarded: str | None = EMULATOR_FORWARDED_DEFAULT,
) -> Stack:
    """Start one emulator per ``(name, group)``, a router over them and Envoy from ``envoy-config``.

    ``cluster_options`` adds fields to a cluster's config entry (``{"green": {"enabled": False}}``);
    ``emulator_args`` adds command-line options to an emulator (``{"a": ["--ui-password", "pw"]}``; a
    later ``--forwarded`` overrides ``emulator_forwarded``, the mode every emulator starts in);
    ``extra_config`` adds top-level fields (``health``, ``groups``, ``admin``, ``coordinator_auth``).
    """
    require_binary("trino-emulator")
    require_binary("trino-router")
    require_envoy()
    cluster_options = cluster_options or {}
    emulator_args = emulator_args or {}
    started: list[Process] = []
    try:
        emulators: dict[str, Emulator] = {}
        groups: dict[str, str] = {}
        for name, group in clusters:
            emu = start_emulator(name, extra_args=emulator_args.get(name, ()), forwarded=emulator_forwarded)
            started.append(emu.proc)
            emulators[name] = emu
            groups[name] = group
        doc = router_config_doc(
            [(n, emulators[n].url, groups[n], cluster_options.get(n)) for n in emulators],
            default_group=default_group,
            extra=extra_config,
        )
        config_path = write_yaml(scratch_dir("router-config") / "router.yaml", doc)
        router = start_router(config_path, env=router_env)
        started.append(router.proc)
        bootstrap = render_envoy_config(config_path, router.grpc_addr)
        envoy = start_envoy(bootstrap)
        started.append(envoy.proc)
        return Stack(
            emulators=emulators, groups=groups, router=router, envoy=envoy, config_path=config_path,
            config_doc=doc,
        )
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise


# --------------------------------------------------------------------------------------------------
# gRPC server reflection, spoken directly (HTTP/2 with prior knowledge, hand-encoded protobuf), so the
# check needs no gRPC package: a request stream of ServerReflectionRequest messages, answers collected.


def _pb_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb_string(field_number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _pb_varint(field_number << 3 | 2) + _pb_varint(len(data)) + data


def pb_fields(data: bytes) -> list[tuple[int, object]]:
    """Decode one protobuf message into ``(field number, value)`` pairs (length-delimited values as bytes)."""
    fields, pos = [], 0

    def varint() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while pos < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, varint()))
        elif wire == 1:
            fields.append((number, data[pos:pos + 8]))
            pos += 8
        elif wire == 2:
            length = varint()
            fields.append((number, data[pos:pos + length]))
            pos += length
        elif wire == 5:
            fields.append((number, data[pos:pos + 4]))
            pos += 4
        else:
            raise ValueError(f"protobuf wire type {wire} not handled")
    return fields


def _hpack_literal(name: str, value: str) -> bytes:
    """A header as 'literal without indexing, new name', no Huffman (names and values < 127 bytes)."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def grpc_reflection(addr: str, requests: list[bytes], timeout: float = 10.0,
                    service: str = "grpc.reflection.v1.ServerReflection") -> list[bytes]:
    """Send ServerReflectionRequest messages (encoded) on one ``ServerReflectionInfo`` stream to ``addr``
    (``host:port``, plaintext HTTP/2) and return the encoded ServerReflectionResponse messages."""
    import socket

    host, _, port = addr.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        headers = b"".join(_hpack_literal(k, v) for k, v in [
            (":method", "POST"), (":scheme", "http"), (":path", f"/{service}/ServerReflectionInfo"),
            (":authority", addr), ("content-type", "application/grpc"), ("te", "trailers"),
        ])
        body = b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in requests)
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0)
                     + _h2_frame(1, 0x4, 1, headers) + _h2_frame(0, 0x1, 1, body))
        buffer, data, done = b"", b"", False
        deadline = time.monotonic() + timeout
        while not done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete gRPC answer from {addr} within {timeout}s")
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 9:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + length:
                    break
                kind, flags = buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                payload, buffer = buffer[9:9 + length], buffer[9 + length:]
                if kind == 4 and not flags & 0x1:  # SETTINGS: acknowledge
                    sock.sendall(_h2_frame(4, 0x1, 0))
                elif kind == 6 and not flags & 0x1:  # PING: answer
                    sock.sendall(_h2_frame(6, 0x1, 0, payload))
                elif kind == 0 and stream == 1:  # DATA
                    if flags & 0x8:
                        payload = payload[1:len(payload) - payload[0]]
                    data += payload
                    if payload:
                        sock.sendall(_h2_frame(8, 0, 0, len(payload).to_bytes(4, "big"))
                                     + _h2_frame(8, 0, 1, len(payload).to_bytes(4, "big")))
                    done = bool(flags & 0x1)
                elif kind == 1 and stream == 1 and flags & 0x1:  # trailers
                    done = True
                elif kind in (3, 7):  # RST_STREAM, GOAWAY
                    done = True
    finally:
        sock.close()
    messages, pos = [], 0
    while pos + 5 <= len(data):
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        messages.append(data[pos + 5:pos + 5 + length])
        pos += 5 + length
    return messages


def reflection_list_services(addr: str) -> list[str]:
    """The service names a gRPC server lists through reflection (v1)."""
    answers = grpc_reflection(addr, [_pb_string(7, "")])  # list_services = 7
    names = []
    for answer in answers:
        for number, value in pb_fields(answer):
            if number == 6:  # list_services_response
                for _, service in pb_fields(value):  # repeated ServiceResponse service = 1
                    names += [v.decode() for n, v in pb_fields(service) if n == 1]
    return names


def reflection_file_containing(addr: str, symbol: str) -> list[bytes]:
    """The serialized FileDescriptorProtos a gRPC server returns for ``symbol`` through reflection (v1)."""
    answers = grpc_reflection(addr, [_pb_string(4, symbol)])  # file_containing_symbol = 4
    files = []
    for answer in answers:
        for number, value in pb_fields(answer):
            if number == 4:  # file_descriptor_response
                files += [v for n, v in pb_fields(value) if n == 1]
    return files
