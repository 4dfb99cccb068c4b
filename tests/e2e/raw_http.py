"""HTTP/1.1 spoken byte by byte, for requests no HTTP library would send (invalid UTF-8, NUL bytes,
oversized headers, traversal in paths): what the bad-input suite feeds Envoy."""

from __future__ import annotations

import socket
import time


class NoAnswer(AssertionError):
    """The server sent no complete answer in time (or closed the connection without one)."""


def request(method: str, path: str | bytes, body: bytes = b"", headers=(), user: bytes = b"bad-input") -> bytes:
    """A request with ``Host``, ``X-Trino-User`` (unless ``user`` is empty), ``Connection: close``,
    ``headers`` (name, value) byte pairs, and ``Content-Length`` for a body or a POST/PUT."""
    path = path if isinstance(path, bytes) else path.encode()
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    if user:
        lines.append(b"X-Trino-User: " + user)
    lines += [k + b": " + v for k, v in headers]
    if body or method in ("POST", "PUT"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def raw_http(port: int, data: bytes, timeout: float = 15.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` to 127.0.0.1:``port``; return (status, lower-case headers, body). Raises
    :class:`NoAnswer` on a hang or a connection closed without an answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (e.g. 413) and close before reading everything
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                raise NoAnswer(f"no complete answer within {timeout}s (got {received[:200]!r})") from None
            if not chunk:
                break
            received += chunk
            if _complete(received):
                break
    finally:
        sock.close()
    if not received:
        raise NoAnswer("the connection closed without any answer")
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            return body.endswith(b"0\r\n\r\n")
    return False
