"""The request log pipeline: batching, a bounded queue, a store that fails (spool, replay, no loss,
no duplicates), a spool that fails too (dropped and counted), shutdown flush, retention."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from otel_gateway.calls import Outcome
from otel_gateway.config import load_config_text
from otel_gateway.telemetry import logger_provider_from_env, resource_from, service_name
from otel_gateway.warehouse import (
    Exchange,
    JsonlSink,
    LogFilters,
    MemoryStore,
    OtlpLogSink,
    RecordBuilder,
    RequestLogPipeline,
    Spool,
    Stats,
    StoreSink,
    StoreUnavailable,
)
from otel_gateway.warehouse._pipeline import store_kind
from otel_gateway.warehouse._postgres import PostgresStore
from otel_gateway.warehouse._sqlite import SQLiteStore

CONFIG = load_config_text("type: gateway-providers-config\nproviders:\n  - {name: demo, type: mock, models: [echo]}\n",
                          environ={})
BUILDER = RecordBuilder(CONFIG)


class FlakyStore(MemoryStore):
    """A memory store that can be down, or go down after a number of good writes."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.good_writes_left: int | None = None
        self.attempts = 0
        self.pruned: list[float] = []

    async def write(self, records: list[dict[str, Any]]) -> None:
        self.attempts += 1
        if self.good_writes_left is not None:
            if self.good_writes_left == 0:
                self.down = True
            self.good_writes_left -= 1
        if self.down:
            raise StoreUnavailable("the database is down")
        await super().write(records)

    async def prune(self, older_than_seconds: float) -> int:
        self.pruned.append(older_than_seconds)
        return await super().prune(older_than_seconds)

    @property
    def ids(self) -> list[str]:
        return [r["attributes"]["id"] for r in self.records]


def exchange(i: int) -> Exchange:
    return Exchange(request_id=f"r{i}", endpoint="/v1/chat/completions", model="demo/echo",
                    outcome=Outcome(provider="demo", provider_type="otel_gateway.mock", upstream_model="echo"))


def make(store: FlakyStore, spool_dir: Path, *, batch_size: int = 100, flush_interval: float = 60.0,
         queue_size: int = 1000, extra: list[Any] | None = None) -> tuple[RequestLogPipeline, StoreSink]:
    stats = Stats()
    sink = StoreSink(store, Spool(spool_dir), stats, batch_size=batch_size, write_timeout=1.0, retention_seconds=None,
                     retry_min=0.0, retry_max=0.0)
    pipeline = RequestLogPipeline(BUILDER, [sink, *(extra or [])], queue_size=queue_size, batch_size=batch_size,
                                  flush_interval=flush_interval, stats=stats)
    return pipeline, sink


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def spooled_ids(directory: Path) -> list[str]:
    return [orjson.loads(line)["attributes"]["id"] for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_bytes().splitlines()]


async def test_a_full_batch_wakes_the_worker_before_the_interval(tmp_path: Path) -> None:
    store = FlakyStore()
    pipeline, _ = make(store, tmp_path / "spool", batch_size=3, flush_interval=60.0)
    await pipeline.start()
    pipeline.submit(exchange(0))
    pipeline.submit(exchange(1))
    await asyncio.sleep(0.05)
    assert store.records == []  # not full, and the interval is a minute away
    for i in range(2, 7):
        pipeline.submit(exchange(i))
    await until(lambda: len(store.records) == 7)
    assert store.ids == [f"r{i}" for i in range(7)]
    assert store.writes == 3  # batches of 3, 3 and 1
    await pipeline.aclose()
    assert pipeline.stats == Stats(submitted=7, written=7)


async def test_records_are_written_every_flush_interval(tmp_path: Path) -> None:
    store = FlakyStore()
    pipeline, _ = make(store, tmp_path / "spool", flush_interval=0.02)
    await pipeline.start()
    pipeline.submit(exchange(1))
    await until(lambda: store.ids == ["r1"])
    pipeline.submit(exchange(2))
    await until(lambda: store.ids == ["r1", "r2"])
    assert store.writes == 2
    await pipeline.aclose()


