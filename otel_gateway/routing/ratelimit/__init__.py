"""Rate limiting (``gateway-rate-limiting-config``): every matching rule enforced, all or nothing.

``RateLimiter`` wraps the next ``send``; its counters live in a backend chosen by
``backend_for(doc)``: ``MemoryBackend`` in this process, or ``RedisBackend`` shared by every
replica (imported only when a ``redis://`` backend is configured). Windows are sliding window
counters (``_window``).
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
