"""Three ``otel-gateway serve`` processes sharing one rate limit in the real Redis, optionally on a
clock the test sets (``ratelimit_clocked_gateway``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis
from servers import free_port

from otel_gateway.routing.ratelimit._redis import DEFAULT_PREFIX

REDIS_URL = "redis://127.0.0.1:6379/0"
CLOCKED = Path(__file__).with_name("ratelimit_clocked_gateway.py")


class FileClock:
    """The time the clocked gateways read, in seconds: written whole (a rename), never half."""

    def __init__(self, path: Path, now: float) -> None:
        self.path = path
        self.set(now)

    def set(self, now: float) -> None:
        self.now = now
        partial = self.path.with_suffix(".tmp")
        partial.write_text(repr(now))
        partial.replace(self.path)


@contextlib.contextmanager
def three_gateways(
    workdir: Path, name: str, limit: str, *, models: str = "echo", clock: FileClock | None = None
) -> Iterator[tuple[list[str], str]]:
    """Three gateway processes with one rate rule (``limit``; its id ``name``, a random suffix, and
    ``{model}`` when ``models`` are several) in the shared Redis backend, on Redis's clock or on
    ``clock``. Yields their URLs and the rule id, whose keys are deleted afterwards."""
    rule = f"{name}-{uuid.uuid4().hex}" + ("-{model}" if "," in models else "")
    (workdir / "gateway.yaml").write_text(f"""\
type: gateway-providers-config
providers:
  - {{name: demo, type: mock, models: [{models}]}}
---
type: gateway-rate-limiting-config
backend: {REDIS_URL}
rules:
  - {{id: "{rule}", {limit}}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENABLE_OTEL", "OTEL_"))}
    ports = [free_port() for _ in range(3)]
    program = ["-m", "otel_gateway"] if clock is None else [str(CLOCKED), str(clock.path)]
    processes = [
        subprocess.Popen(
            [sys.executable, *program, "serve", "--config", str(workdir / "gateway.yaml"), "--port", str(port),
             "--log-level", "warning"],
            env=env, cwd=workdir,
        )
        for port in ports
    ]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, process in zip(urls, processes, strict=True):
            wait_until_healthy(url, process)
        yield urls, rule
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        delete_rule_keys(rule.removesuffix("-{model}"))


def wait_until_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"the gateway at {url} exited with {process.returncode}"
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the gateway at {url} did not become healthy"
        time.sleep(0.05)


def delete_rule_keys(rule: str) -> None:
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{DEFAULT_PREFIX}*{rule}*"))
        if keys:
            client.delete(*keys)
