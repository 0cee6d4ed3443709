"""Where the counters live. Every backend takes all of a call's buckets at once and either
consumes from all of them or from none (``consume``), and can correct what a window was charged
afterwards (``adjust``: settling a token reservation to real usage, or refunding it). Both
backends implement the same arithmetic (``_window``): sliding windows in 60 slots.

``memory`` keeps the counters in this process (one replica, or one worker); ``redis://...``
shares them between every replica (see ``_redis``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ...config import RateLimitDocument
from ._window import SLOTS, Slots, WindowState, slot_width

_SWEEP_EVERY_MS = 60_000


class BackendUnavailable(Exception):
    """The backend could not be asked (connection refused, timeout, ...)."""


@dataclass(frozen=True, slots=True)
class Demand:
    key: str
    limit: int
    window_ms: int
    cost: int


@dataclass(frozen=True, slots=True)
class Outcome:
    admitted: bool
    now_ms: int
    """The backend's clock, in ms."""
    states: tuple[WindowState, ...]
    """One per demand, in order; after the consumption when admitted."""


@dataclass(frozen=True, slots=True)
class Adjustment:
    key: str
    slot: int
    """The slot that was charged (``WindowState.slot`` of the check)."""
    delta: int


class Backend(Protocol):
    async def consume(self, demands: Sequence[Demand]) -> Outcome:
        """Atomically: if every demand fits its bucket's last window, charge each one's cost to its current slot."""
        ...

    async def adjust(self, adjustments: Sequence[Adjustment]) -> None:
        """Adds ``delta`` (never below zero) to the slot that was charged, while it still counts."""
        ...

    async def aclose(self) -> None: ...


class MemoryBackend:
    """Buckets in a dict: ``key -> Slots``. Every method runs without awaiting, so a
    check-and-consume is atomic in the event loop. ``clock`` returns seconds (default: monotonic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, Slots] = {}
        self._next_sweep = 0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def consume(self, demands: Sequence[Demand]) -> Outcome:
        now = self._now_ms()
        self._sweep(now)
        held, slots = [], []
        for d in demands:
            width = slot_width(d.window_ms)
            bucket = self._entries.get(d.key) or Slots(width)
            slot = bucket.slot_at(now)
            bucket.advance(slot)
            held.append(bucket)
            slots.append(slot)
        admitted = all(b.total + d.cost <= d.limit for b, d in zip(held, demands, strict=True))
        if admitted:
            for b, d, slot in zip(held, demands, slots, strict=True):
                if d.cost > 0:
                    b.charge(slot, d.cost)
                    self._entries[d.key] = b
        states = tuple(b.state(d.limit, d.cost, slot, now) for b, d, slot in zip(held, demands, slots, strict=True))
        return Outcome(admitted, now, states)

    async def adjust(self, adjustments: Sequence[Adjustment]) -> None:
        for a in adjustments:
            bucket = self._entries.get(a.key)
            if bucket is not None:
                bucket.adjust(a.slot, a.delta)

    def _sweep(self, now: int) -> None:
        """Forgets buckets whose newest charge no longer counts."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_MS
        stale = [k for k, b in self._entries.items() if b.newest < now // b.width - SLOTS]
        for key in stale:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        self._entries.clear()


def backend_for(doc: RateLimitDocument) -> Backend:
    """The backend a rate-limiting document names: ``memory`` or a ``redis://`` URL."""
    if doc.backend == "memory":
        return MemoryBackend()
    from ._redis import RedisBackend

    return RedisBackend(doc.backend)


class Backends:
    """The backends of one gateway, one per ``backend`` value, kept across config reloads so a
    reload neither forgets the counters nor opens a second Redis pool."""

    def __init__(self, factory: Callable[[RateLimitDocument], Backend] = backend_for) -> None:
        self._factory = factory
        self._by_name: dict[str, Backend] = {}

    def get(self, doc: RateLimitDocument) -> Backend:
        backend = self._by_name.get(doc.backend)
        if backend is None:
            backend = self._by_name[doc.backend] = self._factory(doc)
        return backend

    async def aclose(self) -> None:
        backends, self._by_name = list(self._by_name.values()), {}
        for backend in backends:
            await backend.aclose()
