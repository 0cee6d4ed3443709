"""Sliding window counter arithmetic, shared by every backend.

A bucket keeps two counters: the current fixed window's and the previous one's. What a bucket
has used at time ``t`` is the current count plus the previous count weighted by how much of the
previous window still overlaps the sliding window ending at ``t``::

    used = previous * (window - elapsed) / window + current

A fresh bucket admits exactly ``limit``; at a window boundary the previous window still counts in
full, so there is no double burst. The previous count is taken as spread evenly over its window,
so a burst at a window's start frees up over the whole next window (never sooner than exact).

Time is in integer milliseconds; both backends (and the Redis Lua script) evaluate the same
expression in the same order with IEEE doubles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Kind = Literal["requests", "tokens"]

_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def parse_unit(unit: str) -> tuple[Kind, int]:
    """``tokens_per_hour`` -> ``("tokens", 3_600_000)``: what is counted, and the window in ms."""
    kind, _, span = unit.partition("_per_")
    if kind not in ("requests", "tokens") or span not in _SECONDS:
        raise ValueError(f"unknown rate-limit unit {unit!r}")
    return kind, _SECONDS[span] * 1000  # type: ignore[return-value]


def fits(limit: int, window_ms: int, elapsed_ms: int, previous: int, current: int, cost: int) -> bool:
    """The admission test; the Lua script in ``_redis`` is the same expression."""
    return previous * ((window_ms - elapsed_ms) / window_ms) + current + cost <= limit


@dataclass(frozen=True, slots=True)
class WindowState:
    """One bucket at one instant: its two counters and how far the current window has run."""

    limit: int
    window_ms: int
    elapsed_ms: int
    """Milliseconds since the current fixed window began."""
    previous: int
    current: int

    @property
    def used(self) -> float:
        return self.previous * ((self.window_ms - self.elapsed_ms) / self.window_ms) + self.current

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.limit - self.used + 1e-9))

    def fits(self, cost: int) -> bool:
        return fits(self.limit, self.window_ms, self.elapsed_ms, self.previous, self.current, cost)

    def wait_ms(self, cost: int) -> float:
        """Milliseconds until ``cost`` more fits (0 if it fits now). A cost above the limit waits
        for the bucket to empty; the limiter never asks for one.

        ``used`` only falls: linearly within this window as the previous count slides out, then,
        once this window has become the previous one, linearly again as it slides out in turn.
        """
        target = max(0, self.limit - cost)
        if self.fits(cost):
            return 0.0
        window, elapsed = self.window_ms, self.elapsed_ms
        if self.current <= target:
            # The previous window's share has to fall to ``target - current`` (previous > 0 here).
            return max(0.0, window - (target - self.current) * window / self.previous - elapsed)
        # Wait for this window to end, then for its count to slide out far enough.
        return (window - elapsed) + (window - target * window / self.current)

    def until_window_ends_ms(self) -> int:
        return self.window_ms - self.elapsed_ms


def whole_seconds(ms: float) -> int:
    """Milliseconds as whole seconds for a header, rounded up, at least 1."""
    return max(1, math.ceil(ms / 1000))
