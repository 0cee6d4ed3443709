"""A passed-through path can never send a request (nor a provider's credentials) anywhere but the
provider's configured origin: the real gateway on loopback, its configured upstream and an
"attacker" listener on another port, raw request targets written to the socket as they are."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text

COMPAT_SECRET = "sk-compat-header-secret-0123"
OPENAI_KEY = "sk-openai-ssrf-key-0123456789"
AZURE_KEY = "azure-ssrf-key-0123456789"
ANTHROPIC_KEY = "sk-ant-ssrf-key-0123456789"
CREDENTIALS = {
    "compat": ("x-upstream-token", COMPAT_SECRET),
    "compat-path": ("x-upstream-token", COMPAT_SECRET),
    "oai": ("authorization", f"Bearer {OPENAI_KEY}"),
    "oai-bare": ("authorization", f"Bearer {OPENAI_KEY}"),
    "az": ("api-key", AZURE_KEY),
    "az-path": ("api-key", AZURE_KEY),
    "claude": ("x-api-key", ANTHROPIC_KEY),
    "claude-path": ("x-api-key", ANTHROPIC_KEY),
}
"""Every provider type, with a base URL without a path and with one; the credential each sends."""


@dataclass
class Listener:
    """A loopback HTTP/1.1 server counting connections and keeping each request head as it
    arrived on the wire; answers every request ``200 {}`` and closes."""

    port: int = 0
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, sock: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        with self.lock:
            self.heads.append(data.partition(b"\r\n\r\n")[0])
        sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
                     b"connection: close\r\n\r\n{}")

    def reset(self) -> None:
        with self.lock:
            self.connections = 0
            self.heads.clear()

    def request_lines(self) -> list[tuple[str, dict[str, str]]]:
        """Each request's line and headers (names lowercased), as received."""
        parsed = []
        for head in self.heads:
            line, *rest = head.decode("latin-1").split("\r\n")
            parsed.append((line, {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in rest)}))
        return parsed


