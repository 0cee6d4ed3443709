"""Where cached answers live: ``memory`` (a bounded LRU in this process) or ``redis://...`` (shared
by every replica, see ``_redis``). Backends hold opaque bytes under full keys; what the bytes mean
is the layer's business. Entries expire ``ttl`` seconds after they were stored.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from ...config import CacheDocument


class CacheUnavailable(Exception):
    """The backend could not be asked (connection refused, timeout, ...)."""


class CacheBackend(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, if it has not expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        """Stores ``value`` for ``ttl`` seconds, replacing what was there."""
        ...

    async def aclose(self) -> None: ...


class MemoryCache:
    """An LRU of at most ``max_entries`` values, each with its expiry. Nothing awaits inside a
    method, so every operation is atomic in the event loop. ``clock`` returns seconds (default:
    monotonic)."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        """key -> (expires at, value), least recently used first."""

    def __repr__(self) -> str:
        return f"MemoryCache(max_entries={self.max_entries})"

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        self._evict()

    def resize(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._evict()

    def _evict(self) -> None:
        """Drops expired entries from the old end, then the least recently used beyond the bound."""
        now = self._clock()
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now and len(self._entries) <= self.max_entries:
                break
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    async def aclose(self) -> None:
        self._entries.clear()


def backend_for(doc: CacheDocument) -> CacheBackend:
    """The backend a cache document names: ``memory`` or a ``redis://`` URL."""
    if doc.backend == "memory":
        return MemoryCache(doc.max_entries)
    from ._redis import RedisCache

    return RedisCache(doc.backend)


class CacheBackends:
    """The cache backends of one gateway, one per ``backend`` value, kept across config reloads so
    a reload neither empties the memory cache nor opens a second Redis pool. A reload that changes
    ``max_entries`` resizes the memory cache."""

    def __init__(self, factory: Callable[[CacheDocument], CacheBackend] = backend_for) -> None:
        self._factory = factory
        self._by_name: dict[str, CacheBackend] = {}

    def get(self, doc: CacheDocument) -> CacheBackend:
        backend = self._by_name.get(doc.backend)
        if backend is None:
            backend = self._by_name[doc.backend] = self._factory(doc)
        elif isinstance(backend, MemoryCache):
            backend.resize(doc.max_entries)
        return backend

    async def aclose(self) -> None:
        backends, self._by_name = list(self._by_name.values()), {}
        for backend in backends:
            await backend.aclose()
