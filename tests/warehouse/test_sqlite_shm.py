"""A SQLite store fault never kills the gateway: its ``-shm`` file (the WAL index, which SQLite maps
into memory) made unwritable while ``otel-gateway serve`` writes to the database. Before the guard,
the next write through the mapping ended the process with SIGBUS (exit 135, -7 here), no log line,
its queued records lost. Now the fault is a store error: the records are spooled, a log line names
the file and the cause, reads answer 503, the process serves on, and once the file is writable
again the spool is replayed into the store. Needs ``chattr +i`` (root ignores chmod)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
from servers import free_port, wait_until_healthy
from services import require_service
from test_outage import chattr_works


@contextlib.contextmanager
def gateway(tmp_path: Path, db: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""\
type: gateway-providers-config
providers:
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-logging-config
store: "sqlite:///{db}"
spool_dir: "{tmp_path / 'spool'}"
batch_size: 10
flush_interval_ms: 100
""")
    port, log = free_port(), tmp_path / "gateway.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "ENABLE_OTEL"))}
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "otel_gateway", "serve", "--config", str(config), "--port", str(port),
             "--log-level", "warning"], cwd=tmp_path, env=env, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, timeout=30)
        yield process, url, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stored(db: Path) -> int:
    """Rows in the store; 0 until the gateway's first write has made its table."""
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM request_logs").fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return 0
    finally:
        conn.close()


async def until(condition: object, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(condition):  # type: ignore[arg-type]
            await asyncio.sleep(0.05)


async def test_an_unwritable_shm_is_a_store_error_not_a_crash(tmp_path: Path) -> None:
    if not chattr_works(tmp_path):
        require_service("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE and a file system that has it)")
    db = tmp_path / "logs.db"
    shm = Path(f"{db}-shm")
    body = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}
    locked = False
    try:
        with gateway(tmp_path, db) as (process, url, log):
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:

                async def send(count: int) -> None:
                    for _ in range(count):
                        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200

                async def spooled() -> int:
                    return int((await client.get("/readyz")).json()["request_log"]["spooled"])

                await send(5)
                await until(lambda: stored(db) == 5, timeout=10)  # the -shm is mapped now
                subprocess.run(["chattr", "+i", str(shm)], check=True)
                locked = True
                await send(16)
                async with asyncio.timeout(10):
                    while await spooled() < 16:
                        await asyncio.sleep(0.05)
                assert (await client.get("/api/logs")).status_code == 503
                assert process.poll() is None
                subprocess.run(["chattr", "-i", str(shm)], check=True)
                locked = False
                await until(lambda: stored(db) == 21, timeout=15)
                await send(1)
                await until(lambda: stored(db) == 22, timeout=10)
                assert (await client.get("/api/logs", params={"limit": 100})).status_code == 200
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 10) in (0, -signal.SIGTERM)
    finally:
        if locked:
            subprocess.run(["chattr", "-i", str(shm)], check=False)
    text = log.read_text()
    assert (f"the request log store cannot be written, records are spooled until it can: {shm} is not writable "
            "(immutable, or no write permission); SQLite maps this file into memory") in text
    assert f"the request log database {db} is writable again" in text
    assert stored(db) == 22
