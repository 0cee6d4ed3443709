"""Sliding windows in slots: the arithmetic every backend implements (``Slots`` here, the Lua
script in ``_redis`` line for line).

A bucket's window ``W`` (a minute, an hour or a day) is cut into ``SLOTS`` = 60 slots of
``W / 60`` (1 s, 1 min, 24 min); a bucket keeps how much it was charged in each slot. A check at
time ``t`` counts, *whole*, every slot that overlaps the last ``W``: the slot ``t`` falls in and
the 60 before it. They cover every instant of ``(t - W, t]``, so

- **never over**: a call is admitted only if what the last ``W`` holds, plus its cost, is at most
  the limit. Checking each call against the ``W`` before it holds every window of length ``W`` to
  the limit, since the last call admitted in a window saw all the window held before it.
- **at most one slot under**: they cover no instant before ``t - W - W/60``, so a call is refused
  only if the calls admitted in the last ``W + W/60`` and its own cost exceed the limit. What a
  call is charged stops counting between ``W`` and ``W + W/60`` after it (1.7 % of the window).

What the check counts is a running total: each check drops the slots that fell out (subtracting
them) and steps its oldest held slot past empty ones, each slot once, so a check reads O(1) slots
while calls keep coming (O(60) at worst, after a pause or for a large token cost). A bucket holds
at most 61 slots (only those that hold something) plus its total, its oldest held slot and its
newest charged slot.

Time is integer milliseconds; slot indexes are ``t // (W / 60)``. Time never runs back for a
bucket: a check earlier than the bucket's newest charged slot is taken as in that slot (a clock
stepped back keeps charges counted longer, never shorter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Kind = Literal["requests", "tokens"]

SLOTS = 60
"""Slots per window: what a charge may keep counting past its window is one slot, ``W / 60``."""

_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_NONE = -(1 << 62)


def parse_unit(unit: str) -> tuple[Kind, int]:
    """``tokens_per_hour`` -> ``("tokens", 3_600_000)``: what is counted, and the window in ms."""
    kind, _, span = unit.partition("_per_")
    if kind not in ("requests", "tokens") or span not in _SECONDS:
        raise ValueError(f"unknown rate-limit unit {unit!r}")
    return kind, _SECONDS[span] * 1000  # type: ignore[return-value]


def slot_width(window_ms: int) -> int:
    """Milliseconds per slot (every unit's window is a whole number of them)."""
    return window_ms // SLOTS


@dataclass(frozen=True, slots=True)
class WindowState:
    """One bucket as one check left it."""

    limit: int
    used: int
    """What the slots overlapping the last window hold (after this call's cost, when admitted)."""
    wait_ms: int
    """Milliseconds until a call of the same cost fits (0: it fits now)."""
    reset_ms: int
    """Milliseconds until everything counted has slid out and the whole limit is free (0: nothing counted)."""
    slot: int
    """The slot this call was charged to (or would have been): what a later ``Adjustment`` names."""

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class Slots:
    """One bucket's charges per slot, as the memory backend keeps it (the Lua script keeps the same
    fields in a Redis hash: ``t`` total, ``o`` oldest held slot, ``n`` newest charged slot, and one
    field per slot that holds something)."""

    __slots__ = ("counts", "newest", "oldest", "total", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.total = 0
        self.oldest = 0
        """No slot before it holds anything: the scans start here."""
        self.newest = _NONE
        """The newest charged slot, or ``_NONE`` when nothing is held (a hash Redis does not have)."""
        self.counts: dict[int, int] = {}
        """Slot -> what it holds, for the slots that hold something."""

    def slot_at(self, now: int) -> int:
        """The slot a check at ``now`` falls in (never before the newest charged one)."""
        return max(now // self.width, self.newest)

    def advance(self, slot: int) -> None:
        """Drops the slots that no longer overlap the window of a check in ``slot``, then moves
        ``oldest`` past empty slots (not past the newest): each slot is stepped over once."""
        first = slot - SLOTS
        if self.newest < first:
            self.counts.clear()
            self.total, self.oldest, self.newest = 0, slot, _NONE
            return
        for j in range(self.oldest, first):
            self.total -= self.counts.pop(j, 0)
        self.oldest = max(self.oldest, first)
        while self.oldest < self.newest and self.oldest not in self.counts:
            self.oldest += 1

    def charge(self, slot: int, cost: int) -> None:
        self.counts[slot] = self.counts.get(slot, 0) + cost
        self.total += cost
        self.newest = slot

    def adjust(self, slot: int, delta: int) -> None:
        """Adds ``delta`` (never below zero) to ``slot`` if it is still held; a slot gone counts nothing."""
        if self.oldest <= slot <= self.newest:
            count = self.counts.pop(slot, 0)
            value = max(0, count + delta)
            if value:
                self.counts[slot] = value
            self.total += value - count

    def state(self, limit: int, cost: int, slot: int, now: int) -> WindowState:
        """The check's answer: what is used, and when ``cost`` more fits and everything is free."""
        wait = reset = 0
        if self.total > 0:
            j = self.newest
            while j not in self.counts:  # the newest slot that holds something
                j -= 1
            reset = (j + SLOTS + 1) * self.width - now
            if self.total + cost > limit:  # the oldest slot whose sliding out makes room
                left, j = self.total, self.oldest
                while True:
                    left -= self.counts.get(j, 0)
                    if left + cost <= limit or j >= self.newest:
                        break
                    j += 1
                wait = (j + SLOTS + 1) * self.width - now
        return WindowState(limit, self.total, wait, reset, slot)


def whole_seconds(ms: float) -> int:
    """Milliseconds as whole seconds for a header, rounded up, at least 1."""
    return max(1, math.ceil(ms / 1000))
