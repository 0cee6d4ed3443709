"""Retention end to end, on both stores: a gateway whose logging document says ``retention_days``
prunes its configured store (SQLite in a temporary directory, PostgreSQL in a schema of its own)
soon after it starts, keeping the records younger than that, its own new ones included."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from stores import ids, postgres_dsn, record

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text
from otel_gateway.warehouse._store import LogFilters, store_for_url


@contextlib.asynccontextmanager
async def store_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'logs.db'}".replace(":///", ":////", 1)
        return
    dsn = await postgres_dsn()
    schema = f"test_retention_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{dsn}?search_path={schema}"
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_retention_days_prune_the_configured_store(kind: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    async with store_url(kind, tmp_path) as url:
        store = store_for_url(url)
        await store.write([record(f"old{i}", now - timedelta(days=8, hours=i)) for i in range(5)]
                          + [record("six-days", now - timedelta(days=6))])
        await store.aclose()
        config = load_config_text(f"""\
type: gateway-providers-config
providers:
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-logging-config
store: "{url}"
spool_dir: "{tmp_path / 'spool'}"
retention_days: 7
flush_interval_ms: 20
""", environ={})
        app = create_app(config)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            answer = await client.post("/v1/chat/completions", json={
                "model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]})
            assert answer.status_code == 200
            reader = store_for_url(url)
            try:
                async with asyncio.timeout(5):
                    while len(found := ids((await reader.query(LogFilters(limit=100))).records)) != 2:
                        await asyncio.sleep(0.02)
            finally:
                await reader.aclose()
    assert found == [answer.headers["x-gateway-request-id"], "six-days"]
