"""The request log at shutdown: requests still in flight (``begin`` without ``submit``) are recorded
as cancelled by ``aclose`` once it has waited for them, and by ``write_now`` (a second signal) at
once, to the store or, when it does not take them in time, to a spool segment of their own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from test_pipeline import FlakyStore, exchange, make, spooled_ids


def statuses(store: FlakyStore) -> dict[str, str]:
    return {r["attributes"]["id"]: r["attributes"]["metadata"]["status"] for r in store.records}


async def test_aclose_waits_for_requests_in_flight_then_records_the_rest_cancelled(tmp_path: Path) -> None:
    store = FlakyStore()
    pipeline, _ = make(store, tmp_path / "spool")
    await pipeline.start()
    finishing, stuck = exchange(1), exchange(2)
    pipeline.begin(finishing)
    pipeline.begin(stuck)
    closing = asyncio.create_task(pipeline.aclose(settle=0.3))
    await asyncio.sleep(0)
    assert not closing.done()  # it waits for the requests in flight
    pipeline.submit(finishing)  # ends within the wait, as it went
    await closing
    assert statuses(store) == {"r1": "success", "r2": "cancelled"}
    pipeline.submit(stuck)  # ends after all: its record is written already
    assert pipeline.stats.dropped == 0 and pipeline.stats.submitted == 2 and pipeline.in_flight == 0


async def test_write_now_writes_in_flight_and_queued_records_to_the_store(tmp_path: Path) -> None:
    store = FlakyStore()
    pipeline, _ = make(store, tmp_path / "spool")
    await pipeline.start()
    pipeline.submit(exchange(1))
    pipeline.begin(exchange(2))
    assert await pipeline.write_now(timeout=1.0) == 2
    assert statuses(store) == {"r1": "success", "r2": "cancelled"}
    assert spooled_ids(tmp_path / "spool") == []


class HangingStore(FlakyStore):
    def __init__(self) -> None:
        super().__init__()
        self.writing = asyncio.Event()

    async def write(self, records: list[dict[str, Any]]) -> None:
        self.writing.set()
        await asyncio.Event().wait()


async def test_write_now_spools_what_the_store_does_not_take_in_time(tmp_path: Path) -> None:
    store = HangingStore()
    pipeline, _ = make(store, tmp_path / "spool", batch_size=1)
    await pipeline.start()
    pipeline.submit(exchange(1))
    await store.writing.wait()  # the worker took it and hangs on the store
    pipeline.begin(exchange(2))
    pipeline.begin(exchange(3))
    async with asyncio.timeout(2):
        assert await pipeline.write_now(timeout=0.2) == 3
    assert sorted(spooled_ids(tmp_path / "spool")) == ["r1", "r2", "r3"]
    assert [p.name.split("-")[0] for p in (tmp_path / "spool").iterdir()] == ["segment"]
    assert pipeline.stats.spooled == 3
