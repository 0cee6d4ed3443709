"""Acceptance: 2,000 concurrent chat completions through the gateway (mock provider, 100 at a time)
while the request log store is unavailable for part of the run; afterwards the store holds exactly
one row per request, no more, no fewer, the spool having been replayed.

The outages are real failures of the real stores, made without touching the machine's servers:

* PostgreSQL: the gateway reaches the server through a TCP proxy owned by the test; cutting it
  aborts every pooled connection and refuses new ones (what a network partition or a server restart
  looks like to the gateway), restoring it lets the pool reconnect.
* SQLite: another process (as a backup or a migration would) holds the database's exclusive write
  lock for longer than the store's busy timeout, so every write fails with ``database is locked``.
  (chmod cannot make the file unwritable for root, and swapping the path does not affect the
  store's open connection; a held lock fails the writes themselves.)
* SQLite, the file made unwritable: the database file and its WAL are marked immutable
  (``chattr +i``, which binds root too and fails writes through descriptors already open: ``disk
  I/O error``, then ``attempt to write a readonly database``); skipped where chattr cannot be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
from services import require_service
from stores import TcpProxy, postgres_schema, running_gateway, sqlite_url

from otel_gateway.runtime import Gateway

REQUESTS = 2000
CONCURRENCY = 100


def config_text(store: str, spool: Path, *, delay_ms: int) -> str:
    """The mock provider answers after ``delay_ms``, which spreads the run over a few seconds (about
    ``REQUESTS / CONCURRENCY * delay_ms``), so the outage falls in its middle."""
    return f"""\
type: gateway-providers-config
providers:
  - {{name: demo, type: mock, models: [echo], mock: {{delay_ms: {delay_ms}}}}}
---
type: gateway-logging-config
store: "{store}"
spool_dir: "{spool}"
batch_size: 100
flush_interval_ms: 100
"""


def running(text: str) -> contextlib.AbstractAsyncContextManager[tuple[httpx.AsyncClient, Gateway]]:
    return running_gateway(text, timeout=30, capture_content=True)


class Load:
    """:data:`REQUESTS` chat completions, :data:`CONCURRENCY` at a time, and how far they got."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.answered = 0
        self.reached = {n: asyncio.Event() for n in (300,)}

    async def run(self) -> list[str]:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> str:
            async with gate:
                response = await self.client.post("/v1/chat/completions", json={
                    "model": "demo/echo", "messages": [{"role": "user", "content": f"request {i}"}]})
            assert response.status_code == 200, response.text
            self.answered += 1
            if self.answered in self.reached:
                self.reached[self.answered].set()
            return response.headers["x-gateway-request-id"]

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


async def run_with_outage(client: httpx.AsyncClient, count: Callable[[], Awaitable[int]],
                          start_outage: Callable[[], Awaitable[None]], end_outage: Callable[[], Awaitable[None]],
                          spool: Path, *, hold: float) -> list[str]:
    """The load, with the store down for ``hold`` seconds from the 300th answer (and the first stored
    records). Checks that the
    outage fell inside the run (records stored before it, requests answered during and after it)
    and that the gateway spooled while the store was down."""
    load = Load(client)

    async def outage() -> None:
        await load.reached[300].wait()
        while await count() == 0:  # the first batches are in
            await asyncio.sleep(0.02)
        await start_outage()
        answered_at_cut = load.answered
        await asyncio.sleep(hold)
        spooled = sum(f.stat().st_size for f in spool.rglob("*") if f.is_file())
        answered_at_restore = load.answered
        await end_outage()
        assert answered_at_cut < answered_at_restore < REQUESTS, "the outage did not fall inside the run"
        assert spooled > 0, "the store was never found down: nothing was spooled"

    request_ids, _ = await asyncio.gather(load.run(), outage())
    return request_ids


