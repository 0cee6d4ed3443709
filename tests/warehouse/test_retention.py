"""Retention end to end, on both stores: a gateway whose logging document says ``retention_days``
prunes its configured store (SQLite in a temporary directory, PostgreSQL in a schema of its own)
soon after it starts, keeping the records younger than that, its own new ones included."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from stores import ids, record, running_gateway, store_url

from otel_gateway.warehouse._store import LogFilters, store_for_url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_retention_days_prune_the_configured_store(kind: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    async with store_url(kind, tmp_path, prefix="test_retention") as url:
        store = store_for_url(url)
        await store.write([record(f"old{i}", now - timedelta(days=8, hours=i)) for i in range(5)]
                          + [record("six-days", now - timedelta(days=6))])
        await store.aclose()
        config = f"""\
type: gateway-providers-config
providers:
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-logging-config
store: "{url}"
spool_dir: "{tmp_path / 'spool'}"
retention_days: 7
flush_interval_ms: 20
"""
        async with running_gateway(config) as (client, _):
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
