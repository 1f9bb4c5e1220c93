"""The agent's only way out of its sandbox: an HTTP proxy that lets through an allowlist of host:port.

It listens on a Unix socket that is bound into the sandbox (bot.adapters.sandbox), so the sandbox
needs no network of its own. It serves `CONNECT host:port` (HTTPS: the bytes are tunnelled, never
read) and absolute-form `http://host:port/...` requests (a plain-HTTP model endpoint), and refuses
everything else with a 403 that says what was refused and which setting allows it.

Even an allowlisted name is refused when it resolves to a loopback, private, link-local or
otherwise local address, unless the allowlist names that very address (`127.0.0.1:8080`): a DNS
answer cannot turn an allowed host into a way to Redis.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
import socketserver
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
CONNECT_TIMEOUT_S = 15.0
IDLE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Destination:
    """One allowlist entry: a host name (or `*.suffix`) or an IP literal, and a port."""

    host: str
    port: int

    @classmethod
    def parse(cls, entry: str) -> Destination:
        """`host:port`, `*.example.com:443`, `[::1]:8080`; a missing port means 443."""
        entry = entry.strip().lower()
        if not entry:
            raise ValueError("an empty egress entry")
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port_text = rest.lstrip(":") or "443"
        else:
            host, sep, port_text = entry.rpartition(":")
            if not sep:
                host, port_text = entry, "443"
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{entry!r} is not host:port (e.g. api.openai.com:443)")
        return cls(host, int(port_text))

    def matches(self, host: str, port: int) -> bool:
        """Whether a request for host:port is this entry."""
        if port != self.port:
            return False
        host = host.lower().rstrip(".")
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    @property
    def is_address(self) -> bool:
        """Whether the entry names an IP address, not a host name."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def _is_local(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not ip.is_global or ip.is_multicast


@dataclass
class EgressLog:
    """What the sandboxed command asked for: the refused destinations, for the report."""

    refused: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, target: str, ok: bool) -> None:
        """Remember one request (each destination once)."""
        with self.lock:
            bucket = self.allowed if ok else self.refused
            if target not in bucket and len(bucket) < 50:
                bucket.append(target)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        head = self._read_head()
        if head is None:
            return
        request_line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ")
        except ValueError:
            self._answer(400, "a request line is METHOD TARGET VERSION")
            return
        if method == "CONNECT":
            host, _, port_text = target.rpartition(":")
            host = host.strip("[]")
            if not port_text.isdigit():
                self._answer(400, "CONNECT needs host:port")
                return
            upstream = self._open(host, int(port_text))
            if upstream is None:
                return
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            self._pipe(upstream, b"")
            return
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            self._answer(400, "only CONNECT and absolute http:// requests go through this proxy")
            return
        upstream = self._open(parts.hostname, parts.port or 80)
        if upstream is None:
            return
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        # One request per connection: the next one may name another host, and must be checked.
        headers = [
            line
            for line in rest.split(b"\r\n")
            if line and not line.lower().startswith((b"proxy-", b"connection:", b"keep-alive:"))
        ]
        first = f"{method} {path} {version}\r\n".encode("latin-1")
        self._pipe(upstream, first + b"\r\n".join([*headers, b"Connection: close"]) + b"\r\n\r\n")

    def _read_head(self) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.connection.recv(4096)
            if not chunk:
                return None
            data += chunk
            if len(data) > MAX_HEAD:
                self._answer(431, "request head too large")
                return None
        head, _, body = data.partition(b"\r\n\r\n")
        self._early_body = body
        return head

    def _open(self, host: str, port: int) -> socket.socket | None:
        target = f"{host}:{port}"
        allowed = self.server.allows(host, port)
        if allowed is None:
            self._refuse(target, f"{target} is not on the agent's egress allowlist (TRACKBOT_AGENT_EGRESS)")
            return None
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            self._refuse(target, f"{host} does not resolve: {error}", status=502)
            return None
        for family, kind, proto, _name, address in infos:
            if _is_local(str(address[0])) and not (allowed.is_address and allowed.host == str(address[0])):
                self._refuse(target, f"{host} resolves to the local address {address[0]}, which is never reachable")
                return None
            with contextlib.suppress(OSError):
                upstream = socket.socket(family, kind, proto)
                upstream.settimeout(CONNECT_TIMEOUT_S)
                upstream.connect(address)
                upstream.settimeout(None)
                self.server.log.add(target, True)
                return upstream
        self._refuse(target, f"{target} did not accept a connection", status=502)
        return None

    def _refuse(self, target: str, why: str, status: int = 403) -> None:
        log.warning("egress refused: %s", why)
        self.server.log.add(target, False)
        self._answer(status, why)

    def _answer(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        reason = {400: "Bad Request", 403: "Forbidden", 431: "Too Large", 502: "Bad Gateway"}.get(status, "Error")
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        with contextlib.suppress(OSError):
            self.wfile.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            self.wfile.flush()

    def _pipe(self, upstream: socket.socket, first: bytes) -> None:
        client = self.connection
        with upstream, contextlib.suppress(OSError):
            upstream.sendall(first + getattr(self, "_early_body", b""))
            sockets = [client, upstream]
            while True:
                ready, _, _ = select.select(sockets, [], [], IDLE_TIMEOUT_S)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, allow: Sequence[Destination], egress_log: EgressLog) -> None:
        self.allow = list(allow)
        self.log = egress_log
        super().__init__(path, _Handler)

    def allows(self, host: str, port: int) -> Destination | None:
        return next((entry for entry in self.allow if entry.matches(host, port)), None)


@contextlib.contextmanager
def egress_proxy(socket_path: Path, allow: Sequence[str]) -> Iterator[EgressLog]:
    """Serve the allowlisting proxy on `socket_path` while the block runs; yields what it saw."""
    destinations = [Destination.parse(entry) for entry in allow]
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    egress_log = EgressLog()
    server = _Server(str(socket_path), destinations, egress_log)
    socket_path.chmod(0o666)  # the sandbox's uid is not ours
    # A short poll: shutdown() waits for it, and a run must not wait half a second for its proxy.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="egress-proxy", daemon=True)
    thread.start()
    try:
        yield egress_log
    finally:
        server.shutdown()
        server.server_close()
        socket_path.unlink(missing_ok=True)
