"""TLS end to end, with certificates made at test time (PyPI ``trustme``: a throwaway CA that issues server
and client certificates) and the real Envoy and ``trino`` client.

The stack: two emulators serving HTTPS with certificates of a *coordinator CA*; a router whose gRPC port
serves TLS and requires client certificates of a *router CA* (``listen_tls``), and that trusts the
coordinator CA (``coordinator_tls``); Envoy from ``envoy-config --router-ca ... --router-client-cert ...``,
so its ext_proc streams, its RDS stream and its health checks to the router are mutual TLS, and its
coordinator clusters check the coordinators against the config's coordinator CA.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import harness

ADHOC = {"trino-a", "trino-b"}
#: The name in the router's certificate that Envoy checks (``--router-server-name``), besides 127.0.0.1.
ROUTER_NAME = "trino-router.test"
TOKEN = "tls-admin-token-5e81"


def _trustme():
    try:
        import trustme
    except ImportError:
        harness._missing("Python package `trustme` is not installed: run scripts/setup")
    return trustme


@dataclass
class Pki:
    """The test's PEM files: each certificate as ``(certificate, key)``."""

    router_ca: Path
    coordinator_ca: Path
    #: A CA that signed none of the servers here.
    stranger_ca: Path
    router: tuple[Path, Path]
    envoy: tuple[Path, Path]
    coordinator: tuple[Path, Path]
    #: A client certificate of the stranger CA.
    outsider: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki() -> Pki:
    trustme = _trustme()
    directory = harness.scratch_dir("tls-pki")

    def ca(name: str):
        authority = trustme.CA()
        path = directory / f"{name}.pem"
        authority.cert_pem.write_to_path(str(path))
        return authority, path

    def issue(authority, name: str, *identities: str) -> tuple[Path, Path]:
        leaf = authority.issue_cert(*identities)
        cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key

    router_ca, router_ca_path = ca("router-ca")
    coordinator_ca, coordinator_ca_path = ca("coordinator-ca")
    stranger_ca, stranger_ca_path = ca("stranger-ca")
    return Pki(
        router_ca=router_ca_path,
        coordinator_ca=coordinator_ca_path,
        stranger_ca=stranger_ca_path,
        router=issue(router_ca, "router", ROUTER_NAME, "127.0.0.1"),
        envoy=issue(router_ca, "envoy", "envoy.test"),
        coordinator=issue(coordinator_ca, "coordinator", "127.0.0.1"),
        outsider=issue(stranger_ca, "outsider", "envoy.test"),
    )


def start_tls_stack(pki: Pki, trusted_coordinator_ca: Path) -> harness.Stack:
    """Two HTTPS emulators, a router with an mTLS listener trusting ``trusted_coordinator_ca`` for the
    coordinators, and Envoy from ``envoy-config`` with the TLS options to match."""
    started: list[harness.Process] = []
    try:
        emulators = {}
        for name in sorted(ADHOC):
            # Serving HTTPS, a coordinator hands out https:// URIs unless it follows Envoy's
            # X-Forwarded-Proto (Trino's http-server.process-forwarded=true), as behind any TLS-originating proxy.
            emulators[name] = harness.start_emulator(name, tls=pki.coordinator, extra_args=["--process-forwarded"])
            started.append(emulators[name].proc)
        doc = harness.router_config_doc(
            [(name, emu.url, "adhoc") for name, emu in emulators.items()],
            extra={
                "listen_tls": {
                    "cert_file": str(pki.router[0]),
                    "key_file": str(pki.router[1]),
                    "client_ca_file": str(pki.router_ca),
                },
                "coordinator_tls": {"ca_file": str(trusted_coordinator_ca)},
                "admin": {"token": TOKEN},
            },
        )
        config_path = harness.write_yaml(harness.scratch_dir("router-config") / "router.yaml", doc)
        router = harness.start_router(config_path)
        started.append(router.proc)
        bootstrap = harness.render_envoy_config(config_path, router.grpc_addr, extra_args=[
            "--router-ca", str(pki.router_ca), "--router-server-name", ROUTER_NAME,
            "--router-client-cert", str(pki.envoy[0]), "--router-client-key", str(pki.envoy[1]),
        ])
        envoy = harness.start_envoy(bootstrap)
        started.append(envoy.proc)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    return harness.Stack(
        emulators=emulators, groups={name: "adhoc" for name in emulators}, router=router, envoy=envoy,
        config_path=config_path, config_doc=doc,
    )


