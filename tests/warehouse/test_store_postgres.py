"""The PostgreSQL store's own behaviour against the real server at 127.0.0.1:5432 (skipped when it
is unreachable, failed under ``GATEWAY_REQUIRE_SERVICES=1``): schema and indexes, and outages made
without touching the server, by cutting a TCP proxy the store connects through or terminating the
store's backends, after which the store reconnects by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from stores import TcpProxy, ids, postgres_table, record

from otel_gateway.warehouse._postgres import PostgresStore
from otel_gateway.warehouse._store import LogFilters, StoreUnavailable


@pytest.fixture
async def table() -> AsyncIterator[tuple[str, str]]:
    async with postgres_table() as found:
        yield found


def via(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def test_schema_columns_and_indexes(table: tuple[str, str]) -> None:
    dsn, name = table
    store = PostgresStore(dsn, table=name)
    await store.write([record("a", 1, metadata={"env": "prod"})])
    await store.aclose()
    conn = await asyncpg.connect(dsn)
    try:
        types = dict(await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1", name))
        assert types["record"] == "jsonb"
        assert types["ts"] == "timestamp with time zone"
        indexes = {r["indexname"]: r["indexdef"] for r in await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1", name)}
        assert {f"{name}_{n}_idx" for n in ("ts", "model", "user", "project", "status", "metadata")} <= set(indexes)
        assert "gin" in indexes[f"{name}_metadata_idx"]
        row = await conn.fetchrow(f"SELECT model, user_id, project_id, status, provider, latency_ms, cost, tokens, "
                                  f"record->'attributes'->'metadata'->>'env' AS env FROM {name}")
        assert tuple(row) == ("demo/echo", "user:alice", "proj_a", "success", "demo", 120.0, 0.0012, 15, "prod")
    finally:
        await conn.close()


async def test_an_unreachable_server_fails_fast_and_the_store_comes_up_later(table: tuple[str, str]) -> None:
    dsn, name = table
    target = urlsplit(dsn)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    await proxy.cut()  # down before the store ever connected
    store = PostgresStore(via(dsn, proxy.port), table=name, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.write([record("a", 1)])
    assert time.monotonic() - started < 2
    assert await store.ping() is False
    await proxy.restore()
    await store.write([record("a", 1)])
    assert await store.ping() is True
    assert ids((await store.query(LogFilters())).records) == ["a"]
    await store.aclose()
    await proxy.aclose()


async def test_a_cut_mid_run_raises_then_reconnects(table: tuple[str, str]) -> None:
    dsn, name = table
    target = urlsplit(dsn)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    store = PostgresStore(via(dsn, proxy.port), table=name, connect_timeout=1)
    await store.write([record("before", 1)])
    await proxy.cut()  # pooled connections die, new ones are refused
    with pytest.raises(StoreUnavailable):
        await store.write([record("during", 2)])
    with pytest.raises(StoreUnavailable):
        await store.query(LogFilters())
    await proxy.restore()
    await store.write([record("during", 2), record("before", 1)])  # the replay, overlapping
    assert ids((await store.query(LogFilters())).records) == ["during", "before"]
    await store.aclose()
    await proxy.aclose()


async def test_terminated_backends_are_replaced(table: tuple[str, str]) -> None:
    dsn, name = table
    store = PostgresStore(dsn, table=name, application_name=name)
    await asyncio.gather(*(store.write([record(f"p{i}", i)]) for i in range(4)))  # warm several connections
    admin = await asyncpg.connect(dsn)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1", name)
    finally:
        await admin.close()
    assert killed >= 1
    try:  # a write on a dead connection fails once; every pooled connection is then replaced
        await store.write([record("after", 10)])
    except StoreUnavailable:
        await store.write([record("after", 10)])
    assert ids((await store.query(LogFilters(limit=1))).records) == ["after"]
    await store.aclose()
