"""The SQLite store's own behaviour: WAL and indexes, work kept off the event loop, and what an
unusable file does: writes raise (so the pipeline spools) and the store recovers by itself."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from stores import ids, record

from otel_gateway.warehouse._sqlite import SQLiteStore
from otel_gateway.warehouse._store import LogFilters, StoreUnavailable


async def test_file_is_in_wal_mode_with_indexes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "nested" / "dir" / "logs.db")
    await store.write([record("a", 1)])
    await store.aclose()
    conn = sqlite3.connect(tmp_path / "nested" / "dir" / "logs.db")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {f"request_logs_{n}_idx" for n in ("ts", "model", "user", "project", "status")} <= indexes
    row = conn.execute("SELECT id, ts, model, user_id, project_id, status, provider, latency_ms, cost, tokens "
                       "FROM request_logs").fetchone()
    assert row == ("a", 1741190460000000, "demo/echo", "user:alice", "proj_a", "success", "demo", 120.0, 0.0012, 15)
    plan = " ".join(str(r) for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT ts, id, record FROM request_logs WHERE model = 'x' ORDER BY ts DESC, id DESC"))
    assert "request_logs_model_idx" in plan
    conn.close()


async def test_a_missing_file_reads_as_empty_and_is_not_created_by_reading(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "absent.db")
    assert (await store.query(LogFilters())).records == []
    assert not (tmp_path / "absent.db").exists()
    await store.aclose()


async def test_concurrent_writes_all_land(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "logs.db")
    await asyncio.gather(*(store.write([record(f"w{i}-{j}", i) for j in range(20)]) for i in range(25)))
    assert len((await store.query(LogFilters(limit=1000))).records) == 500
    await store.aclose()


async def test_writes_do_not_block_the_event_loop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "logs.db")
    big = [record(f"b{i}", i) for i in range(3000)]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await store.write(big)
    elapsed = time.monotonic() - started
    task.cancel()
    assert elapsed > 0.02, "too quick to tell"
    assert ticks >= 5  # the loop kept running while the batch was written
    await store.aclose()


async def test_an_unusable_path_raises_then_recovers(tmp_path: Path) -> None:
    # The database's directory is replaced by a plain file: the file cannot be created (as root
    # too, unlike chmod). The write raises; once the directory is back, the next write succeeds.
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    store = SQLiteStore(blocker / "logs.db")
    with pytest.raises(StoreUnavailable, match="cannot open the log database"):
        await store.write([record("a", 1)])
    assert await store.ping() is False
    blocker.unlink()
    await store.write([record("a", 1), record("b", 2)])
    assert ids((await store.query(LogFilters())).records) == ["b", "a"]
    assert await store.ping() is True
    await store.aclose()


async def test_a_lock_held_past_the_busy_timeout_raises_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    store = SQLiteStore(path, busy_timeout=0.2)
    await store.write([record("before", 1)])
    # Another process (a backup, a migration) holds the write lock.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreUnavailable, match="database is locked"):
        await store.write([record("during", 2)])
    # Reads go on under WAL while the lock is held.
    assert ids((await store.query(LogFilters())).records) == ["before"]
    other.execute("ROLLBACK")
    other.close()
    await store.write([record("during", 2), record("after", 3)])
    assert ids((await store.query(LogFilters())).records) == ["after", "during", "before"]
    await store.aclose()


async def test_a_write_waits_for_a_short_lock(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    store = SQLiteStore(path, busy_timeout=5)
    await store.write([record("before", 1)])
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.2, lambda: (other.execute("ROLLBACK"), other.close())).start()
    await store.write([record("waited", 2)])
    assert ids((await store.query(LogFilters())).records) == ["waited", "before"]
    await store.aclose()


async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "logs.db")
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreUnavailable):
        await store.write([record("a", 1)])
    assert await store.ping() is False


def test_table_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid table name"):
        SQLiteStore(tmp_path / "x.db", table="logs; DROP TABLE x")
