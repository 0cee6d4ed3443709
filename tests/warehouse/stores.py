"""Helpers for the warehouse store tests: both stores opened the same way (SQLite in a temporary
directory, PostgreSQL at 127.0.0.1:5432 database ``test`` in a table or a schema of the test's own,
dropped afterwards), a gateway run in process over either, log records made to order, and a TCP
proxy whose cut simulates a database outage."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from services import require_service

from otel_gateway.app import create_app
from otel_gateway.config import GatewayConfig, load_config_text
from otel_gateway.runtime import Gateway
from otel_gateway.warehouse._postgres import PostgresStore
from otel_gateway.warehouse._sqlite import SQLiteStore
from otel_gateway.warehouse._store import Store

POSTGRES_DSNS = (
    [os.environ["GATEWAY_TEST_POSTGRES_DSN"]] if os.environ.get("GATEWAY_TEST_POSTGRES_DSN") else
    ["postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test"]
)
BASE = datetime(2025, 3, 5, 16, 0, tzinfo=UTC)
_dsn: str | None = None


async def postgres_dsn() -> str:
    """The first DSN that answers; skips the test (fails under GATEWAY_REQUIRE_SERVICES=1) if none."""
    global _dsn
    if _dsn is not None:
        return _dsn
    for dsn in POSTGRES_DSNS:
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            continue
        await conn.close()
        _dsn = dsn
        return dsn
    require_service(f"PostgreSQL is unreachable at {', '.join(POSTGRES_DSNS)}")
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def postgres_table() -> AsyncIterator[tuple[str, str]]:
    """(dsn, table name): a table name of this test's own, dropped afterwards."""
    dsn = await postgres_dsn()
    table = f"test_logs_{uuid.uuid4().hex[:12]}"
    try:
        yield dsn, table
    finally:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def postgres_schema(prefix: str) -> AsyncIterator[tuple[str, asyncpg.Connection, str]]:
    """(dsn, an admin connection, schema name): a schema of this test's own (named ``prefix`` and a
    random suffix), dropped with everything in it afterwards."""
    dsn = await postgres_dsn()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield dsn, admin, schema
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


def sqlite_url(path: Path) -> str:
    """The store URL of the SQLite database at the absolute ``path``."""
    return f"sqlite:///{path}".replace(":///", ":////", 1)


@contextlib.asynccontextmanager
async def store_url(kind: str, tmp_path: Path, *, prefix: str = "test_store") -> AsyncIterator[str]:
    """The URL of an empty store of ``kind``: SQLite in ``tmp_path``, PostgreSQL in a schema of its own
    (see :func:`postgres_schema`), for a gateway to make its table in."""
    if kind == "sqlite":
        yield sqlite_url(tmp_path / "logs.db")
        return
    async with postgres_schema(prefix) as (dsn, _, schema):
        yield f"{dsn}?search_path={schema}"


@contextlib.asynccontextmanager
async def running_gateway(config: str | GatewayConfig, *, timeout: float = 5.0, **create_app_options: Any
                          ) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    """The gateway app of ``config`` (a config text or a loaded config) started in process (its
    lifespan runs), an httpx client over ASGI for it (``timeout`` seconds: httpx's default unless
    told) and its :class:`Gateway`; the lifespan ends on exit."""
    if isinstance(config, str):
        config = load_config_text(config, environ={})
    app = create_app(config, **create_app_options)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://gw",
                                                                   timeout=timeout) as client:
        yield client, app.state.gateway


@contextlib.asynccontextmanager
async def open_store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    if kind == "sqlite":
        store: Store = SQLiteStore(tmp_path / "logs.db")
        try:
            yield store
        finally:
            await store.aclose()
        return
    async with postgres_table() as (dsn, table):
        store = PostgresStore(dsn, table=table)
        try:
            yield store
        finally:
            await store.aclose()


def record(
    record_id: str,
    at: datetime | int = 0,
    *,
    model: str = "demo/echo",
    user: str = "user:alice",
    project: str | None = "proj_a",
    status: str = "success",
    metadata: dict[str, Any] | None = None,
    latency: int = 120,
    cost: float = 0.0012,
    tokens: tuple[int, int] = (10, 5),
) -> dict[str, Any]:
    """A record shaped like the seed's; ``at`` is a datetime or minutes after :data:`BASE`."""
    moment = at if isinstance(at, datetime) else BASE + timedelta(minutes=at)
    return {
        "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "resource": {"service.name": "otel-gateway", "service.version": "0.1.0", "deployment.environment": "test"},
        "name": "ai_gateway_request_log",
        "attributes": {
            "id": record_id,
            "threadId": None,
            "org_id": "default",
            "user_id": user,
            "project_id": project,
            "provider": model.partition("/")[0],
            "model": model,
            "request": {"model": model, "messages": [{"role": "user", "content": f"hello {record_id}"}]},
            "response": {"id": f"chatcmpl-{record_id}", "choices": [{"message": {"role": "assistant",
                                                                                  "content": "hi"}}]},
            "metadata": {
                "projectId": project,
                "projectName": None,
                "latency": latency,
                "tokens": {"input": tokens[0], "output": tokens[1], "total": sum(tokens)},
                "cost": cost,
                "status": status,
                "provider_request_id": f"chatcmpl-{record_id}",
                **(metadata or {}),
            },
        },
    }


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["attributes"]["id"] for r in records]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. :meth:`cut` closes the listener and every open
    connection (new ones are refused: the database is unreachable); :meth:`restore` listens on the
    same port again. Runs on the loop that started it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            sink.close()
            self._writers.discard(sink)

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()

    async def aclose(self) -> None:
        await self.cut()