@pytest.fixture(scope="module")
def tls_stack(envoy_bin, pki) -> harness.Stack:
    harness.require_trino_client()
    stack = start_tls_stack(pki, pki.coordinator_ca).pin()
    try:
        yield stack
        assert stack.router.proc.alive() and stack.envoy.proc.alive(), "the router and Envoy must still run"
        assert "panicked" not in stack.router.log()
    finally:
        stack.stop()


def _admin(stack: harness.Stack, *args: str, client: tuple[Path, Path] | None, ca: Path):
    """``trino-router admin`` over TLS (the caller's own TRINO_ROUTER_* settings are not inherited)."""
    argv = ["admin", "--server", f"https://{stack.router.grpc_addr}", "--ca-file", str(ca),
            "--tls-server-name", ROUTER_NAME, "--token", TOKEN]
    if client:
        argv += ["--cert-file", str(client[0]), "--key-file", str(client[1])]
    return harness.run_router_cli(*argv, *args, unset_env=(
        "TRINO_ROUTER_ADMIN_TOKEN", "TRINO_ROUTER_ADDRESS", "TRINO_ROUTER_CA_FILE", "TRINO_ROUTER_CERT_FILE",
        "TRINO_ROUTER_KEY_FILE", "TRINO_ROUTER_TLS_SERVER_NAME",
    ))


def _h2_over_tls(addr: str, ca: Path, client: tuple[Path, Path] | None) -> bytes:
    """Open TLS (ALPN h2) to ``addr`` trusting ``ca``, send the HTTP/2 preface and an empty SETTINGS, and
    return the server's first 9 bytes (a SETTINGS frame header from a gRPC server that took us). A refusal
    raises ``ssl.SSLError`` or ``OSError``, or ends the stream (``b""``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(ca))
    context.set_alpn_protocols(["h2"])
    if client:
        context.load_cert_chain(str(client[0]), str(client[1]))
    host, _, port = addr.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=ROUTER_NAME) as tls:
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            return tls.recv(9)


def _refused(addr: str, ca: Path, client: tuple[Path, Path] | None) -> str | None:
    """Why the router refused this client, or None when it was served."""
    try:
        first = _h2_over_tls(addr, ca, client)
    except (ssl.SSLError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if first else "the router closed the connection"


def test_queries_run_over_tls_end_to_end(tls_stack, pki, trino_connect):
    """A real client's queries go through Envoy to the HTTPS coordinators, every page from the cluster
    that took the query; Envoy's ext_proc, RDS and health checks reach the router over mutual TLS."""
    seen = set()
    for i in range(6):
        cur = trino_connect(user=f"tls-{i}", target=tls_stack).cursor()
        cur.execute("/* emulator: pages=3 rows=2 */ SELECT 1")
        rows = cur.fetchall()
        assert len(rows) == 6
        clusters = {row[0] for row in rows}
        assert len(clusters) == 1 and clusters <= ADHOC, f"pages from {clusters}"
        seen |= clusters
    assert seen == ADHOC, f"new queries should take turns between equally loaded clusters, got {seen}"

    envoy = tls_stack.envoy
    stats = envoy.stats("ssl.handshake")
    for cluster in ("trino-router", *ADHOC):
        assert int(stats.get(f"cluster.{cluster}.ssl.handshake", "0")) > 0, f"no TLS to {cluster}: {stats}"
    # Envoy took its routes from the router over that connection, learned follow-up routes included.
    rds = envoy.stats("rds.trino.update_success")
    assert int(rds.get("http.trino.rds.trino.update_success", "0")) >= 1, rds

    def learned() -> bool:
        dump = harness.http_request("GET", f"{envoy.admin_url}/config_dump?resource=dynamic_route_configs")
        return '"learned-trino-' in dump.text

    assert harness.wait_for(learned, timeout=10), "no learned route reached Envoy over RDS"

    listed = _admin(tls_stack, "clusters", client=pki.envoy, ca=pki.router_ca)
    assert listed.returncode == 0, listed.stderr
    for name in ADHOC:
        line = next(line for line in listed.stdout.splitlines() if line.split()[1:2] == [name])
        assert " healthy " in line, f"the router polls {name} over HTTPS: {line}"


def test_router_refuses_clients_without_a_certificate_of_its_ca(tls_stack, pki):
    """The router's one port (ext_proc, RDS, admin, health) takes only clients with a certificate of its
    client CA: none, another CA's, or plaintext HTTP/2 are refused; the admin CLI says why."""
    addr = tls_stack.router.grpc_addr
    assert _refused(addr, pki.router_ca, pki.envoy) is None, "Envoy's certificate is accepted"
    assert _refused(addr, pki.router_ca, None), "a client without a certificate was served"
    assert _refused(addr, pki.router_ca, pki.outsider), "a certificate of another CA was served"
    assert _refused(addr, pki.stranger_ca, pki.envoy), "a client that does not trust the router went on"
    try:
        services = harness.reflection_list_services(addr)
    except OSError:
        services = []
    assert services == [], f"plaintext HTTP/2 was served: {services}"

    refused = _admin(tls_stack, "clusters", client=None, ca=pki.router_ca)
    assert refused.returncode == 1
    # The router's alert (CertificateRequired) may arrive after the connection is gone: then a hint says it.
    assert "CertificateRequired" in refused.stderr or "--cert-file" in refused.stderr, refused.stderr
    tls_stack.assert_alive()


