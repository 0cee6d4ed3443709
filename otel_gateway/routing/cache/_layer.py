"""The response cache layer: a ``send`` around the next ``send``, owning the ``cacheLookup`` span.

It sits below rate limiting, so a hit still counts as a request against the caller's limits, and
above load balancing, so a hit costs no upstream call, no target choice and no fallback: the key is
the model as the client asked for it (``gpt-4o``, not the target a rule picked), which is also the
only model a client can ask for again.

Per call that ``when`` matches: read ``x-gateway-cache``, compute the key, look it up (the span
covers this only; skipped under ``no-cache``), and answer from the entry on a hit: a
``Completion``, or a ``ReplayStream`` when the client asked for a stream. On a miss, call the next
layer and store its answer (unless ``no-store``): a completion at once, a stream when it has ended
complete, never a failed or abandoned one. ``x-gateway-cache-status`` and
``context.outcome.cache_status`` say ``HIT`` or ``MISS``. A backend that cannot be reached is a
miss that stores nothing (fail open), counted and logged at most once per ``WARN_EVERY_SECONDS``;
a store that fails is counted and logged the same way, and the answer goes out regardless.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from ..._throttle import ThrottledLog
from ...calls import ChatCall, ChunkStream, Completion, Outcome, Send
from ...chat import SPECS, CompletionAssembler
from ...config import CacheDocument
from ...errors import GatewayError
from .._match import matches
from ._backend import CacheBackend, CacheUnavailable
from ._key import NO_CACHE, NO_STORE, cache_key, directives
from ._replay import ReplayStream

logger = logging.getLogger("otel_gateway.cache")

SPAN_NAME = "cacheLookup"
STATUS_HEADER = "x-gateway-cache-status"
WARN_EVERY_SECONDS = 30.0
ENTRY_VERSION = 1


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    stores: int = 0
    too_large: int = 0
    """Answers not stored because they exceed ``max_entry_bytes``."""
    backend_failures: int = 0
    """Lookups and stores the backend could not be asked about."""


@dataclass(frozen=True, slots=True)
class Entry:
    """What is stored: the answer, and which provider gave it (for the hit's log record and pricing)."""

    completion: dict[str, Any]
    provider: str | None = None
    provider_type: str | None = None
    upstream_model: str | None = None
    model_id: str | None = None

    def encode(self) -> bytes:
        return orjson.dumps({
            "v": ENTRY_VERSION, "completion": self.completion, "provider": self.provider,
            "provider_type": self.provider_type, "upstream_model": self.upstream_model, "model_id": self.model_id,
        })

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        """``None`` for anything this version did not write."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or data.get("v") != ENTRY_VERSION or not isinstance(data.get("completion"), dict):
            return None
        return cls(data["completion"], data.get("provider"), data.get("provider_type"), data.get("upstream_model"),
                   data.get("model_id"))


class ResponseCache:
    """Answers repeated chat requests of a tenant from a ``gateway-cache-config`` backend."""

    def __init__(self, next: Send, config: CacheDocument, backend: CacheBackend, *, tracer: Tracer | None) -> None:
        self._next = next
        self._config = config
        self.backend = backend
        self._tracer = tracer
        self.stats = CacheStats()
        self._warn = ThrottledLog(logger, every=WARN_EVERY_SECONDS)
        self._failing = False

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        spec = SPECS[call.kind]
        if not spec.cacheable or not matches(self._config.when, call):
            return await self._next(call)
        flags = directives(call.context.headers)
        keyed = cache_key(call, self._config.key_prefix)
        if keyed is None:
            return await self._next(call)
        key, digest = keyed
        entry, reachable = await self._lookup(call, key, digest, flags)
        if entry is not None:
            _note_hit(call.context.outcome, entry)
            if call.stream:
                return ReplayStream(entry.completion, include_usage=call.include_usage)
            return Completion(entry.completion)
        try:
            result = await self._next(call)
        except GatewayError as exc:
            exc.headers.setdefault(STATUS_HEADER, "MISS")
            raise
        if NO_STORE in flags or not reachable:
            return result
        if isinstance(result, Completion):
            if spec.complete(result.data):
                await self._store(call, key, result.data)
            return result
        return StoringStream(result, functools.partial(self._store, call, key))

    # -- the lookup, inside the span ----------------------------------------------------------------

    async def _lookup(
        self, call: ChatCall, key: str, digest: str, flags: frozenset[str]
    ) -> tuple[Entry | None, bool]:
        """The entry found, if any, and whether the backend answered (if not, nothing is stored either)."""
        entry, reachable = None, True
        with self._span(digest, flags) as span:
            if NO_CACHE not in flags:
                entry, reachable = await self._get(key, span)
            status = "MISS" if entry is None else "HIT"
            call.context.outcome.cache_status = status
            call.context.response_headers[STATUS_HEADER] = status
            if span is not None and span.is_recording():
                span.set_attribute("cache.status", status)
        if entry is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return entry, reachable

    async def _get(self, key: str, span: Span | None) -> tuple[Entry | None, bool]:
        try:
            raw = await self.backend.get(key)
        except CacheUnavailable as exc:
            self._unavailable(exc, "looking up", span)
            return None, False
        self._answering()
        if raw is None:
            return None, True
        entry = Entry.decode(raw)
        if entry is None:
            logger.debug("ignoring a cache entry this version cannot read: %s", key)
        return entry, True

    @contextlib.contextmanager
    def _span(self, digest: str, flags: frozenset[str]) -> Iterator[Span | None]:
        if self._tracer is None:
            yield None
            return
        attributes: dict[str, Any] = {
            "cache.backend": "memory" if self._config.backend == "memory" else "redis",
            "cache.key": digest,
        }
        if flags:
            attributes["cache.directives"] = sorted(flags)
        span = self._tracer.start_span(SPAN_NAME, kind=SpanKind.INTERNAL, attributes=attributes)
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            yield span

    # -- storing ------------------------------------------------------------------------------

    async def _store(self, call: ChatCall, key: str, completion: dict[str, Any]) -> None:
        """Stores a whole answer (the caller checked it is whole); too large or unreachable: not stored."""
        outcome = call.context.outcome
        try:
            value = Entry(completion, outcome.provider, outcome.provider_type, outcome.upstream_model,
                          outcome.model_id).encode()
        except (TypeError, orjson.JSONEncodeError):
            return
        if len(value) > self._config.max_entry_bytes:
            self.stats.too_large += 1
            return
        try:
            await self.backend.set(key, value, self._config.ttl_seconds)
        except CacheUnavailable as exc:
            self._unavailable(exc, "storing", None)
            return
        self._answering()
        self.stats.stores += 1

    # -- a backend that does not answer -----------------------------------------------------------

    def _unavailable(self, exc: CacheUnavailable, doing: str, span: Span | None) -> None:
        self.stats.backend_failures += 1
        self._failing = True
        if span is not None and span.is_recording():
            span.set_attribute("error.type", "cache_backend_unavailable")
            span.set_status(Status(StatusCode.ERROR, f"cache backend unavailable: {exc}"))
        self._warn("cache backend unavailable while %s (%s); serving without the cache", doing, exc)

    def _answering(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("cache backend %r is answering again", self.backend)


def _chat_complete(completion: Mapping[str, Any]) -> bool:
    return SPECS["chat"].complete(completion)


def _note_hit(outcome: Outcome, entry: Entry) -> None:
    """The provider fields of the attempt that once gave the answer; no attempt ran for this one."""
    outcome.provider = entry.provider
    outcome.provider_type = entry.provider_type
    outcome.upstream_model = entry.upstream_model
    outcome.model_id = entry.model_id


class StoringStream:
    """Passes every chunk on unchanged; when the stream has ended complete, calls ``store`` once with
    the completion it adds up to. A stream that fails or is closed before its end stores nothing.

    The completion is the inner stream's ``assembler`` result when it has one (``UpstreamStream``
    does: it sees the usage chunk even when the client did not ask for it), else this stream's own
    over the chunks that passed. Other attributes of the inner stream are reachable through this one.
    """

    def __init__(self, stream: ChunkStream, store: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._stream = stream
        self._chunks: AsyncIterator[dict[str, Any]] = stream.__aiter__()
        self._store: Callable[[dict[str, Any]], Awaitable[None]] | None = store
        inner = getattr(stream, "assembler", None)
        self._own: CompletionAssembler | None = None if isinstance(inner, CompletionAssembler) else (
            CompletionAssembler())

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            await self._ended()
            raise
        except BaseException:
            self._store = None
            raise
        if self._own is not None:
            self._own.add(chunk)
        return chunk

    async def aclose(self) -> None:
        self._store = None
        await self._stream.aclose()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._stream, name)

    async def _ended(self) -> None:
        store, self._store = self._store, None
        assembler = self._own or self._stream.assembler  # type: ignore[attr-defined]
        if store is not None and assembler.complete and _chat_complete(assembler.result()):
            await store(assembler.result())
