"""The PostgreSQL store: ``postgresql://user@host:5432/db``, through a small asyncpg pool.

The record is a ``jsonb`` column, beside the indexed columns both stores share, plus a GIN index
on ``record->'attributes'->'metadata'`` that metadata filters (``@>``) use. The pool connects
lazily and with short timeouts: while the server is unreachable every write fails fast with
:class:`StoreUnavailable` (the pipeline spools the batch), and once it is back the pool replaces
its dead connections on the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import orjson

from . import _sql
from ._store import (
    LogFilters,
    LogPage,
    Position,
    StoreUnavailable,
    encode_cursor,
    from_micros,
    logger,
    to_micros,
    to_row,
)

_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)
"""What a lost or refused connection raises (a server shutting a backend down mid-protocol can leave
asyncpg in an ``InternalClientError``)."""


def _metadata_match(key: str, value: str, bind: Callable[[Any], str]) -> str:
    return f"record->'attributes'->'metadata' @> jsonb_build_object({bind(key)}::text, {bind(value)}::text)"


POSTGRES = _sql.Dialect(
    placeholder=lambda n: f"${n}",
    types={"ts": "timestamptz", "float": "double precision", "int": "bigint", "record": "jsonb"},
    time_value=from_micros,
    metadata_match=_metadata_match,
)


class PostgresStore:
    """``connect_timeout`` bounds a new connection, ``command_timeout`` one statement (a batch
    insert, a query), ``acquire_timeout`` the wait for a free pooled connection. The connections
    show as ``application_name`` in ``pg_stat_activity``."""

    kind = "postgresql"
    """What ``/readyz`` calls this store."""

    def __init__(self, dsn: str, *, table: str = "request_logs", max_connections: int = 4,
                 connect_timeout: float = 3.0, command_timeout: float = 10.0, acquire_timeout: float = 5.0,
                 application_name: str = "otel-gateway") -> None:
        self.dsn = dsn
        self.table = _sql.check_identifier(table)
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._acquire_timeout = acquire_timeout
        self._application_name = application_name
        self._insert = _sql.insert_statement(self.table, POSTGRES)
        self._pool: asyncpg.Pool | None = None
        self._schema_ready = False
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore(table={self.table!r})"  # the DSN may carry a password

    async def _get_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise StoreUnavailable(f"{self!r} is closed")
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    # min_size=0: nothing connects here, so a store made while the server is down
                    # still comes up; every acquire connects (again) when it must.
                    self._pool = await asyncpg.create_pool(
                        self.dsn, min_size=0, max_size=self._max_connections, timeout=self._connect_timeout,
                        command_timeout=self._command_timeout, max_inactive_connection_lifetime=60.0,
                        server_settings={"application_name": self._application_name})
        return self._pool

    @contextlib.asynccontextmanager
    async def _connection(self, action: str) -> AsyncIterator[Any]:
        """A pooled connection with the schema in place. Any failure becomes
        :class:`StoreUnavailable`, and the connection it happened on (or that a cancellation
        interrupted) is discarded with every other pooled one; the pool connects anew when next
        asked, so after an outage only one write fails on a dead connection, not one per connection."""
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=self._acquire_timeout) as conn:
                try:
                    await self._ensure_schema(conn)
                    yield conn
                except BaseException:  # a failure, or a timeout cancelling a statement midway
                    with contextlib.suppress(asyncpg.InterfaceError):  # already closed and released
                        conn.terminate()
                    # What broke one connection (a restart, a network cut) likely broke its idle
                    # siblings too: they are all replaced on their next use.
                    await pool.expire_connections()
                    raise
        except _FAILURES as exc:
            raise StoreUnavailable(f"{action} PostgreSQL failed: {type(exc).__name__}: {exc}") from exc

    async def _ensure_schema(self, conn: Any) -> None:
        if self._schema_ready:
            return
        async with conn.transaction():
            # Serializes CREATE ... IF NOT EXISTS between gateway processes starting together.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"otel_gateway:{self.table}")
            for statement in _sql.create_table(self.table, POSTGRES):
                await conn.execute(statement)
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self.table}_metadata_idx ON {self.table} "
                "USING GIN ((record->'attributes'->'metadata') jsonb_path_ops)")
        self._schema_ready = True

    async def write(self, records: list[dict[str, Any]]) -> None:
        rows = [row for record in records if (row := to_row(record)) is not None]
        if not rows:
            return
        values = [_sql.row_values(row, POSTGRES) for row in rows]
        async with self._connection(f"writing {len(values)} log record(s) to") as conn, conn.transaction():
            await conn.executemany(self._insert, values)

    async def query(self, filters: LogFilters) -> LogPage:
        sql, params = _sql.select_page(self.table, filters, POSTGRES)
        async with self._connection("querying") as conn:
            rows = await conn.fetch(sql, *params)
        records = [orjson.loads(row[2]) for row in rows[:filters.limit]]
        cursor = None
        if len(rows) > filters.limit:
            ts, record_id, _ = rows[filters.limit - 1]
            cursor = encode_cursor(Position(to_micros(ts), record_id))
        return LogPage(records, cursor)

    async def prune(self, older_than_seconds: float) -> int:
        statement = _sql.prune_statement(self.table, POSTGRES)
        cutoff = from_micros(int((time.time() - older_than_seconds) * 1_000_000))
        deleted = 0
        async with self._connection("pruning") as conn:
            while True:
                status = await conn.execute(statement, cutoff)
                count = int(status.rsplit(" ", 1)[-1])
                deleted += count
                if count < _sql.PRUNE_CHUNK:
                    return deleted
        raise AssertionError("unreachable")

    async def ping(self) -> bool:
        try:
            async with self._connection("pinging") as conn:
                await conn.fetchval("SELECT 1", timeout=self._connect_timeout)
        except StoreUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=self._command_timeout)
        except (TimeoutError, *_FAILURES):
            logger.warning("closing the PostgreSQL pool timed out; terminating its connections")
            pool.terminate()