async def test_submit_never_blocks_and_a_full_queue_drops_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    pipeline, _ = make(store, tmp_path / "spool", queue_size=2)
    for i in range(5):
        pipeline.submit(exchange(i))
    pipeline.submit(None)  # type: ignore[arg-type]  # even a broken call does not raise
    assert pipeline.stats.dropped == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "dropped" in r.getMessage()]
    assert errors == ["dropped 1 request log record(s), 1 in all: the request log queue is full"]
    await pipeline.aclose()
    assert store.ids == ["r0", "r1"]


async def test_a_failing_store_spools_then_replays_without_loss_or_duplicates(tmp_path: Path) -> None:
    store = FlakyStore()
    spool_dir = tmp_path / "spool"
    pipeline, sink = make(store, spool_dir, batch_size=2)
    store.down = True
    for i in range(5):
        pipeline.submit(exchange(i))
    await pipeline.flush()
    assert store.attempts == 1  # once down, later batches go straight to the spool, in order
    assert spooled_ids(spool_dir) == ["r0", "r1", "r2", "r3", "r4"]
    assert [p.name.split("-")[0] for p in spool_dir.iterdir()] == ["pending"]
    for i in range(5, 8):
        pipeline.submit(exchange(i))
    await pipeline.flush()
    assert (store.attempts, pipeline.stats.spooled) == (1, 8)

    await sink.tick()  # still down: the replay fails, nothing is lost
    assert store.records == [] and len(spooled_ids(spool_dir)) == 8

    store.down = False
    await sink.tick()
    assert store.ids == [f"r{i}" for i in range(8)]
    assert list(spool_dir.iterdir()) == []
    assert not sink.spool.pending
    pipeline.submit(exchange(8))
    await pipeline.flush()
    assert store.ids == [f"r{i}" for i in range(9)]
    assert pipeline.stats == Stats(submitted=9, written=9, spooled=8, replayed=8)
    await pipeline.aclose()


async def test_a_replay_cut_halfway_is_resent_and_the_store_keeps_one_of_each(tmp_path: Path) -> None:
    store = FlakyStore()
    spool_dir = tmp_path / "spool"
    pipeline, sink = make(store, spool_dir, batch_size=2)
    store.down = True
    for i in range(5):
        pipeline.submit(exchange(i))
    await pipeline.flush()
    store.down, store.good_writes_left = False, 1
    assert await sink.replay() is False
    assert store.ids == ["r0", "r1"]
    assert [p.name.split("-")[0] for p in spool_dir.iterdir()] == ["replaying"]

    store.down, store.good_writes_left = False, None
    assert await sink.replay() is True
    assert store.ids == ["r0", "r1", "r2", "r3", "r4"]
    assert list(spool_dir.iterdir()) == []
    await pipeline.aclose()


async def test_when_the_spool_fails_too_records_are_dropped_counted_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    store = FlakyStore()
    store.down = True
    pipeline, _ = make(store, tmp_path / "a-file" / "spool")
    for i in range(3):
        pipeline.submit(exchange(i))
    await pipeline.flush()
    for i in range(3, 5):
        pipeline.submit(exchange(i))
    await pipeline.flush()
    assert (pipeline.stats.dropped, pipeline.stats.spooled, store.records) == (5, 0, [])
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # rate-limited: the second failure is held back
    assert errors[0].startswith("dropped 3 request log record(s), 3 in all: the store is unavailable and the spool "
                                "failed: ")
    await pipeline.aclose()


async def test_shutdown_writes_what_is_queued(tmp_path: Path) -> None:
    store = FlakyStore()
    pipeline, _ = make(store, tmp_path / "spool", flush_interval=60.0)
    await pipeline.start()
    for i in range(4):
        pipeline.submit(exchange(i))
    await asyncio.sleep(0.05)
    assert store.records == []
    await pipeline.aclose()
    assert store.ids == ["r0", "r1", "r2", "r3"]
    pipeline.submit(exchange(9))  # after the end: counted, not raised
    assert pipeline.stats.dropped == 1
    await pipeline.aclose()


