"""The HTTP front's bounds, attacked over raw sockets: header bytes and fields (431), the time to
send the headers and the pauses in a body (408), and the memory a few connections sending huge
headers can make a gateway process hold."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
import pytest
from servers import port_of, serve, start_gateway_process, wait_until_healthy

from otel_gateway.app import create_app
from otel_gateway.config import GatewayConfig, load_config_text
from otel_gateway.http._protocol import http_protocol

PROVIDERS = """\
type: gateway-providers-config
providers:
  - {name: demo, type: mock, models: [echo]}
"""
CONFIG = PROVIDERS + """\
---
type: gateway-server-config
header_timeout_ms: 500
body_idle_timeout_ms: 500
"""
TOO_LARGE = {"error": {
    "message": "The request line and headers are limited to 65536 bytes and 256 header fields.",
    "type": "invalid_request_error", "code": "request_header_fields_too_large", "param": None,
}}
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n"
CHAT = b'{"model": "demo/echo", "messages": [{"role": "user", "content": "hello there, gateway"}]}'


@contextlib.contextmanager
def serve_front(config: GatewayConfig) -> Iterator[int]:
    """The gateway behind its HTTP front (as ``otel-gateway serve`` runs it) in a thread; its port."""
    with serve(create_app(config), log_level="error", lifespan="auto", http=http_protocol(config.server)) as url:
        yield port_of(url)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with serve_front(load_config_text(CONFIG)) as served:
        yield served


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=3)


def read_until_closed(sock: socket.socket) -> bytes:
    """All the server answers until it closes the connection. A connection still open after the
    socket's timeout fails the test (``TimeoutError``)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # closed with bytes of ours unread: what it answered came first
        pass
    return data


def send_all_or_refused(port: int, chunks: Iterable[bytes]) -> bytes:
    """Sends ``chunks`` until done or the server stops reading; then what it answered until it closed."""
    with connect(port) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for chunk in chunks:
                sock.sendall(chunk)
        return read_until_closed(sock)


def status_and_body(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close\r\n" in head + b"\r\n"
    return int(head.split(b" ", 2)[1]), orjson.loads(body)


def many_headers(count: int, block: int = 64 * 1024) -> Iterator[bytes]:
    """A request with ``count`` header fields, in blocks of about ``block`` bytes."""
    buffer = bytearray(HEALTHZ)
    for index in range(count):
        buffer += b"X-Header-%d: value\r\n" % index
        if len(buffer) >= block:
            yield bytes(buffer)
            buffer.clear()
    yield bytes(buffer) + b"\r\n"


def test_a_hundred_thousand_headers_are_refused_with_431_and_the_connection_closed(port: int) -> None:
    status, body = status_and_body(send_all_or_refused(port, many_headers(100_000)))
    assert (status, body) == (431, TOO_LARGE)


def test_a_header_line_of_one_megabyte_is_refused_with_431(port: int) -> None:
    chunks = [HEALTHZ + b"X-Big: ", *([b"a" * 65536] * 16), b"\r\n\r\n"]
    status, body = status_and_body(send_all_or_refused(port, chunks))
    assert (status, body) == (431, TOO_LARGE)


def request_head_of(size: int, fields: int = 1) -> bytes:
    """A ``GET /healthz`` whose request line and headers take exactly ``size`` bytes, in ``fields`` fields."""
    head = HEALTHZ + b"".join(b"X-F%d: v\r\n" % index for index in range(fields - 2))
    filler = size - len(head) - len(b"X-Pad: \r\n\r\n")
    return head + b"X-Pad: " + b"p" * filler + b"\r\n\r\n"


@pytest.mark.parametrize(("size", "fields", "status"), [
    pytest.param(64 * 1024, 2, 200, id="64KiB-fits"),
    pytest.param(64 * 1024 + 1, 2, 431, id="64KiB+1-refused"),
    pytest.param(4096, 256, 200, id="256-fields-fit"),
    pytest.param(4096, 257, 431, id="257-fields-refused"),
])
def test_the_bounds_are_exact(port: int, size: int, fields: int, status: int) -> None:
    head = request_head_of(size, fields)
    assert len(head) == size and head.count(b"\r\n") - 2 == fields
    with connect(port) as sock:
        sock.sendall(head)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 %d " % status)


def dribble(sock: socket.socket, data: bytes, *, every: float, within: float) -> float:
    """Sends ``data`` a byte every ``every`` s until the server answers or closes (or ``within``
    s pass, which fails the test); the seconds that took."""
    started = time.monotonic()
    for byte in data:
        readable, _, _ = select.select([sock], [], [], every)
        if readable:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"the connection was still open after {within} s"
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
    raise AssertionError("the server read the whole slow request")


def test_headers_sent_a_byte_every_fifth_of_a_second_are_cut_off_at_the_header_timeout(port: int) -> None:
    with connect(port) as sock:
        took = dribble(sock, HEALTHZ + b"X-Slow: " + b"s" * 100 + b"\r\n\r\n", every=0.2, within=3)
        answer = read_until_closed(sock)
    assert 0.4 <= took < 2
    assert status_and_body(answer) == (408, {"error": {
        "message": "The request headers did not arrive within 0.5 s.", "type": "timeout_error",
        "code": "header_timeout", "param": None}})


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout_without_an_answer(port: int) -> None:
    with connect(port) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
    assert 0.4 <= time.monotonic() - started < 2


def chat_head(length: int) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer client-key\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length)


def test_a_body_that_stops_coming_is_answered_408_at_the_idle_timeout(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(chat_head(len(CHAT)) + CHAT[:10])
        started = time.monotonic()
        answer = read_until_closed(sock)
    assert 0.4 <= time.monotonic() - started < 2
    assert status_and_body(answer) == (408, {"error": {
        "message": "The request body paused for more than 0.5 s.", "type": "timeout_error",
        "code": "body_timeout", "param": None}})


def test_a_slow_body_whose_pauses_stay_under_the_idle_timeout_is_served(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(chat_head(len(CHAT)))
        pieces = [CHAT[start:start + 18] for start in range(0, len(CHAT), 18)]
        for piece in pieces:  # about 1 s in all: twice the idle timeout
            time.sleep(0.2)
            sock.sendall(piece)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_connections_sending_huge_headers_leave_the_gateway_process_memory_bounded(tmp_path: Path) -> None:
    """Four connections at once, each sending 16 MB of headers to /healthz (before the bounds,
    a gateway held every byte and parsed header: hundreds of MB)."""
    config = tmp_path / "gateway.yaml"
    config.write_text(PROVIDERS)
    process, url = start_gateway_process(config, tmp_path)
    try:
        wait_until_healthy(process, url, timeout=20)
        port = int(url.rsplit(":", 1)[1])
        before = rss_mb(process.pid)
        answers: list[bytes] = []
        attackers = [threading.Thread(target=lambda: answers.append(
            send_all_or_refused(port, many_headers(16 * 1024 * 1024 // 20)))) for _ in range(4)]
        for attacker in attackers:
            attacker.start()
        for attacker in attackers:
            attacker.join(timeout=60)
        after = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert after - before < 16, f"RSS went from {before:.0f} MB to {after:.0f} MB"
    assert [status_and_body(answer)[0] for answer in answers] == [431] * 4
