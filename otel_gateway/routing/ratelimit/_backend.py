"""Where the counters live. Every backend takes all of a call's buckets at once and either
consumes from all of them or from none (``consume``), and can correct what a window was charged
afterwards (``adjust``: settling a token reservation to real usage, or refunding it).

``memory`` keeps the counters in this process (one replica, or one worker); ``redis://...``
shares them between every replica (see ``_redis``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ...config import RateLimitDocument
from ._window import WindowState, fits

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
    """The backend's clock, in ms: which fixed window each demand fell in is ``now_ms // window_ms``."""
    states: tuple[WindowState, ...]
    """One per demand, in order; after the consumption when admitted."""


@dataclass(frozen=True, slots=True)
class Adjustment:
    key: str
    window: int
    """The index (``now_ms // window_ms``) of the fixed window that was charged."""
    delta: int


class Backend(Protocol):
    async def consume(self, demands: Sequence[Demand]) -> Outcome:
        """Atomically: if every demand fits, add each one's cost to its current window."""
        ...

    async def adjust(self, adjustments: Sequence[Adjustment]) -> None:
        """Adds ``delta`` (never below zero) to the window that was charged, while it still counts."""
        ...

    async def aclose(self) -> None: ...


class MemoryBackend:
    """Counters in a dict: ``key -> [window index, current count, previous count]``. Every
    method runs without awaiting, so a check-and-consume is atomic in the event loop.
    ``clock`` returns seconds (default: monotonic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[int, int, int, int]] = {}
        """key -> (window index, current, previous, window ms)."""
        self._next_sweep = 0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _counts(self, key: str, window: int) -> tuple[int, int]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < window - 1:
            return 0, 0
        if entry[0] == window:
            return entry[1], entry[2]
        return 0, entry[1]

    async def consume(self, demands: Sequence[Demand]) -> Outcome:
        now = self._now_ms()
        self._sweep(now)
        counts = [self._counts(d.key, now // d.window_ms) for d in demands]
        admitted = all(
            fits(d.limit, d.window_ms, now % d.window_ms, previous, current, d.cost)
            for d, (current, previous) in zip(demands, counts, strict=True)
        )
        states = []
        for d, (current, previous) in zip(demands, counts, strict=True):
            if admitted:
                current += d.cost
                self._entries[d.key] = (now // d.window_ms, current, previous, d.window_ms)
            states.append(WindowState(d.limit, d.window_ms, now % d.window_ms, previous, current))
        return Outcome(admitted, now, tuple(states))

    async def adjust(self, adjustments: Sequence[Adjustment]) -> None:
        for a in adjustments:
            entry = self._entries.get(a.key)
            if entry is None:
                continue
            window, current, previous, window_ms = entry
            if window == a.window:
                self._entries[a.key] = (window, max(0, current + a.delta), previous, window_ms)
            elif window == a.window + 1:
                self._entries[a.key] = (window, current, max(0, previous + a.delta), window_ms)

    def _sweep(self, now: int) -> None:
        """Forgets buckets that have not been charged for two windows: they count nothing."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_MS
        stale = [k for k, (window, _, _, window_ms) in self._entries.items() if window < now // window_ms - 1]
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
