"""Every record is stored, on SQLite and PostgreSQL alike, whatever text or time it holds: a NUL
character (which PostgreSQL's ``text`` and ``jsonb`` refuse, and the whole batch with it) is kept as
U+FFFD in every column and in the record's JSON, and a time outside years 1 to 9999 in UTC (which a
PostgreSQL ``timestamptz`` parameter refuses) is clamped to them. Before, such a record failed
every write of its batch: spooled and replayed forever, the records beside it never stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from stores import ids, open_store, record, running_gateway, store_url

from otel_gateway.runtime import Gateway
from otel_gateway.warehouse._store import LogFilters

KINDS = ["sqlite", "postgres"]
NUL, REPLACED = "\x00", "\ufffd"


def config_text(store: str, tmp_path: Path) -> str:
    """A flush interval far beyond the test: the records are written when the test flushes, one batch."""
    return ("type: gateway-providers-config\nproviders:\n  - {name: demo, type: mock, models: [echo]}\n"
            f"---\ntype: gateway-logging-config\nstore: \"{store}\"\nspool_dir: \"{tmp_path / 'spool'}\"\n"
            "batch_size: 100\nflush_interval_ms: 600000\nretention_days: null\n")


@pytest.fixture(params=KINDS)
async def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    async with (store_url(request.param, tmp_path, prefix="test_nul") as url,
                running_gateway(config_text(url, tmp_path), capture_content=True) as running):
        yield running


async def logs(client: httpx.AsyncClient, **query: str) -> list[dict[str, Any]]:
    response = await client.get("/api/logs", params=query)
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["data"]
    return records


async def test_nul_in_model_metadata_and_body_is_stored_with_its_batch(
        gateway: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, runtime = gateway
    unknown = await client.post("/v1/chat/completions", json={
        "model": f"a{NUL}b", "messages": [{"role": "user", "content": "hi"}]})
    metadata = json.dumps({"project_id": f"p{NUL}q", "team": f"t{NUL}u"})  # ASCII: \u0000 escapes
    odd = await client.post("/v1/chat/completions", headers={"x-gateway-metadata": metadata}, json={
        "model": "demo/echo", "messages": [{"role": "user", "content": f"x{NUL}y"}]})
    plain = await client.post("/v1/chat/completions", json={
        "model": "demo/echo", "messages": [{"role": "user", "content": "plain"}]})
    assert (unknown.status_code, odd.status_code, plain.status_code) == (404, 200, 200), unknown.text

    await runtime.request_log.flush()

    stats = runtime.request_log.stats
    assert (stats.written, stats.spooled, stats.dropped) == (3, 0, 0)
    stored = await logs(client)
    request_ids = [r.headers["x-gateway-request-id"] for r in (plain, odd, unknown)]
    assert sorted(ids(stored)) == sorted(request_ids)  # each exactly once
    (by_model,) = await logs(client, model=f"a{REPLACED}b")
    assert by_model["attributes"]["id"] == unknown.headers["x-gateway-request-id"]
    assert by_model["attributes"]["metadata"]["status"] == "error"
    (by_project,) = await logs(client, project=f"p{REPLACED}q")
    attributes = by_project["attributes"]
    assert attributes["id"] == odd.headers["x-gateway-request-id"]
    assert (attributes["project_id"], attributes["metadata"]["team"]) == (f"p{REPLACED}q", f"t{REPLACED}u")
    assert attributes["request"]["messages"] == [{"role": "user", "content": f"x{REPLACED}y"}]
    assert attributes["response"]["choices"][0]["message"]["content"] == f"x{REPLACED}y"
    assert NUL not in json.dumps(stored, ensure_ascii=False)


@pytest.mark.parametrize("kind", KINDS)
async def test_nul_in_every_column_and_times_beyond_the_years_are_stored(kind: str, tmp_path: Path) -> None:
    nul = record(f"r{NUL}nul", 1, model=f"demo/e{NUL}cho", user=f"user:{NUL}", project=f"proj{NUL}",
                 status=f"succ{NUL}ess", metadata={f"k{NUL}": f"v{NUL}"})
    before_year_1 = record("r-year-0", 2)
    before_year_1["timestamp"] = "0001-01-01T00:00:00+14:00"  # 0000-12-31T10:00Z
    after_year_9999 = record("r-year-10000", 3)
    after_year_9999["timestamp"] = "9999-12-31T23:59:59-14:00"  # 10000-01-01T13:59:59Z
    plain = record("r-plain", 4)
    async with open_store(kind, tmp_path) as store:
        await store.write([nul, before_year_1, after_year_9999, plain])

        page = await store.query(LogFilters())
        assert ids(page.records) == ["r-year-10000", "r-plain", f"r{REPLACED}nul", "r-year-0"]
        (found,) = (await store.query(LogFilters(model=f"demo/e{REPLACED}cho", user=f"user:{REPLACED}",
                                                 project=f"proj{REPLACED}", status=f"succ{REPLACED}ess"))).records
        assert found["attributes"]["metadata"][f"k{REPLACED}"] == f"v{REPLACED}"
        (earliest,) = (await store.query(LogFilters(until=datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC)))).records
        assert earliest["attributes"]["id"] == "r-year-0"
        (latest,) = (await store.query(LogFilters(since=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)))).records
        assert latest["attributes"]["id"] == "r-year-10000"

        await store.write([nul, before_year_1, after_year_9999, plain])  # replayed: nothing duplicated
        assert len((await store.query(LogFilters())).records) == 4
