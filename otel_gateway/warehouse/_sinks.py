"""Where records go: every sink takes the same batches from the pipeline.

``StoreSink`` writes to a :class:`Store` and spools what the store refuses, replaying it when the
store is back; ``JsonlSink`` appends to a file; ``OtlpLogSink`` (``_otlp``) exports OTLP logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from ._spool import Spool
from ._store import Store, StoreUnavailable

logger = logging.getLogger("otel_gateway.warehouse")

Records = list[dict[str, Any]]


class Sink(Protocol):
    name: str

    async def write(self, records: Records) -> None:
        """Takes one batch. May raise: the pipeline logs it and goes on."""
        ...

    async def tick(self) -> None:
        """Housekeeping, called about every flush interval (replays, retention)."""
        ...

    async def aclose(self) -> None: ...


@dataclass
class Stats:
    """Counters of the request log, since start."""

    submitted: int = 0
    written: int = 0
    """Records the store took (replays included)."""
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0
    """Records lost: the queue was full, or the store was down and the spool failed too."""
    sink_errors: int = 0
    """Failed batch writes of the other sinks (JSONL, OTLP)."""


class RateLimitedLog:
    """Logs at most one line per ``every`` seconds, then says how many it held back."""

    def __init__(self, level: int, every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._level, self._every, self._clock = level, every, clock
        self._last = float("-inf")
        self._held = 0

    def __call__(self, message: str, *args: Any) -> None:
        now = self._clock()
        if now - self._last < self._every:
            self._held += 1
            return
        if self._held:
            message += f" ({self._held} similar message(s) held back)"
        self._last, self._held = now, 0
        logger.log(self._level, message, *args)


class JsonlSink:
    """Appends one JSON object a line."""

    name = "jsonl"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None

    async def write(self, records: Records) -> None:
        await asyncio.to_thread(self._append, records)

    def _append(self, records: Records) -> None:
        data = b"".join(orjson.dumps(r, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n" for r in records)
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across batches
        self._file.write(data)
        self._file.flush()

    async def tick(self) -> None:
        return None

    async def aclose(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            await asyncio.to_thread(file.close)


_TRANSIENT = (StoreUnavailable, TimeoutError, OSError)


class StoreSink:
    """Writes batches to the store; while it cannot be written, spools them (and every batch after
    them, keeping their order) and replays the spool with a growing pause between tries. Prunes
    records older than the retention period about every ``prune_every`` seconds."""

    name = "store"

    def __init__(
        self,
        store: Store,
        spool: Spool,
        stats: Stats,
        *,
        batch_size: int,
        write_timeout: float,
        retention_seconds: float | None,
        prune_every: float = 3600.0,
        retry_min: float = 1.0,
        retry_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.spool, self.stats = store, spool, stats
        self._batch_size, self._write_timeout = batch_size, write_timeout
        self._retention, self._prune_every = retention_seconds, prune_every
        self._retry_min, self._retry_max, self._delay = retry_min, retry_max, retry_min
        self._clock = clock
        self._next_replay = clock()
        self._next_prune = clock()
        self._warn = RateLimitedLog(logging.WARNING)
        self._error = RateLimitedLog(logging.ERROR)

    async def write(self, records: Records) -> None:
        if not self.spool.pending:
            try:
                await self._store(records)
                return
            except Exception as exc:
                self._warn("request log store unavailable, spooling records to %s: %s", self.spool.directory, exc)
                self._backoff()
        await self._to_spool(records)

    async def tick(self) -> None:
        now = self._clock()
        if self.spool.pending and now >= self._next_replay:
            await self.replay()
        if self._retention is not None and now >= self._next_prune:
            self._next_prune = now + self._prune_every
            try:
                pruned = await self.store.prune(self._retention)
            except Exception as exc:
                self._warn("pruning the request log store failed: %s", exc)
            else:
                if pruned:
                    logger.info("pruned %d request log record(s) past retention", pruned)

    async def replay(self) -> bool:
        """Stores what the spool holds, oldest first; false when the store failed again."""
        while (segment := await asyncio.to_thread(self.spool.claim)) is not None:
            try:
                batches = await asyncio.to_thread(lambda: list(self.spool.read(segment, self._batch_size)))
                for batch in batches:
                    await self._store(batch)
                    self.stats.replayed += len(batch)
            except _TRANSIENT as exc:
                self._warn("replaying spooled request log records failed, will retry: %s", exc)
                self._backoff()
                return False
            except Exception as exc:
                target = await asyncio.to_thread(self.spool.quarantine, segment)
                logger.error("the request log store refuses spooled records (%s); set aside in %s", exc, target)
                continue
            await asyncio.to_thread(self.spool.done, segment)
        self._delay = self._retry_min
        return True

    async def aclose(self) -> None:
        await self.store.aclose()

    async def _store(self, records: Records) -> None:
        async with asyncio.timeout(self._write_timeout):
            await self.store.write(records)
        self.stats.written += len(records)

    async def _to_spool(self, records: Records) -> None:
        try:
            await asyncio.to_thread(self.spool.append, records)
        except Exception as exc:
            self.stats.dropped += len(records)
            self._error("dropped %d request log record(s), %d in all: the store is unavailable and the spool "
                        "failed: %s", len(records), self.stats.dropped, exc)
        else:
            self.stats.spooled += len(records)

    def _backoff(self) -> None:
        self._next_replay = self._clock() + self._delay
        self._delay = min(self._delay * 2, self._retry_max)
