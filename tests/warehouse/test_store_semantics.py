"""One suite, both stores: what a query returns (filters, order, pages), idempotent writes, prune.
SQLite runs in a temporary directory; PostgreSQL at 127.0.0.1:5432 in a table of the test's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from stores import BASE, ids, open_store, record

from otel_gateway.warehouse._query import build_filters
from otel_gateway.warehouse._store import LogFilters, Store


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(request.param, tmp_path) as store:
        yield store


ALL = LogFilters(limit=1000)


async def all_ids(store: Store, filters: LogFilters = ALL) -> list[str]:
    return ids((await store.query(filters)).records)


SAMPLE = [
    record("r1", 1, model="demo/echo", user="user:alice", project="proj_a", status="success",
           metadata={"env": "prod", "team": "ml"}),
    record("r2", 2, model="demo/echo", user="user:bob", project="proj_b", status="error",
           metadata={"env": "dev"}),
    record("r3", 3, model="openai-main/gpt-4o", user="user:alice", project="proj_b", status="success",
           metadata={"env": "prod", "count": 3}),  # type: ignore[dict-item]
    record("r4", 4, model="openai-main/gpt-4o", user="team:ml", project=None, status="rate_limited"),
    record("r5", 5, model="demo/echo", user="user:alice", project="proj_a", status="cancelled",
           metadata={"env": "prod", "odd.key \"x\"": "y"}),
]


async def test_empty_store_answers_an_empty_page(store: Store) -> None:
    page = await store.query(LogFilters())
    assert (page.records, page.next_cursor) == ([], None)


async def test_records_come_back_whole_and_newest_first(store: Store) -> None:
    await store.write(SAMPLE)
    page = await store.query(LogFilters())
    assert ids(page.records) == ["r5", "r4", "r3", "r2", "r1"]
    assert page.records[-1] == SAMPLE[0]
    assert page.next_cursor is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param({"model": "demo/echo"}, ["r5", "r2", "r1"], id="model"),
        pytest.param({"user": "user:alice"}, ["r5", "r3", "r1"], id="user"),
        pytest.param({"project": "proj_b"}, ["r3", "r2"], id="project"),
        pytest.param({"status": "success"}, ["r3", "r1"], id="status"),
        pytest.param({"status": "rate_limited"}, ["r4"], id="status-rate-limited"),
        pytest.param({"model": "demo/echo", "user": "user:alice"}, ["r5", "r1"], id="model-and-user"),
        pytest.param({"model": "demo/echo", "status": "success", "project": "proj_a"}, ["r1"], id="three"),
        pytest.param({"model": "nope/none"}, [], id="no-match"),
        pytest.param({"metadata": [("env", "prod")]}, ["r5", "r3", "r1"], id="metadata"),
        pytest.param({"metadata": [("env", "prod"), ("team", "ml")]}, ["r1"], id="two-metadata-pairs"),
        pytest.param({"metadata": [("env", "prod")], "user": "user:alice", "project": "proj_a"}, ["r5", "r1"],
                     id="metadata-and-columns"),
        pytest.param({"metadata": [("count", "3")]}, [], id="metadata-number-is-not-a-string"),
        pytest.param({"metadata": [("odd.key \"x\"", "y")]}, ["r5"], id="metadata-odd-key"),
        pytest.param({"metadata": [("missing", "x")]}, [], id="metadata-missing-key"),
        pytest.param({"metadata": [("status", "error")]}, ["r2"], id="metadata-builtin-field"),
    ],
)
async def test_filters(store: Store, filters: dict[str, object], expected: list[str]) -> None:
    await store.write(SAMPLE)
    assert await all_ids(store, LogFilters(**filters)) == expected  # type: ignore[arg-type]


async def test_since_and_until(store: Store) -> None:
    await store.write(SAMPLE)
    at = BASE + timedelta(minutes=3)
    assert await all_ids(store, LogFilters(since=at)) == ["r5", "r4", "r3"]  # inclusive
    assert await all_ids(store, LogFilters(until=at)) == ["r2", "r1"]  # exclusive
    assert await all_ids(store, LogFilters(since=BASE + timedelta(minutes=2), until=at)) == ["r2"]
    # An instant in another offset means the same moment.
    assert await all_ids(store, LogFilters(since=at.astimezone(timezone(timedelta(hours=-5))))) == ["r5", "r4", "r3"]


async def test_relative_since_from_parsed_filters(store: Store) -> None:
    now = datetime.now(UTC)
    await store.write([record("old", now - timedelta(hours=2)), record("new", now - timedelta(minutes=10))])
    assert await all_ids(store, build_filters(since="1h")) == ["new"]
    assert await all_ids(store, build_filters(since="3h")) == ["new", "old"]


async def test_pages_walk_every_record_once_even_with_equal_timestamps(store: Store) -> None:
    # 23 records, five of them at the same millisecond: the cursor must break ties exactly.
    batch = [record(f"a{i:02d}", i) for i in range(18)] + [record(f"tie{i}", 7) for i in range(5)]
    await store.write(batch)
    expected = await all_ids(store)
    assert len(expected) == 23
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await store.query(LogFilters(limit=4, cursor=cursor))
        seen += ids(page.records)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected
    assert len(set(seen)) == 23


async def test_pages_with_a_filter(store: Store) -> None:
    await store.write([record(f"m{i}", i, model="demo/echo" if i % 2 else "x/y") for i in range(10)])
    first = await store.query(LogFilters(model="demo/echo", limit=3))
    assert ids(first.records) == ["m9", "m7", "m5"]
    second = await store.query(LogFilters(model="demo/echo", limit=3, cursor=first.next_cursor))
    assert ids(second.records) == ["m3", "m1"]
    assert second.next_cursor is None


async def test_a_page_exactly_full_has_no_next_cursor(store: Store) -> None:
    await store.write([record(f"e{i}", i) for i in range(3)])
    page = await store.query(LogFilters(limit=3))
    assert len(page.records) == 3
    assert page.next_cursor is None


async def test_writes_are_idempotent_on_the_record_id(store: Store) -> None:
    await store.write(SAMPLE[:3])
    await store.write(SAMPLE[:3])  # a batch replayed from the spool
    changed = record("r2", 2, model="changed/model")
    await store.write([SAMPLE[3], changed, SAMPLE[4], SAMPLE[4]])  # overlapping, and a duplicate within
    assert await all_ids(store) == ["r5", "r4", "r3", "r2", "r1"]
    assert await all_ids(store, LogFilters(model="changed/model")) == []  # the first write stays


async def test_a_record_without_an_id_is_dropped_not_retried(store: Store) -> None:
    broken = record("x", 1)
    del broken["attributes"]["id"]
    await store.write([broken, record("ok", 2)])
    assert await all_ids(store) == ["ok"]


async def test_odd_values_are_stored(store: Store) -> None:
    odd = record("odd", 1, metadata={"note": "nul\x00char", "emoji": "🦉"})
    odd["timestamp"] = 1741190400123  # Unix milliseconds
    odd["attributes"]["metadata"]["latency"] = "not a number"
    await store.write([odd, record("unix-seconds", 0)])
    (got, _) = (await store.query(LogFilters())).records
    assert got["attributes"]["metadata"]["note"] == "nul\ufffdchar"
    assert got["attributes"]["metadata"]["emoji"] == "🦉"
    assert await all_ids(store, LogFilters(metadata=(("emoji", "🦉"),))) == ["odd"]


async def test_prune_deletes_what_is_older(store: Store) -> None:
    now = datetime.now(UTC)
    await store.write([record(f"old{i}", now - timedelta(days=40, minutes=i)) for i in range(7)]
                      + [record("recent", now - timedelta(days=1))])
    assert await store.prune(timedelta(days=30).total_seconds()) == 7
    assert await all_ids(store) == ["recent"]
    assert await store.prune(timedelta(days=30).total_seconds()) == 0


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


async def test_a_write_cut_short_by_a_timeout_leaves_the_store_usable(store: Store) -> None:
    # The pipeline bounds each write; a batch that timed out is spooled and replayed, maybe after
    # it did commit: the replay must neither fail nor duplicate.
    batch = [record(f"t{i:04d}", i) for i in range(1500)]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.001):
            await store.write(batch)
    await store.write(batch)
    await store.write([record("next", 5000)])
    first = await store.query(ALL)
    second = await store.query(LogFilters(limit=1000, cursor=first.next_cursor))
    assert (len(first.records), len(second.records), second.next_cursor) == (1000, 501, None)
