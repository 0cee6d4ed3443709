"""Real HTTP servers for tests: the gateway and fake upstreams, each on a free loopback port, in a
thread or (``otel-gateway serve``) as a process of its own; and waiting for the spans a gateway
served in a thread ends there."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import ASGIApp


@contextlib.contextmanager
def serve(app: ASGIApp, *, thread_name: str | None = None, **options: Any) -> Iterator[str]:
    """Runs ``app`` under uvicorn in a thread (named ``thread_name``); yields its base URL, stops it on
    exit. ``options`` are ``uvicorn.Config``'s, over quiet defaults (no access log, warnings only)."""
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "log_level": "warning", "lifespan": "on",
                                "access_log": False, **options}
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    thread = threading.Thread(target=server.run, daemon=True, name=thread_name)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def served_sdk(app: ASGIApp, *, api_key: str = "client-key") -> Iterator[openai.OpenAI]:
    """``app`` served as by :func:`serve`, and an ``openai`` SDK client for it (no retries, 10 s)."""
    with serve(app) as url, openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=10) as sdk:
        yield sdk


def free_port() -> int:
    """A loopback port nothing listens on (just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway_process(config: Path, cwd: Path, *options: str) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m otel_gateway serve --config C --port P --log-level warning [options]`` started in
    ``cwd`` without the ``OTEL_*`` environment; the process and its URL. Stopping it is the caller's
    (it may not be up yet: see :func:`wait_until_healthy`)."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "ENABLE_OTEL"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_gateway", "serve", "--config", str(config), "--port", str(port),
         "--log-level", "warning", *options], cwd=cwd, env=env)
    return process, f"http://127.0.0.1:{port}"


def wait_until_healthy(process: subprocess.Popen[bytes], url: str, timeout: float) -> None:
    """Returns once ``url``/healthz answers 200; fails if the process exits or ``timeout`` s pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)


def port_of(url: str) -> int:
    """The port of a served base URL such as ``http://127.0.0.1:8123`` (a path after it allowed)."""
    return int(url.rsplit(":", 1)[1].split("/")[0])


def finished_spans(exporter: InMemorySpanExporter, *names: str, timeout: float = 5.0) -> list[ReadableSpan]:
    """The finished spans, once one of each of ``names`` is among them (spans end in the server thread)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = list(exporter.get_finished_spans())
        if all(any(s.name == name for s in spans) for name in names):
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(f"spans {names} did not all finish in {timeout} s; got {[s.name for s in spans]}")
        time.sleep(0.01)


def chat_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    """The one finished ``chatCompletions`` span."""
    (span,) = [s for s in finished_spans(exporter, "chatCompletions") if s.name == "chatCompletions"]
    return span
