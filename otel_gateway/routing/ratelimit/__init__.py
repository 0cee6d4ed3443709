"""Rate limiting (``gateway-rate-limiting-config``): every matching rule enforced, all or nothing.

``RateLimiter`` wraps the next ``send``; its counters live in a backend chosen by
``backend_for(doc)``: ``MemoryBackend`` in this process, or ``RedisBackend`` shared by every
replica (imported only when a ``redis://`` backend is configured). Windows slide in 60 slots
(``_window``): never more than the limit in any window of the unit's length, and a charge stops
counting at most one slot (1/60 of the window) after the window it was in.
"""

from ._backend import (
    Adjustment,
    Backend,
    Backends,
    BackendUnavailable,
    Demand,
    MemoryBackend,
    Outcome,
    backend_for,
)
from ._limiter import SPAN_NAME, RateLimiter, RateLimitUnavailableError
from ._rules import Bucket, buckets_for, estimate_tokens
from ._window import WindowState

__all__ = [
    "SPAN_NAME",
    "Adjustment",
    "Backend",
    "BackendUnavailable",
    "Backends",
    "Bucket",
    "Demand",
    "MemoryBackend",
    "Outcome",
    "RateLimitUnavailableError",
    "RateLimiter",
    "WindowState",
    "backend_for",
    "buckets_for",
    "estimate_tokens",
]
