"""Counters in Redis, shared by every replica.

Each bucket is one hash ``{prefix}{tenant}:{rule id}:{unit}`` holding the charges of its window's
slots (``_window``: sliding windows in 60 slots) and their total. One Lua script per check reads
every bucket, decides, and consumes from all or none: Redis runs a script without interleaving
any other command, so replicas can never both take the last unit. The script reads the time from
Redis (``TIME``), so replica clocks do not matter, and gives every hash an expiry of a window and
a slot, after which it would count nothing anyway. Scripts are sent once and then called by
their SHA (``EVALSHA``; reloaded if Redis forgot them).

Calls go through :class:`..GuardedRedis`: an unreachable Redis raises :class:`BackendUnavailable`
at once, and right after a failure without trying, so a dead Redis costs nothing per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.commands.core import AsyncScript

from ..._urls import redact_url
from .._redis import GuardedRedis, RedisUnavailable
from ._backend import Adjustment, BackendUnavailable, Demand, Outcome
from ._window import SLOTS, WindowState

DEFAULT_PREFIX = "otel_gateway:ratelimit:"

# The arithmetic of ``_window.Slots``, line for line. A hash per bucket: ``t`` the total of the held
# slots, ``o`` the oldest held slot, ``n`` the newest charged slot, and a field per slot holding something.
# KEYS: one hash per bucket. ARGV: the time in ms ('' for Redis's own ``TIME``), then limit,
# window ms and cost for each bucket, in KEYS order.
# Returns {admitted (0/1), now ms, then used, wait ms, reset ms and slot of each bucket}.
CONSUME = f"local SLOTS = {SLOTS}\n" + """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local function count(key, slot) return tonumber(redis.call('HGET', key, slot)) or 0 end
local widths, slots, totals, oldests, newests = {}, {}, {}, {}, {}
local admitted = 1
for i = 1, #KEYS do
  local key, limit, cost = KEYS[i], tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i+1])
  local width = math.floor(tonumber(ARGV[3*i]) / SLOTS)
  local meta = redis.call('HMGET', key, 't', 'o', 'n')
  local total, oldest, newest = tonumber(meta[1]) or 0, tonumber(meta[2]), tonumber(meta[3])
  local slot = math.floor(now / width)
  if newest ~= nil and newest > slot then slot = newest end
  local first = slot - SLOTS
  if newest == nil or newest < first then
    if newest ~= nil then redis.call('DEL', key) end
    total, oldest, newest = 0, slot, slot - 1
  else
    local was = oldest
    if oldest < first then
      local gone = {}
      for j = oldest, first - 1 do gone[#gone + 1] = j end
      for _, value in ipairs(redis.call('HMGET', key, unpack(gone))) do total = total - (tonumber(value) or 0) end
      redis.call('HDEL', key, unpack(gone))
      oldest = first
    end
    while oldest < newest and count(key, oldest) == 0 do oldest = oldest + 1 end
    if oldest ~= was then redis.call('HSET', key, 't', total, 'o', oldest) end
  end
  widths[i], slots[i], totals[i], oldests[i], newests[i] = width, slot, total, oldest, newest
  if total + cost > limit then admitted = 0 end
end
if admitted == 1 then
  for i = 1, #KEYS do
    local cost = tonumber(ARGV[3*i+1])
    if cost > 0 then
      redis.call('HINCRBY', KEYS[i], slots[i], cost)
      totals[i], newests[i] = totals[i] + cost, slots[i]
      redis.call('HSET', KEYS[i], 't', totals[i], 'o', oldests[i], 'n', newests[i])
      redis.call('PEXPIRE', KEYS[i], (SLOTS + 1) * widths[i])
    end
  end
end
local out = {admitted, now}
for i = 1, #KEYS do
  local key, limit, cost = KEYS[i], tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i+1])
  local width, total, newest = widths[i], totals[i], newests[i]
  local wait, reset = 0, 0
  if total > 0 then
    local j = newest
    if admitted == 0 or cost == 0 then  -- else this call has just charged the newest slot
      while count(key, j) == 0 do j = j - 1 end
    end
    reset = (j + SLOTS + 1) * width - now
    if total + cost > limit then
      local left = total
      j = oldests[i]
      while true do
        left = left - count(key, j)
        if left + cost <= limit or j >= newest then break end
        j = j + 1
      end
      wait = (j + SLOTS + 1) * width - now
    end
  end
  out[#out + 1] = total
  out[#out + 1] = wait
  out[#out + 1] = reset
  out[#out + 1] = slots[i]
end
return out
"""

# KEYS: hashes. ARGV: the charged slot and the delta, for each key.
ADJUST = """
for i = 1, #KEYS do
  local slot, delta = tonumber(ARGV[2*i-1]), tonumber(ARGV[2*i])
  local meta = redis.call('HMGET', KEYS[i], 't', 'o', 'n')
  local total, oldest, newest = tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3])
  if total ~= nil and oldest <= slot and slot <= newest then
    local count = tonumber(redis.call('HGET', KEYS[i], slot)) or 0
    local value = count + delta
    if value < 0 then value = 0 end
    if value == 0 then redis.call('HDEL', KEYS[i], slot) else redis.call('HSET', KEYS[i], slot, value) end
    redis.call('HSET', KEYS[i], 't', total + value - count)
  end
end
return 1
"""


class RedisBackend:
    """Buckets in Redis. ``clock`` (seconds) replaces Redis's ``TIME`` when given: for tests that
    need to set the time, never in a deployment, where replica clocks would disagree."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = 0.5,
        reconnect_after: float = 1.0,
        max_connections: int = 64,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.url = url
        self._clock = clock
        self.prefix = prefix
        self._redis = GuardedRedis(
            url, socket_timeout=socket_timeout, reconnect_after=reconnect_after, max_connections=max_connections
        )
        self._consume = self._redis.client.register_script(CONSUME)
        self._adjust = self._redis.client.register_script(ADJUST)

    def __repr__(self) -> str:
        return f"RedisBackend({redact_url(self.url)!r})"

    async def consume(self, demands: Sequence[Demand]) -> Outcome:
        keys = [self.prefix + d.key for d in demands]
        now = "" if self._clock is None else int(self._clock() * 1000)
        args = [now, *(n for d in demands for n in (d.limit, d.window_ms, d.cost))]
        reply = await self._call(self._consume, keys, args)
        admitted, now_ms = int(reply[0]), int(reply[1])
        states = tuple(
            WindowState(d.limit, *(int(n) for n in reply[2 + 4 * i : 6 + 4 * i]))
            for i, d in enumerate(demands)
        )
        return Outcome(bool(admitted), now_ms, states)

    async def adjust(self, adjustments: Sequence[Adjustment]) -> None:
        if adjustments:
            keys = [self.prefix + a.key for a in adjustments]
            await self._call(self._adjust, keys, [n for a in adjustments for n in (a.slot, a.delta)])

    async def _call(self, script: AsyncScript, keys: list[str], args: Sequence[int | str]) -> Any:
        try:
            return await self._redis.call(lambda: script(keys=keys, args=args))
        except RedisUnavailable as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def aclose(self) -> None:
        await self._redis.aclose()