async def test_shutdown_with_the_store_down_spools_and_the_next_start_replays(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    down = FlakyStore()
    down.down = True
    pipeline, _ = make(down, spool_dir)
    await pipeline.start()
    for i in range(3):
        pipeline.submit(exchange(i))
    await pipeline.aclose()
    assert spooled_ids(spool_dir) == ["r0", "r1", "r2"]

    store = FlakyStore()
    restarted, _ = make(store, spool_dir, flush_interval=0.01)
    await restarted.start()
    restarted.submit(exchange(3))
    await until(lambda: len(store.records) == 4)
    assert store.ids == ["r0", "r1", "r2", "r3"]
    assert list(spool_dir.iterdir()) == []
    await restarted.aclose()


async def test_the_spool_survives_a_real_sqlite_outage(tmp_path: Path) -> None:
    """SQLite: a database path that cannot be opened, then can."""
    blocker = tmp_path / "db"
    blocker.write_text("a file where the database's directory should be")
    store = SQLiteStore(blocker / "logs.db")
    stats = Stats()
    sink = StoreSink(store, Spool(tmp_path / "spool"), stats, batch_size=10, write_timeout=5.0,
                     retention_seconds=None, retry_min=0.0)
    pipeline = RequestLogPipeline(BUILDER, [sink], stats=stats)
    for i in range(3):
        pipeline.submit(exchange(i))
    await pipeline.flush()
    assert stats.spooled == 3
    blocker.unlink()
    assert await sink.replay() is True
    pipeline.submit(exchange(3))
    await pipeline.flush()
    page = await store.query(LogFilters(limit=10))
    assert sorted(r["attributes"]["id"] for r in page.records) == ["r0", "r1", "r2", "r3"]
    await pipeline.aclose()


def test_files_of_a_dead_process_are_adopted(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (spool_dir / f"pending-{dead}-00000000000000000001-0.jsonl").write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": ')
    (spool_dir / f"replaying-{dead}-00000000000000000002-0.jsonl").write_bytes(b'{"a": 3}\n')
    (spool_dir / f"pending-{os.getppid()}-00000000000000000003-0.jsonl").write_bytes(b'{"a": 4}\n')  # alive
    spool = Spool(spool_dir)
    assert spool.pending
    batches = []
    while (segment := spool.claim()) is not None:
        batches += list(spool.read(segment, 10))
        spool.done(segment)
    assert batches == [[{"a": 1}, {"a": 2}], [{"a": 3}]]  # the torn last line is skipped
    assert not spool.pending
    assert [p.name for p in spool_dir.iterdir()] == [f"pending-{os.getppid()}-00000000000000000003-0.jsonl"]


async def test_retention_prunes_about_every_interval(tmp_path: Path) -> None:
    now = [1000.0]
    store = FlakyStore()
    await store.write([{"timestamp": "2020-01-01T00:00:00.000Z", "attributes": {"id": "old", "metadata": {}}}])
    sink = StoreSink(store, Spool(tmp_path), Stats(), batch_size=10, write_timeout=1.0, retention_seconds=86_400.0,
                     prune_every=3600.0, clock=lambda: now[0])
    await sink.tick()
    assert (store.pruned, store.records) == ([86_400.0], [])
    now[0] += 3599
    await sink.tick()
    assert store.pruned == [86_400.0]
    now[0] += 1
    await sink.tick()
    assert store.pruned == [86_400.0, 86_400.0]


async def test_a_failing_sink_does_not_keep_records_from_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")
    store = FlakyStore()
    good = JsonlSink(tmp_path / "out" / "log.jsonl")
    pipeline, _ = make(store, tmp_path / "spool", extra=[JsonlSink(tmp_path / "a-file" / "x.jsonl"), good])
    pipeline.submit(exchange(1))
    await pipeline.aclose()
    assert store.ids == ["r1"]
    assert [orjson.loads(line)["attributes"]["id"] for line in good.path.read_bytes().splitlines()] == ["r1"]
    assert pipeline.stats.sink_errors == 1
    assert any("the jsonl request log sink failed to take 1 record(s)" in r.getMessage() for r in caplog.records)


async def test_a_record_that_cannot_be_built_is_dropped_and_counted(tmp_path: Path) -> None:
    store = FlakyStore()
    pipeline, _ = make(store, tmp_path / "spool")
    broken = exchange(2)
    broken.started_at = float("nan")
    for item in (exchange(1), broken, exchange(3)):
        pipeline.submit(item)
    await pipeline.aclose()
    assert store.ids == ["r1", "r3"]
    assert pipeline.stats.dropped == 1


async def test_from_config(tmp_path: Path) -> None:
    config = load_config_text(f"""\
type: gateway-providers-config
providers:
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-logging-config
store: memory
jsonl: {tmp_path}/records.jsonl
spool_dir: {tmp_path}/spool
queue_size: 5
batch_size: 2
flush_interval_ms: 250
""", environ={})
    pipeline = RequestLogPipeline.from_config(config)
    assert [type(s) for s in pipeline.sinks] == [StoreSink, JsonlSink]
    assert isinstance(pipeline.store, MemoryStore)
    assert (pipeline._queue_size, pipeline._batch_size, pipeline._interval) == (5, 2, 0.25)
    pipeline.submit(exchange(1))
    await pipeline.aclose()
    assert [r["attributes"]["id"] for r in pipeline.store.records] == ["r1"]
    assert orjson.loads((tmp_path / "records.jsonl").read_bytes()) == pipeline.store.records[0]

    none = RequestLogPipeline.from_config(load_config_text(
        "type: gateway-providers-config\nproviders: [{name: d, type: mock, models: [e]}]\n---\n"
        "type: gateway-logging-config\nstore: none\n", environ={}))
    assert (none.sinks, none.store) == ((), None)
    given = MemoryStore()
    assert RequestLogPipeline.from_config(CONFIG, store=given).store is given


async def test_otlp_logs_to_the_logger_provider_made_from_the_given_environ(tmp_path: Path) -> None:
    config = load_config_text("type: gateway-providers-config\nproviders: [{name: d, type: mock, models: [e]}]\n"
                              "---\ntype: gateway-logging-config\nstore: none\nenvironment: qa\n", environ={})
    env = {"ENABLE_OTEL_LOGS": "true", "OTEL_SERVICE_NAME": "gw-env"}
    resource = resource_from(env, environment=config.logging.environment)
    provider = logger_provider_from_env(env, resource)
    assert provider is not None and logger_provider_from_env({}, resource) is None
    pipeline = RequestLogPipeline.from_config(config, logger_provider=provider, service_name=service_name(env))
    (sink,) = pipeline.sinks
    assert isinstance(sink, OtlpLogSink)
    assert {k: sink.provider.resource.attributes[k] for k in ("service.name", "deployment.environment")} == {
        "service.name": "gw-env", "deployment.environment": "qa"}
    assert pipeline._builder.resource["service.name"] == "gw-env"  # records and logs name one service
    await pipeline.aclose()
    provider.shutdown()


def test_reconfigure_applies_to_records_built_after() -> None:
    pipeline = RequestLogPipeline(BUILDER, [])
    assert pipeline._builder.resource["deployment.environment"] == "production"
    pipeline.reconfigure(load_config_text(
        "type: gateway-providers-config\nproviders: [{name: d, type: mock, models: [e]}]\n---\n"
        "type: gateway-logging-config\nenvironment: canary\n", environ={}))
    assert pipeline._builder.resource == {"service.name": "otel-gateway", "service.version": "0.1.0",
                                          "deployment.environment": "canary"}


def test_a_pending_file_is_sealed_after_its_share_of_records(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_records=3)
    for i in range(4):
        spool.append([{"n": 2 * i}, {"n": 2 * i + 1}])
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["segment", "segment"]
    claimed = []
    while (segment := spool.claim()) is not None:
        claimed.append([r["n"] for batch in spool.read(segment, 100) for r in batch])
        spool.done(segment)
    assert claimed == [[0, 1, 2, 3], [4, 5, 6, 7]]


class PickyStore(FlakyStore):
    """Refuses, for good, any batch holding the record ``poison``."""

    async def write(self, records: list[dict[str, Any]]) -> None:
        if any(r["attributes"]["id"] == "poison" for r in records):
            raise ValueError("cannot store this record")
        await super().write(records)


async def test_a_segment_the_store_refuses_for_good_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PickyStore()
    spool_dir = tmp_path / "spool"
    pipeline, sink = make(store, spool_dir, batch_size=10)
    poison = exchange(0)
    poison.request_id = "poison"
    pipeline.submit(poison)
    await pipeline.flush()  # refused: spooled like any failure
    assert sink.spool.pending
    pipeline.submit(exchange(1))
    await pipeline.flush()  # behind the spooled one, in order
    assert await sink.replay() is True
    (failed,) = spool_dir.iterdir()
    assert failed.suffix == ".failed" and spooled_ids(spool_dir) == []
    assert [orjson.loads(line)["attributes"]["id"] for line in failed.read_bytes().splitlines()] == ["poison", "r1"]
    assert any(r.levelno == logging.ERROR and "refuses spooled records" in r.getMessage() for r in caplog.records)
    pipeline.submit(exchange(2))
    await pipeline.flush()
    assert store.ids == ["r2"]
    await pipeline.aclose()


async def test_without_sinks_no_record_is_built() -> None:
    class CountingBuilder(RecordBuilder):
        built = 0

        def build(self, exchange: Exchange) -> dict[str, Any]:
            CountingBuilder.built += 1
            return super().build(exchange)

    pipeline = RequestLogPipeline(CountingBuilder(CONFIG), [], batch_size=1)
    await pipeline.start()
    for i in range(5):
        pipeline.submit(exchange(i))
    await pipeline.flush()
    await pipeline.aclose()
    assert (CountingBuilder.built, pipeline.stats.submitted, pipeline.stats.dropped) == (0, 5, 0)


async def test_health_reports_what_waits_in_memory_and_in_the_spool(tmp_path: Path) -> None:
    store = FlakyStore()
    spool_dir = tmp_path / "spool"
    pipeline, sink = make(store, spool_dir, batch_size=10)
    zero = {"store": "memory", "submitted": 0, "written": 0, "spooled": 0, "replayed": 0, "dropped": 0,
            "sink_errors": 0, "queued": 0, "spool_pending": False, "spool_bytes": 0}
    assert await pipeline.health() == zero
    for i in range(3):
        pipeline.submit(exchange(i))
    assert (pipeline.queued, await pipeline.health()) == (3, {**zero, "submitted": 3, "queued": 3})
    store.down = True
    await pipeline.flush()
    (quarantined := spool_dir / "segment-1-0-0.failed").write_bytes(b"set aside, not waiting\n")
    size = sum(p.stat().st_size for p in spool_dir.glob("*.jsonl"))
    assert size > 0
    assert await pipeline.health() == {**zero, "submitted": 3, "spooled": 3, "spool_pending": True,
                                       "spool_bytes": size}
    store.down = False
    assert await sink.replay() is True
    assert await pipeline.health() == {**zero, "submitted": 3, "written": 3, "spooled": 3, "replayed": 3}
    assert quarantined.exists()
    await pipeline.aclose()


def test_store_kinds_name_no_url(tmp_path: Path) -> None:
    assert [store_kind(s) for s in (SQLiteStore(tmp_path / "x.db"), PostgresStore("postgresql://u:p@h/db"),
                                    MemoryStore(), FlakyStore(), None)] == [
        "sqlite", "postgresql", "memory", "memory", "none"]
