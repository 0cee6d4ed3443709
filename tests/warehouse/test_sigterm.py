"""SIGTERM flushes the request log: ``otel-gateway serve`` as its own process (one worker, and two),
records queued (the batch not full, the flush interval far off) when the signal comes; once the
process has exited, the SQLite store and the JSONL file hold every one of them, the spool nothing."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx
import orjson
import pytest
from servers import start_gateway_process, wait_until_healthy

REQUESTS = 25


def rows(path: Path) -> list[str]:
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        return [row_id for (row_id,) in conn.execute("SELECT id FROM request_logs")]
    except sqlite3.OperationalError:  # no table yet: nothing was written
        return []
    finally:
        conn.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_writes_every_queued_record(tmp_path: Path, workers: int) -> None:
    db, jsonl, spool = tmp_path / "logs.db", tmp_path / "records.jsonl", tmp_path / "spool"
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""\
type: gateway-providers-config
providers:
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-logging-config
store: "sqlite:///{db}"
jsonl: "{jsonl}"
spool_dir: "{spool}"
batch_size: 1000
flush_interval_ms: 600000
""".replace("sqlite:///", "sqlite:////", 1))
    process, url = start_gateway_process(config, tmp_path, "--workers", str(workers))
    try:
        wait_until_healthy(process, url, timeout=30)
        ids = []
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(REQUESTS):
                # a new connection each time, so that both workers get requests
                response = client.post("/v1/chat/completions", headers={"connection": "close"}, json={
                    "model": "demo/echo", "messages": [{"role": "user", "content": f"request {i}"}]})
                assert response.status_code == 200
                ids.append(response.headers["x-gateway-request-id"])
        time.sleep(0.2)
        assert rows(db) == [] and not jsonl.exists()  # all of them are still queued
        process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down (the supervisor of several workers does)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert sorted(rows(db)) == sorted(ids)
    assert sorted(orjson.loads(line)["attributes"]["id"] for line in jsonl.read_bytes().splitlines()) == sorted(ids)
    assert [p.name for p in spool.rglob("*") if p.is_file() and p.stat().st_size] == []
