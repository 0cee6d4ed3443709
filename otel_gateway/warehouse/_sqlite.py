"""The embedded store: one SQLite file in WAL mode, nothing to run beside the gateway.

Every database call runs off the event loop, on one of two threads the store owns: the writer
thread holds the one writing connection (batches go in one ``BEGIN IMMEDIATE`` transaction each),
the reader thread a read-only connection for queries, which WAL lets run while a batch commits.
A failed write (file unwritable, locked by another process past the busy timeout, disk full)
closes the writing connection and raises :class:`StoreUnavailable`; the next write opens it again,
so the store recovers by itself once the file is usable. Before a connection is used or closed,
the database's files are checked to be writable (:mod:`._sqlite_files`: an unwritable ``-shm``
would crash the process with SIGBUS, not fail a call).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from . import _sql
from ._sqlite_files import SQLiteFiles
from ._store import LogFilters, LogPage, Position, StoreUnavailable, encode_cursor, to_row

T = TypeVar("T")


def _metadata_match(key: str, value: str, bind: Callable[[Any], str]) -> str:
    # json_each, not a json_extract path: any key works, no quoting of '.', '"' or '['.
    return (f"EXISTS (SELECT 1 FROM json_each(record, '$.attributes.metadata') "
            f"WHERE key = {bind(key)} AND type = 'text' AND value = {bind(value)})")


SQLITE = _sql.Dialect(
    placeholder=lambda n: f"?{n}",
    types={"ts": "INTEGER", "float": "REAL", "int": "INTEGER", "record": "TEXT"},
    time_value=lambda ts_us: ts_us,
    metadata_match=_metadata_match,
)


class SQLiteStore:
    """``sqlite:///path/to/file.db``. ``busy_timeout`` is how long a write waits for a lock held
    by another connection (another gateway worker, a backup) before it fails and is spooled."""

    kind = "sqlite"
    """What ``/readyz`` calls this store."""

    def __init__(self, path: str | os.PathLike[str], *, table: str = "request_logs",
                 busy_timeout: float = 2.0) -> None:
        self.path = Path(path)
        self.table = _sql.check_identifier(table)
        self.busy_timeout = busy_timeout
        self._insert = _sql.insert_statement(self.table, SQLITE)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="otel-gateway-sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="otel-gateway-sqlite-reader")
        self._write_conn: sqlite3.Connection | None = None
        """Used on the writer thread only."""
        self._read_conn: sqlite3.Connection | None = None
        """Used on the reader thread only."""
        self._files = SQLiteFiles(self.path)
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, table={self.table!r})"

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        if self._closed:
            raise StoreUnavailable(f"{self!r} is closed")
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    # -- writing (writer thread) -------------------------------------------------------------

    async def write(self, records: list[dict[str, Any]]) -> None:
        # Rows are made on the writer thread too: encoding the records is most of a write's work.
        await self._run(self._writer, lambda: self._write_sync(records))

    def _write_sync(self, records: list[dict[str, Any]]) -> None:
        values = [_sql.row_values(row, SQLITE) for record in records if (row := to_row(record)) is not None]
        if not values:
            return
        conn = self._writer_connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(self._insert, values)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._drop_writer()
            raise StoreUnavailable(f"writing {len(values)} log record(s) to {self.path} failed: {exc}") from exc

    async def prune(self, older_than_seconds: float) -> int:
        cutoff = int((time.time() - older_than_seconds) * 1_000_000)
        return await self._run(self._writer, lambda: self._prune_sync(cutoff))

    def _prune_sync(self, cutoff_us: int) -> int:
        conn = self._writer_connection()
        statement = _sql.prune_statement(self.table, SQLITE)
        deleted = 0
        try:
            while True:
                conn.execute("BEGIN IMMEDIATE")
                count = conn.execute(statement, (cutoff_us,)).rowcount
                conn.execute("COMMIT")
                deleted += count
                if count < _sql.PRUNE_CHUNK:
                    return deleted
        except sqlite3.Error as exc:
            self._drop_writer()
            raise StoreUnavailable(f"pruning {self.path} failed: {exc}") from exc

    def _writer_connection(self) -> sqlite3.Connection:
        try:
            self._files.check()
        except StoreUnavailable:
            self._drop_writer()
            raise
        if self._write_conn is not None:
            return self._write_conn
        conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _sql.create_table(self.table, SQLITE):
                conn.execute(statement)
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            raise StoreUnavailable(f"cannot open the log database {self.path}: {exc}") from exc
        self._write_conn = conn
        return conn

    def _drop_writer(self) -> None:
        conn, self._write_conn = self._write_conn, None
        self._files.release(conn, last=self._read_conn is None)

    # -- reading (reader thread) -------------------------------------------------------------

    async def query(self, filters: LogFilters) -> LogPage:
        sql, params = _sql.select_page(self.table, filters, SQLITE)
        return await self._run(self._reader, lambda: self._query_sync(sql, params, filters.limit))

    def _query_sync(self, sql: str, params: list[Any], limit: int) -> LogPage:
        conn = self._reader_connection()
        if conn is None:
            return LogPage([], None)
        try:
            rows = conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return LogPage([], None)
            self._drop_reader()
            raise StoreUnavailable(f"querying {self.path} failed: {exc}") from exc
        except sqlite3.Error as exc:
            self._drop_reader()
            raise StoreUnavailable(f"querying {self.path} failed: {exc}") from exc
        records = [orjson.loads(record) for _, _, record in rows[:limit]]
        cursor = None
        if len(rows) > limit:
            ts_us, record_id, _ = rows[limit - 1]
            cursor = encode_cursor(Position(ts_us, record_id))
        return LogPage(records, cursor)

    def _reader_connection(self) -> sqlite3.Connection | None:
        """Read-only; ``None`` while the database file does not exist (nothing logged yet)."""
        try:
            self._files.check()
        except StoreUnavailable:
            self._drop_reader()
            raise
        if self._read_conn is None:
            if not self.path.exists():
                return None
            try:
                self._read_conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                                  timeout=self.busy_timeout, check_same_thread=False)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open the log database {self.path}: {exc}") from exc
        return self._read_conn

    def _drop_reader(self) -> None:
        conn, self._read_conn = self._read_conn, None
        self._files.release(conn, last=self._write_conn is None)

    # -- lifecycle ---------------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            await self._run(self._writer, lambda: self._writer_connection().execute("SELECT 1").fetchall())
        except (StoreUnavailable, sqlite3.Error):
            return False
        return True

    async def aclose(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._drop_writer)
        await loop.run_in_executor(self._reader, self._drop_reader)
        self._files.abandon()
        self._closed = True
        self._writer.shutdown(wait=False)
        self._reader.shutdown(wait=False)
