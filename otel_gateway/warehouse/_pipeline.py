"""The request log pipeline: finished exchanges in, records out to every sink, never in the way.

``submit`` appends a reference to a bounded queue and returns; a worker task takes a batch when
it is full or every flush interval, builds its records in a thread (redaction, token counting,
pricing, scrubbing), and hands the batch to each sink. ``aclose`` (the app's shutdown, SIGTERM)
writes what is queued before it returns.

Requests in flight are known too (``begin``, at their start): ``aclose`` waits a moment for them
to end and records those still going as ``cancelled``, and ``write_now`` (a second signal, the
process about to exit at once) writes their records and the queued ones within a second, to the
store or else to the spool.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider

from .._urls import redact_url
from ..config import GatewayConfig
from ..redaction import Redactor
from ._exchange import Exchange
from ._otlp import OtlpLogSink
from ._record import RecordBuilder
from ._sinks import JsonlSink, RateLimitedLog, Records, Sink, Stats, StoreSink
from ._spool import Spool
from ._store import Store, StoreUnavailable
from ._stores import store_for

logger = logging.getLogger("otel_gateway.warehouse")

SETTLE_SECONDS = 2.0
"""How long ``aclose`` waits for the requests still in flight (the server has cancelled them) to end."""
WRITE_NOW_SECONDS = 1.0
"""The bound of ``write_now``: what the store has not taken by then goes to the spool."""


class RequestLogPipeline:
    """Implements :class:`RequestLog`."""

    def __init__(
        self,
        builder: RecordBuilder,
        sinks: Sequence[Sink],
        *,
        queue_size: int = 10_000,
        batch_size: int = 200,
        flush_interval: float = 1.0,
        stats: Stats | None = None,
    ) -> None:
        self._builder = builder
        self.sinks = tuple(sinks)
        self.stats = stats or Stats()
        self._queue: collections.deque[Exchange] = collections.deque()
        self._in_flight: dict[int, Exchange] = {}
        """Exchanges begun and not yet submitted, by ``id``."""
        self._taken: dict[int, Exchange] = {}
        """In-flight exchanges whose records shutdown wrote: their late ``submit`` is ignored."""
        self._idle: asyncio.Event | None = None
        self._delivering: Records = []
        """The batch the worker is handing to the sinks."""
        self._queue_size, self._batch_size, self._interval = queue_size, batch_size, flush_interval
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._lock = asyncio.Lock()
        """One delivery or housekeeping step at a time: the spool is not for two writers."""
        self._dropped_log = RateLimitedLog(logging.ERROR)
        self._sink_log = RateLimitedLog(logging.WARNING)

    @classmethod
    def from_config(
        cls,
        config: GatewayConfig,
        *,
        store: Store | None = None,
        logger_provider: LoggerProvider | None = None,
        service_name: str = "otel-gateway",
        redactor: Redactor | None = None,
    ) -> RequestLogPipeline:
        """Sinks as the logging document says: its store (or ``store`` given here), its JSONL file,
        and OTLP logs to ``logger_provider`` when given (the caller owns it; it is flushed at close).
        ``redactor``: the configuration's one (the runtime's; made from ``config`` when not given)."""
        options = config.logging
        stats = Stats()
        sinks: list[Sink] = []
        if store is None:
            store = _store_or_none(options.store)
        if store is not None:
            sinks.append(StoreSink(
                store, Spool(options.spool_dir), stats, batch_size=options.batch_size,
                write_timeout=options.write_timeout_ms / 1000,
                retention_seconds=options.retention_days * 86_400 if options.retention_days else None,
                retry_min=min(1.0, options.flush_interval_ms / 1000),
            ))
        if options.jsonl:
            sinks.append(JsonlSink(options.jsonl))
        if logger_provider is not None:
            sinks.append(OtlpLogSink(logger_provider))
        builder = RecordBuilder(config, service_name=service_name, redactor=redactor)
        return cls(builder, sinks, queue_size=options.queue_size, batch_size=options.batch_size,
                   flush_interval=options.flush_interval_ms / 1000, stats=stats)

    @property
    def store(self) -> Store | None:
        return next((sink.store for sink in self.sinks if isinstance(sink, StoreSink)), None)

    @property
    def queued(self) -> int:
        """Finished requests waiting in memory for their records to be built and written."""
        return len(self._queue)

    async def health(self) -> dict[str, Any]:
        """What ``/readyz`` reports: the counters since start, what waits in memory and in the spool,
        and the kind of store (never its URL). Read only when asked; the request path pays nothing."""
        sink = next((s for s in self.sinks if isinstance(s, StoreSink)), None)
        spool_bytes: int | None = 0
        if sink is not None:
            try:
                spool_bytes = await asyncio.to_thread(sink.spool.waiting_bytes)
            except OSError:
                spool_bytes = None  # the spool directory cannot be listed: unknown, not zero
        return {
            "store": store_kind(self.store),
            **dataclasses.asdict(self.stats),
            "queued": len(self._queue),
            "spool_pending": sink is not None and sink.spool.pending,
            "spool_bytes": spool_bytes,
        }

    def reconfigure(self, config: GatewayConfig, redactor: Redactor | None = None) -> None:
        """A reloaded config's redaction (``redactor``, its one: made from ``config`` when not given),
        pricing and environment apply to the records built from now on; its store, JSONL file and
        queue settings take effect at the next start."""
        self._builder = RecordBuilder(config, service_name=self._builder.resource["service.name"], redactor=redactor)

    # -- the request path ----------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests begun whose exchange is not submitted yet."""
        return len(self._in_flight)

    def begin(self, exchange: Exchange) -> None:
        """Notes a request starting: until it is submitted, shutdown writes its record (``cancelled``)."""
        self._in_flight[id(exchange)] = exchange

    def submit(self, exchange: Exchange) -> None:
        """Queues the finished exchange; never blocks, never raises."""
        try:
            key = id(exchange)
            if self._in_flight.pop(key, None) is None and self._taken.get(key) is exchange:
                return  # shutdown recorded it as cancelled already
            if self._idle is not None and not self._in_flight:
                self._idle.set()
            exchange.finish()
            self.stats.submitted += 1
            if not self.sinks:  # ``store: none`` and no other sink: no record to build
                return
            if self._closed or len(self._queue) >= self._queue_size:
                self._drop(1, "the request log is closed" if self._closed else "the request log queue is full")
                return
            self._queue.append(exchange)
            if len(self._queue) >= self._batch_size and self._wakeup is not None:
                self._wakeup.set()
        except Exception:  # never let logging fail a request
            logger.exception("queueing a request log record failed")

    # -- the worker ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None and not self._closed:
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="otel-gateway-request-log")

    async def flush(self) -> None:
        """Writes every queued record now."""
        await self._drain()

    async def aclose(self, settle: float = SETTLE_SECONDS) -> None:
        """Waits up to ``settle`` seconds for the requests in flight to end and records those still
        going as ``cancelled``; writes what is queued, then closes the sinks. Idempotent."""
        if self._closed:
            return
        if self._in_flight:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settle):
                    await self._idle.wait()
        self._closed = True
        self._take_over_in_flight()
        if self._task is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await self._task
        await self._drain()
        async with self._lock:
            for sink in self.sinks:
                if isinstance(sink, StoreSink) and sink.spool.pending:
                    await self._guard(sink.replay())
                await self._guard(sink.aclose())

    async def write_now(self, timeout: float = WRITE_NOW_SECONDS) -> int:
        """For a process about to exit at once: records every request in flight as ``cancelled``,
        and writes their records and the queued ones to every sink within ``timeout`` seconds; what
        the store has not taken by then (or a batch the worker is still delivering) is written to
        the spool as a segment of its own. Closes the request log; returns how many records."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._closed = True
        self._take_over_in_flight()
        batch = list(self._queue)
        self._queue.clear()
        records = self._build(batch)  # on the loop: there is nothing else left to do
        try:
            async with asyncio.timeout_at(deadline - timeout / 2):
                await self._lock.acquire()
        except TimeoutError:  # the worker is stuck on a sink: spool its batch too
            records = records + self._delivering
            self._spool_now(records, self.sinks)
            return len(records)
        try:
            unwritten = []
            for sink in self.sinks:
                try:
                    if isinstance(sink, StoreSink) and sink.spool.pending:
                        raise StoreUnavailable("records wait in the spool")
                    async with asyncio.timeout_at(deadline):
                        await (sink.store.write(records) if isinstance(sink, StoreSink) else sink.write(records))
                except Exception as exc:
                    logger.warning("the %s request log sink did not take %d record(s) at exit: %r",
                                   sink.name, len(records), exc)
                    unwritten.append(sink)
                else:
                    if isinstance(sink, StoreSink):
                        self.stats.written += len(records)
            self._spool_now(records, unwritten)
        finally:
            self._lock.release()
        return len(records)

    def _spool_now(self, records: Records, sinks: Sequence[Sink]) -> None:
        for sink in sinks:
            if isinstance(sink, StoreSink) and records:
                try:
                    path = sink.spool.write_segment(records)
                except Exception:
                    self._drop(len(records), "the store did not take them at exit and the spool failed")
                    logger.exception("spooling %d request log record(s) at exit failed", len(records))
                else:
                    self.stats.spooled += len(records)
                    logger.warning("spooled %d request log record(s) at exit to %s", len(records), path)

    def _take_over_in_flight(self) -> None:
        """Queues the record of each request still in flight, as ``cancelled``."""
        for key, exchange in self._in_flight.items():
            exchange.status = "cancelled"
            exchange.finish()
            self.stats.submitted += 1
            self._taken[key] = exchange
            self._queue.append(exchange)
        self._in_flight.clear()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._drain()
                if self._closed:
                    return
                async with self._lock:
                    for sink in self.sinks:
                        await self._guard(sink.tick())
            except Exception:
                logger.exception("the request log worker failed; it goes on")

    async def _drain(self) -> None:
        async with self._lock:
            while self._queue:
                count = min(self._batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
                records = await asyncio.to_thread(self._build, batch)
                if records:
                    self._delivering = records
                    try:
                        await self._deliver(records)
                    finally:
                        self._delivering = []

    def _build(self, batch: list[Exchange]) -> Records:
        builder = self._builder
        records = []
        for exchange in batch:
            try:
                records.append(builder.build(exchange))
            except Exception:
                logger.exception("building the log record of request %s failed", exchange.request_id)
                self._drop(1, "its record could not be built")
        return records

    async def _deliver(self, records: Records) -> None:
        for sink in self.sinks:
            try:
                await sink.write(records)
            except Exception as exc:
                self.stats.sink_errors += 1
                self._sink_log("the %s request log sink failed to take %d record(s): %s", sink.name, len(records), exc)

    async def _guard(self, step: Any) -> None:
        try:
            await step
        except Exception:
            logger.exception("request log housekeeping failed")

    def _drop(self, count: int, why: str) -> None:
        self.stats.dropped += count
        self._dropped_log("dropped %d request log record(s), %d in all: %s", count, self.stats.dropped, why)


def store_kind(store: Store | None) -> str:
    """``sqlite``, ``postgresql``, ``memory``, ``none`` (no store), or ``other`` for a store given
    in code without a ``kind``: never the store's URL."""
    return "none" if store is None else str(getattr(store, "kind", "other"))


def _store_or_none(url: str) -> Store | None:
    try:
        return store_for(url)
    except Exception as exc:  # e.g. a missing database driver: log, serve on without a store
        logger.error("the request log store %s cannot be used, records are not stored: %s", redact_url(url), exc)
        return None
