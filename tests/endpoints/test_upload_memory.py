"""A 200 MB multipart upload through ``/v1/files`` passes with the gateway's memory growing by less
than 50 MB: the body streams through, it is never held. The gateway runs as its own process
(``python -m otel_gateway serve``) logging to its SQLite store, its resident memory read from
``/proc`` while the upload runs, and its peak (``VmHWM``, reset before the upload) after it."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes import Reply
from servers import serve, start_gateway_process, wait_until_healthy

from .endpoint_fakes import ProxyUpstream

MB = 1024 * 1024
SIZE = 200 * MB
BOUNDARY = "gateway-upload-boundary"
HEAD = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
        "Content-Type: application/jsonl\r\n\r\n").encode()
TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()
MAX_GROWTH = 50 * MB

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status")


def rss(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of ``pid`` in bytes (``VmHWM``: its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def reset_peak(pid: int) -> bool:
    """Resets ``VmHWM`` to the current resident size (Linux 4.0+); false where that is refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def multipart(file_size: int) -> Iterator[bytes]:
    """A multipart body with a ``file_size``-byte file, generated 1 MB at a time."""
    block = b'{"custom_id": "r", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n' * (MB // 80)
    block += b"x" * (MB - len(block))
    yield HEAD
    for _ in range(file_size // MB):
        yield block
    yield b"y" * (file_size % MB)
    yield TAIL


class PeakRss(threading.Thread):
    """Polls the resident memory of ``pid`` until stopped; keeps the highest."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss(pid)
        self._stop_polling = threading.Event()

    def run(self) -> None:
        while not self._stop_polling.wait(0.005):
            self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        self._stop_polling.set()
        self.join()
        self.peak = max(self.peak, rss(self.pid))
        return self.peak


@pytest.fixture(scope="module")
def counting_upstream() -> Iterator[tuple[ProxyUpstream, str]]:
    upstream = ProxyUpstream()
    with serve(upstream.app) as url:
        yield upstream, url


@pytest.fixture(scope="module")
def gateway_process(counting_upstream: tuple[ProxyUpstream, str], tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    workdir = tmp_path_factory.mktemp("gateway")
    config = workdir / "gateway.yaml"
    database = workdir / "logs.db"
    config.write_text(f"""
type: gateway-providers-config
providers:
  - name: oai
    type: openai
    base_url: {counting_upstream[1]}/v1
    api_key: sk-upload-test-key-0123
    models: [gpt-4o]
---
type: gateway-logging-config
store: "sqlite:///{database}"
spool_dir: "{workdir / 'spool'}"
flush_interval_ms: 50
""".replace("sqlite:///", "sqlite:////", 1))
    process, url = start_gateway_process(config, workdir)
    try:
        wait_until_healthy(process, url, timeout=20)
        yield process, url, database
    finally:
        process.terminate()
        process.wait(timeout=10)


def upload(url: str, file_size: int) -> httpx.Response:
    length = len(HEAD) + file_size + len(TAIL)
    with httpx.Client(timeout=60) as http:
        return http.post(f"{url}/v1/files", content=multipart(file_size), headers={
            "x-gateway-provider": "oai", "content-type": f"multipart/form-data; boundary={BOUNDARY}",
            "content-length": str(length),
        })


def logged_record(database: Path, request_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.OperationalError), contextlib.closing(sqlite3.connect(database)) as conn:
            row = conn.execute("SELECT record FROM request_logs WHERE id = ?", (request_id,)).fetchone()
            if row is not None:
                return dict(json.loads(row[0])["attributes"])
        time.sleep(0.05)
    raise AssertionError(f"request {request_id} was not logged")


def test_a_200_mb_upload_streams_through(
    gateway_process: tuple[subprocess.Popen[bytes], str, Path], counting_upstream: tuple[ProxyUpstream, str]
) -> None:
    process, url, database = gateway_process
    upstream = counting_upstream[0].reset(Reply(json={"id": "file-big", "object": "file"}))
    upstream.count_only = True
    assert upload(url, 8 * MB).status_code == 200  # warm up: code paths, buffers, the connection pool
    upstream.received_bytes = 0

    time.sleep(0.2)  # the warm-up's record is written
    before = rss(process.pid)
    exact_peak = reset_peak(process.pid)
    watch = PeakRss(process.pid)
    watch.start()
    started = time.monotonic()
    response = upload(url, SIZE)
    seconds = time.monotonic() - started
    peak = watch.stop()
    if exact_peak:
        peak = max(peak, rss(process.pid, "VmHWM"))

    assert (response.status_code, response.json()) == (200, {"id": "file-big", "object": "file"})
    assert upstream.received_bytes == len(HEAD) + SIZE + len(TAIL)
    growth = peak - before
    print(f"\n200 MB upload in {seconds:.2f} s; gateway RSS {before / MB:.1f} MB -> peak {peak / MB:.1f} MB "
          f"(growth {growth / MB:.1f} MB)")
    assert growth < MAX_GROWTH
    record = logged_record(database, response.headers["x-gateway-request-id"])
    assert (record["endpoint"], record["provider"], record["request"]) == ("/v1/files", "oai", {
        "content_type": "multipart/form-data", "size": len(HEAD) + SIZE + len(TAIL), "fields": {"purpose": "batch"},
        "files": [{"field": "file", "filename": "big.jsonl", "content_type": "application/jsonl"}]})