def test_untrusted_coordinators_are_unhealthy_and_new_queries_get_a_clean_503(envoy_bin, pki):
    """A router (and Envoy) trusting the wrong CA for the coordinators: the router logs the TLS failure,
    both clusters are unhealthy, and a new query gets a Trino-shaped 503 at once, never a hang. Every
    cluster looks unhealthy and none is known down, so the router still tries one (issue 16: the router
    may be the one that cannot reach them); Envoy, trusting the wrong CA too, cannot deliver it and
    answers its own `CLUSTER_UNAVAILABLE` (nothing submitted: clients retry a 503)."""
    trino = harness.require_trino_client()
    stack = start_tls_stack(pki, pki.stranger_ca)
    try:
        reason = "TLS handshake failed: invalid peer certificate: UnknownIssuer"
        assert harness.wait_for(lambda: reason in stack.router.log(), timeout=10), stack.router.log()[-3000:]
        listed = _admin(stack, "clusters", client=pki.envoy, ca=pki.router_ca)
        assert listed.returncode == 0, listed.stderr
        for name in ADHOC:
            line = next(line for line in listed.stdout.splitlines() if line.split()[1:2] == [name])
            assert " unhealthy " in line, line

        started = time.monotonic()
        answer = harness.http_request(
            "POST", f"{stack.url}/v1/statement", "SELECT 1", {"X-Trino-User": "tls"}, timeout=10
        )
        assert answer.status == 503, answer.text
        error = answer.json()["error"]
        assert error["errorName"] == "CLUSTER_UNAVAILABLE", answer.text
        assert "CERTIFICATE_VERIFY_FAILED" in error["message"], answer.text
        assert time.monotonic() - started < 3

        conn = trino.dbapi.connect(host=stack.host, port=stack.port, user="tls", http_scheme="http",
                                   max_attempts=1, request_timeout=10)
        started = time.monotonic()
        with pytest.raises(trino.exceptions.Http503Error):
            conn.cursor().execute("SELECT 1")
        assert time.monotonic() - started < 5
        conn.close()
        for emu in stack.emulators.values():
            assert "TLS handshake failed" in emu.proc.stderr_tail(200), f"{emu.name} saw no refused handshake"
        stack.assert_alive()
    finally:
        stack.stop()


@pytest.mark.parametrize("routes", ["rds", "static"])
def test_tls_bootstraps_validate_in_envoy(envoy_bin, pki, tmp_path, routes):
    """Both bootstraps with every TLS option pass Envoy's own validation (`envoy --mode validate`), and
    envoy-config refuses options that do not fit the router's config."""
    doc = harness.router_config_doc(
        [("trino-a", "https://127.0.0.1:8443", "adhoc"), ("trino-b", "https://trino-b.example.com", "adhoc")],
        extra={
            "listen_tls": {"cert_file": str(pki.router[0]), "key_file": str(pki.router[1]),
                           "client_ca_file": str(pki.router_ca)},
            "coordinator_tls": {"ca_file": str(pki.coordinator_ca)},
        },
    )
    config = harness.write_yaml(tmp_path / "router.yaml", doc)
    checked = harness.run_router_cli("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    tls_args = ["--router-ca", str(pki.router_ca), "--router-server-name", ROUTER_NAME,
                "--router-client-cert", str(pki.envoy[0]), "--router-client-key", str(pki.envoy[1])]
    bootstrap = harness.render_envoy_config(config, "127.0.0.1:50051", static_routes=routes == "static",
                                            extra_args=tls_args)
    assert "over mTLS" in bootstrap and "does not verify" not in bootstrap
    validated = harness.validate_envoy_config(bootstrap)
    assert validated.returncode == 0, validated.stdout + validated.stderr

    without_client_cert = harness.run_router_cli(
        "envoy-config", "--config", str(config), "--router-ca", str(pki.router_ca),
        env={"TRINO_ROUTER_LISTEN": "127.0.0.1:50051"},
    )
    assert without_client_cert.returncode == 1
    assert "--router-client-cert" in without_client_cert.stderr, without_client_cert.stderr