async def wait_for_rows(count: Callable[[], Awaitable[int]], expected: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while (found := await count()) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return found


async def sqlite_rows(path: Path) -> int:
    """The rows of the SQLite store at ``path``, read off the event loop; 0 before its file or table exists."""

    def count_now() -> int:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM request_logs").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    return await asyncio.to_thread(count_now) if path.exists() else 0


async def test_postgres_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    async with postgres_schema("test_outage") as (dsn, admin, schema):
        target = urlsplit(dsn)
        proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 5432).start()
        user = f"{target.username}@" if target.username else ""
        store_url = f"postgresql://{user}127.0.0.1:{proxy.port}{target.path}?search_path={schema}"
        table = f"{schema}.request_logs"

        async def count() -> int:
            try:
                return int(await admin.fetchval(f"SELECT count(*) FROM {table}"))
            except asyncpg.UndefinedTableError:
                return 0

        try:
            async with running(config_text(store_url, tmp_path / "spool", delay_ms=150)) as (client, gateway):
                request_ids = await run_with_outage(client, count, proxy.cut, proxy.restore, tmp_path / "spool",
                                                    hold=1.0)
                assert await wait_for_rows(count, REQUESTS) == REQUESTS
                stats = gateway.request_log.stats
                assert stats.spooled > 0 and stats.replayed > 0 and stats.dropped == 0
            assert await count() == REQUESTS
            stored = [row["id"] for row in await admin.fetch(f"SELECT id FROM {table}")]
            assert len(stored) == len(set(stored)) == REQUESTS
            assert set(stored) == set(request_ids)
        finally:
            await proxy.aclose()


LOCK_HOLDER = """\
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


async def test_sqlite_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "data" / "logs.db"
    holder: asyncio.subprocess.Process | None = None

    async def lock() -> None:
        nonlocal holder
        holder = await asyncio.create_subprocess_exec(sys.executable, "-c", LOCK_HOLDER, str(path),
                                                      stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 10) == b"locked\n"

    async def unlock() -> None:
        assert holder is not None and holder.stdin is not None
        holder.stdin.write(b"go\n")
        await holder.stdin.drain()
        assert await asyncio.wait_for(holder.wait(), 10) == 0

    async def count() -> int:
        return await sqlite_rows(path)

    try:
        url = sqlite_url(path)
        async with running(config_text(url, tmp_path / "spool", delay_ms=250)) as (client, gateway):
            # The lock is held for longer than the store's busy timeout (2 s): writes fail.
            request_ids = await run_with_outage(client, count, lock, unlock, tmp_path / "spool", hold=2.6)
            assert await wait_for_rows(count, REQUESTS) == REQUESTS
            stats = gateway.request_log.stats
            assert stats.spooled > 0 and stats.replayed > 0 and stats.dropped == 0
    finally:
        if holder is not None and holder.returncode is None:
            holder.kill()
            await holder.wait()
    conn = sqlite3.connect(path)
    stored = [row_id for (row_id,) in conn.execute("SELECT id FROM request_logs")]
    conn.close()
    assert len(stored) == len(set(stored)) == REQUESTS
    assert set(stored) == set(request_ids)


def chattr_works(directory: Path) -> bool:
    probe = directory / "chattr-probe"
    probe.write_text("x")
    if shutil.which("chattr") is None:
        return False
    made = subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
    try:
        with open(probe, "a") as file:
            file.write("y")
        writable = True
    except OSError:
        writable = False
    subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
    probe.unlink()
    return made and not writable


async def test_sqlite_file_made_unwritable_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    if not chattr_works(tmp_path):
        # As root, chmod does not stop a write: only the immutable flag makes the file unwritable.
        require_service("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE and a file system that has it)")
    path = tmp_path / "data" / "logs.db"
    locked: list[str] = []

    async def immutable(flag: str, files: list[str]) -> None:
        process = await asyncio.create_subprocess_exec("chattr", flag, *files)
        assert await process.wait() == 0

    async def make_unwritable() -> None:
        # The database and its WAL (which the writes go to); not the shared-memory index, which
        # SQLite maps into memory (an immutable mapping faults with SIGBUS: no store survives that).
        locked[:] = [str(path), f"{path}-wal"]
        assert all(Path(f).exists() for f in locked)
        await immutable("+i", locked)

    async def make_writable() -> None:
        await immutable("-i", locked)
        locked.clear()

    async def count() -> int:
        return await sqlite_rows(path)

    try:
        url = sqlite_url(path)
        async with running(config_text(url, tmp_path / "spool", delay_ms=150)) as (client, gateway):
            request_ids = await run_with_outage(client, count, make_unwritable, make_writable, tmp_path / "spool",
                                                hold=1.0)
            assert await wait_for_rows(count, REQUESTS) == REQUESTS
            stats = gateway.request_log.stats
            print(f"\nfile unwritable for 1 s: {stats}")
            assert stats.spooled > 0 and stats.replayed > 0 and stats.dropped == 0
    finally:
        if locked:
            subprocess.run(["chattr", "-i", *locked], check=False)
    conn = sqlite3.connect(path)
    stored = [row_id for (row_id,) in conn.execute("SELECT id FROM request_logs")]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    assert len(stored) == len(set(stored)) == REQUESTS
    assert set(stored) == set(request_ids)