@contextlib.contextmanager
def listening() -> Iterator[Listener]:
    listener = Listener()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            listener.handle(self.request)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    listener.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def config(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    return f"""
type: gateway-providers-config
providers:
  - {{name: compat, type: openai-compatible, base_url: "{base}", headers: {{x-upstream-token: {COMPAT_SECRET}}},
     models: [m]}}
  - {{name: compat-path, type: openai-compatible, base_url: "{base}/compat/v1/",
     headers: {{x-upstream-token: {COMPAT_SECRET}}}, models: [m]}}
  - {{name: oai, type: openai, base_url: "{base}/v1", api_key: {OPENAI_KEY}, models: [m]}}
  - {{name: oai-bare, type: openai, base_url: "{base}", api_key: {OPENAI_KEY}, models: [m]}}
  - {{name: az, type: azure-openai, base_url: "{base}", api_key: {AZURE_KEY}, models: [m]}}
  - {{name: az-path, type: azure-openai, base_url: "{base}/azure", api_key: {AZURE_KEY}, models: [m]}}
  - {{name: claude, type: anthropic, base_url: "{base}", api_key: {ANTHROPIC_KEY}, models: [m]}}
  - {{name: claude-path, type: anthropic, base_url: "{base}/anthropic/", api_key: {ANTHROPIC_KEY}, models: [m]}}
"""


@dataclass
class Served:
    url: str
    upstream: Listener
    attacker: Listener


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with listening() as upstream, listening() as attacker:
        app = create_app(load_config_text(config(upstream.port)))
        with serve(app) as url:
            yield Served(url, upstream, attacker)


@pytest.fixture
def gateway(served: Served) -> Served:
    served.upstream.reset()
    served.attacker.reset()
    return served


def send_raw(url: str, target: bytes, provider: str) -> tuple[int, Any]:
    """``GET target`` written to the gateway's socket byte for byte; its status and JSON body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nhost: gateway\r\nx-gateway-provider: " + provider.encode()
                     + b"\r\nconnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body) if body else None


def invalid_path(found: str) -> dict[str, Any]:
    return {"error": {
        "message": f"The path may not hold {found}: each part of a passed-through path must stay one segment "
                   "of the provider's URL path.",
        "type": "invalid_request_error", "code": "invalid_path", "param": "path"}}


ATTACKS = [
    pytest.param(b"/v1%2F@127.0.0.1:{port}/pwn", "an encoded '/' (%2F)", id="encoded-slash-userinfo"),
    pytest.param(b"/v1%2f@127.0.0.1:{port}/pwn", "an encoded '/' (%2f)", id="encoded-slash-lower"),
    pytest.param(b"/v1/x%5C@127.0.0.1:{port}/pwn", "an encoded '\\' (%5C)", id="encoded-backslash"),
    pytest.param(b"/v1/x%5c@127.0.0.1:{port}/pwn", "an encoded '\\' (%5c)", id="encoded-backslash-lower"),
    pytest.param(b"/v1/%2F@127.0.0.1:{port}/pwn", "an encoded '/' (%2F)", id="segment-encoded-slash"),
    pytest.param(b"/v1/@127.0.0.1:{port}/pwn", "an '@'", id="raw-at"),
    pytest.param(b"/v1/x%40127.0.0.1:{port}/pwn", "an encoded '@' (%40)", id="encoded-at"),
    pytest.param(b"/v1/%252F@127.0.0.1:{port}/pwn", "an encoded '%' (%25)", id="double-encoded-slash"),
    pytest.param(b"/v1/files%00@127.0.0.1:{port}", "an encoded control character (%00)", id="encoded-nul"),
    pytest.param(b"/v1/files%0dHost:127.0.0.1:{port}", "an encoded control character (%0d)", id="encoded-cr"),
    pytest.param(b"/v1/files%7F", "an encoded control character (%7F)", id="encoded-del"),
    pytest.param(b"/v1/..", "a '.' or '..' segment", id="dot-dot"),
    pytest.param(b"/v1/%2e%2E/%2e%2e/127.0.0.1:{port}", "a '.' or '..' segment", id="encoded-dot-dot"),
    pytest.param(b"/v1/.%2e/x", "a '.' or '..' segment", id="mixed-dot-dot"),
    pytest.param(b"/v1/./files", "a '.' or '..' segment", id="dot"),
    pytest.param(b"/v1//127.0.0.1:{port}/pwn", "an empty segment ('//')", id="empty-segment"),
    pytest.param(b"/v1/a\\@127.0.0.1:{port}/pwn", "a '\\'", id="raw-backslash"),
    pytest.param(b"/v1/files%zz", "a '%' that starts no escape", id="broken-escape"),
]


@pytest.mark.parametrize("provider", list(CREDENTIALS))
@pytest.mark.parametrize(("template", "found"), ATTACKS)
def test_a_path_that_would_leave_the_provider_is_refused_before_anything_is_sent(
    gateway: Served, provider: str, template: bytes, found: str
) -> None:
    target = template.replace(b"{port}", str(gateway.attacker.port).encode())

    status, body = send_raw(gateway.url, target, provider)

    assert (gateway.attacker.connections, gateway.upstream.connections) == (0, 0)
    assert (status, body) == (400, invalid_path(found))


@pytest.mark.parametrize(("provider", "target", "line"), [
    pytest.param("compat", b"/v1/files/file-abc/content", "GET /files/file-abc/content HTTP/1.1", id="compat"),
    pytest.param("compat-path", b"/v1/files/file-abc/content", "GET /compat/v1/files/file-abc/content HTTP/1.1",
                 id="compat-path"),
    pytest.param("oai", b"/v1/fine_tuning/jobs?limit=2", "GET /v1/fine_tuning/jobs?limit=2 HTTP/1.1", id="openai"),
    pytest.param("oai-bare", b"/v1/models/ft%3Agpt-4o%3Aacme", "GET /models/ft%3Agpt-4o%3Aacme HTTP/1.1",
                 id="openai-bare-escapes"),
    pytest.param("az", b"/v1/files/file-abc/content",
                 "GET /openai/files/file-abc/content?api-version=2024-10-21 HTTP/1.1", id="azure"),
    pytest.param("az-path", b"/v1/fine_tuning/jobs?limit=2",
                 "GET /azure/openai/fine_tuning/jobs?limit=2&api-version=2024-10-21 HTTP/1.1", id="azure-path"),
    pytest.param("claude", b"/v1/messages/batches?limit=2", "GET /v1/messages/batches?limit=2 HTTP/1.1",
                 id="anthropic"),
    pytest.param("claude-path", b"/v1/files/file-abc/content", "GET /anthropic/v1/files/file-abc/content HTTP/1.1",
                 id="anthropic-path"),
    pytest.param("compat", b"/v1/files?q=a%23b&x=%3F@#frag", "GET /files?q=a%23b&x=%3F%40 HTTP/1.1",
                 id="query-encoded"),  # escapes go on the wire as the gateway built them
])
def test_a_legit_path_reaches_the_configured_upstream_with_its_credential(
    gateway: Served, provider: str, target: bytes, line: str
) -> None:
    status, body = send_raw(gateway.url, target, provider)

    assert (status, body) == (200, {})
    assert gateway.attacker.connections == 0
    ((sent_line, headers),) = gateway.upstream.request_lines()
    name, value = CREDENTIALS[provider]
    assert (sent_line, headers["host"], headers[name]) == (line, f"127.0.0.1:{gateway.upstream.port}", value)


@pytest.mark.parametrize("template", [
    pytest.param(b"/v1%5C@127.0.0.1:{port}/pwn", id="encoded-backslash-after-v1"),
    pytest.param(b"/v1%40127.0.0.1:{port}/pwn", id="encoded-at-after-v1"),
    pytest.param(b"/v1/files%0a@127.0.0.1:{port}", id="encoded-newline"),
])
def test_a_path_no_route_matches_reaches_nobody(gateway: Served, template: bytes) -> None:
    target = template.replace(b"{port}", str(gateway.attacker.port).encode())

    status, body = send_raw(gateway.url, target, "compat")

    assert (status, body["error"]["code"]) == (404, "unknown_path")
    assert (gateway.attacker.connections, gateway.upstream.connections) == (0, 0)
