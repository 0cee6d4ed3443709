"""Shutdown of ``otel-gateway serve`` (one worker, and two), as its own process in a session of its
own (so that a Ctrl-C can be sent to its whole process group, as a terminal does):

* SIGTERM stops accepting and lets the requests in flight finish within ``--graceful-timeout``;
  streams still open then end with a ``shutting_down`` error event and are recorded as cancelled;
* a second SIGTERM or SIGINT exits at once, the record of every request in flight written first.

The mock provider streams slowly (``x-mock-chunk-delay-ms``) or answers late (``x-mock-delay-ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from servers import free_port, port_of, wait_until_healthy

SHUTTING_DOWN = {"error": {"message": "The gateway is shutting down; this stream was ended before it finished.",
                           "type": "service_unavailable_error", "code": "shutting_down", "param": None}}
SLOW_STREAM = {"x-mock-stream-chunks": "100", "x-mock-chunk-delay-ms": "500"}
"""100 chunks, half a second apart: far longer than any test waits."""


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""\
type: gateway-providers-config
providers:
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-logging-config
store: "sqlite:///{tmp_path / 'logs.db'}"
spool_dir: "{tmp_path / 'spool'}"
batch_size: 1000
flush_interval_ms: 600000
""".replace("sqlite:///", "sqlite:////", 1))
    return config


@contextlib.contextmanager
def gateway(tmp_path: Path, *options: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``otel-gateway serve`` in a new session (its pid is its process group's id), healthy."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "ENABLE_OTEL"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_gateway", "serve", "--config", str(write_config(tmp_path)), "--port", str(port),
         "--log-level", "warning", *options], cwd=tmp_path, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, timeout=30)
        yield process, url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def records(tmp_path: Path) -> dict[str, str]:
    """Request id to status, of every record in the store and in the spool."""
    found: dict[str, str] = {}
    for path in sorted((tmp_path / "spool").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            found[record["attributes"]["id"]] = record["attributes"]["metadata"]["status"]
    db = tmp_path / "logs.db"
    if db.exists():
        conn = sqlite3.connect(db)
        try:
            found.update(conn.execute("SELECT id, status FROM request_logs").fetchall())
        except sqlite3.OperationalError:  # no table: nothing was written
            pass
        finally:
            conn.close()
    return found


class Stream:
    """A chat completion stream read in the background: ``started`` once its first event came."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.events: list[bytes] = []
        self.request_id = ""
        self.started = asyncio.Event()
        self.task = asyncio.create_task(self._read(client, headers))

    async def _read(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        body = {"model": "demo/echo", "stream": True, "messages": [{"role": "user", "content": "x" * 100}]}
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
            assert response.status_code == 200
            self.request_id = response.headers["x-gateway-request-id"]
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    self.events.append(line.removeprefix("data: ").encode())
                    self.started.set()


@contextlib.asynccontextmanager
async def streams(url: str, count: int, headers: dict[str, str]) -> AsyncIterator[list[Stream]]:
    """``count`` streams, each on a connection of its own, all started."""
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        opened = [Stream(client, headers) for _ in range(count)]
        async with asyncio.timeout(10):
            await asyncio.gather(*(stream.started.wait() for stream in opened))
        try:
            yield opened
        finally:
            for stream in opened:
                stream.task.cancel()
            await asyncio.gather(*(stream.task for stream in opened), return_exceptions=True)


async def exit_code(process: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.to_thread(process.wait, timeout)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_ends_streams_open_at_the_graceful_timeout(tmp_path: Path, workers: str) -> None:
    with gateway(tmp_path, "--graceful-timeout", "1", "--workers", workers) as (process, url):
        async with streams(url, 3, SLOW_STREAM) as opened:
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert await exit_code(process, timeout=10) in (0, -signal.SIGTERM)
            took = time.monotonic() - started
            async with asyncio.timeout(5):
                await asyncio.gather(*(stream.task for stream in opened))  # each answer complete
    print(f"\n{workers} worker(s): exited {took:.2f} s after SIGTERM with --graceful-timeout 1")
    assert took < 1 + 2.5  # the timeout, and a margin for the supervisor's and the workers' steps
    for stream in opened:
        assert len(stream.events) >= 2
        assert orjson.loads(stream.events[-1]) == SHUTTING_DOWN
        assert b"[DONE]" not in stream.events
    assert records(tmp_path) == {stream.request_id: "cancelled" for stream in opened}


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_second_sigterm_exits_at_once_writing_the_records(tmp_path: Path, workers: str) -> None:
    with gateway(tmp_path, "--graceful-timeout", "60", "--workers", workers) as (process, url):
        async with streams(url, 3, SLOW_STREAM) as opened:
            process.send_signal(signal.SIGTERM)
            # Two signals sent at once are one: the second must come once the first was handled.
            assert await asyncio.to_thread(refused_within, port_of(url), 3.0)
            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            assert await exit_code(process, timeout=10) in (0, -signal.SIGTERM)
            took = time.monotonic() - started
    print(f"\n{workers} worker(s): exited {took:.2f} s after the second SIGTERM")
    assert took < 3
    assert records(tmp_path) == {stream.request_id: "cancelled" for stream in opened}


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_two_ctrl_c_write_the_records_of_every_request_in_flight(tmp_path: Path, workers: str) -> None:
    with gateway(tmp_path, "--workers", workers) as (process, url):
        async with streams(url, 20, SLOW_STREAM) as opened:
            os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does, twice
            assert await asyncio.to_thread(refused_within, port_of(url), 3.0)
            os.killpg(process.pid, signal.SIGINT)
            started = time.monotonic()
            assert await exit_code(process, timeout=10) in (0, -signal.SIGINT, -signal.SIGTERM)
            took = time.monotonic() - started
    print(f"\n{workers} worker(s): exited {took:.2f} s after the second Ctrl-C")
    assert took < 3
    assert records(tmp_path) == {stream.request_id: "cancelled" for stream in opened}


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_refuses_new_connections_and_lets_requests_finish(tmp_path: Path, workers: str) -> None:
    with gateway(tmp_path, "--graceful-timeout", "10", "--workers", workers) as (process, url):
        fast = {"x-mock-stream-chunks": "6", "x-mock-chunk-delay-ms": "200"}  # about 1 s in all
        async with streams(url, 1, fast) as (stream,):
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(refused_within, port_of(url), 3.0)
            async with asyncio.timeout(5):
                await stream.task
            assert await exit_code(process, timeout=10) in (0, -signal.SIGTERM)
    assert stream.events[-1] == b"[DONE]" and len(stream.events) == 6 + 2  # the chunks, the last one, [DONE]
    assert records(tmp_path) == {stream.request_id: "success"}


def refused_within(port: int, timeout: float) -> bool:
    """Whether connecting to ``port`` is refused within ``timeout`` seconds (the listening socket closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.02)
    return False
