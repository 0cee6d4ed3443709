"""Response cache (``gateway-cache-config``): exact-match answers, per tenant, streamed or not.

``ResponseCache`` wraps the next ``send`` (below rate limiting, above load balancing); its entries
live in a backend chosen by ``backend_for(doc)``: ``MemoryCache`` (a bounded LRU in this process)
or ``RedisCache`` shared by every replica (imported only when a ``redis://`` backend is
configured). ``_key`` says which requests are the same question, ``_replay`` how a cached answer is
streamed again.
"""

from ._backend import CacheBackend, CacheBackends, CacheUnavailable, MemoryCache, backend_for
from ._key import HEADER, IGNORED, NO_CACHE, NO_STORE, cache_key, directives, request_digest
from ._layer import SPAN_NAME, STATUS_HEADER, CacheStats, Entry, ResponseCache, StoringStream
from ._replay import CONTENT_PIECES, ReplayStream, replay_chunks

__all__ = [
    "CONTENT_PIECES",
    "HEADER",
    "IGNORED",
    "NO_CACHE",
    "NO_STORE",
    "SPAN_NAME",
    "STATUS_HEADER",
    "CacheBackend",
    "CacheBackends",
    "CacheStats",
    "CacheUnavailable",
    "Entry",
    "MemoryCache",
    "ReplayStream",
    "ResponseCache",
    "StoringStream",
    "backend_for",
    "cache_key",
    "directives",
    "replay_chunks",
    "request_digest",
]
