"""Counters in Redis, shared by every replica.

Each bucket is one hash ``{prefix}{tenant}:{rule id}:{unit}`` with fields ``w`` (the current
fixed window's index), ``c`` (its count) and ``p`` (the previous window's count). One Lua script
per check reads every bucket, decides, and consumes from all or none: Redis runs a script
without interleaving any other command, so replicas can never both take the last unit. The
script reads the time from Redis (``TIME``), so replica clocks do not matter, and gives every
hash an expiry of two windows, after which it would count nothing anyway. Scripts are sent
once and then called by their SHA (``EVALSHA``; reloaded if Redis forgot them).

Calls go through :class:`..GuardedRedis`: an unreachable Redis raises :class:`BackendUnavailable`
at once, and right after a failure without trying, so a dead Redis costs nothing per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.commands.core import AsyncScript

from ..._urls import redact_url
from .._redis import GuardedRedis, RedisUnavailable
from ._backend import Adjustment, BackendUnavailable, Demand, Outcome
from ._window import WindowState

DEFAULT_PREFIX = "otel_gateway:ratelimit:"

# KEYS: one hash per bucket. ARGV: limit, window ms, cost for each bucket, in KEYS order.
# Returns {admitted (0/1), now ms, then previous and current count of each bucket}.
CONSUME = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local windows, currents, previouses = {}, {}, {}
local admitted = 1
for i = 1, #KEYS do
  local limit, window, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local index = math.floor(now / window)
  local stored = redis.call('HMGET', KEYS[i], 'w', 'c', 'p')
  local at = tonumber(stored[1])
  local current, previous = 0, 0
  if at == index then
    current, previous = tonumber(stored[2]) or 0, tonumber(stored[3]) or 0
  elseif at == index - 1 then
    previous = tonumber(stored[2]) or 0
  end
  windows[i], currents[i], previouses[i] = index, current, previous
  local elapsed = now - index * window
  if previous * ((window - elapsed) / window) + current + cost > limit then
    admitted = 0
  end
end
if admitted == 1 then
  for i = 1, #KEYS do
    currents[i] = currents[i] + tonumber(ARGV[3*i])
    redis.call('HSET', KEYS[i], 'w', windows[i], 'c', currents[i], 'p', previouses[i])
    redis.call('PEXPIRE', KEYS[i], 2 * tonumber(ARGV[3*i-1]))
  end
end
local out = {admitted, now}
for i = 1, #KEYS do
  out[#out + 1] = previouses[i]
  out[#out + 1] = currents[i]
end
return out
"""

# KEYS: hashes. ARGV: the charged window's index and the delta, for each key.
ADJUST = """
for i = 1, #KEYS do
  local index, delta = tonumber(ARGV[2*i-1]), tonumber(ARGV[2*i])
  local at = tonumber(redis.call('HGET', KEYS[i], 'w'))
  local field = nil
  if at == index then field = 'c' elseif at == index + 1 then field = 'p' end
  if field then
    local value = (tonumber(redis.call('HGET', KEYS[i], field)) or 0) + delta
    if value < 0 then value = 0 end
    redis.call('HSET', KEYS[i], field, value)
  end
end
return 1
"""


class RedisBackend:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = 0.5,
        reconnect_after: float = 1.0,
        max_connections: int = 64,
    ) -> None:
        self.url = url
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
        args = [n for d in demands for n in (d.limit, d.window_ms, d.cost)]
        reply = await self._call(self._consume, keys, args)
        admitted, now = int(reply[0]), int(reply[1])
        states = tuple(
            WindowState(d.limit, d.window_ms, now % d.window_ms, int(reply[2 + 2 * i]), int(reply[3 + 2 * i]))
            for i, d in enumerate(demands)
        )
        return Outcome(bool(admitted), now, states)

    async def adjust(self, adjustments: Sequence[Adjustment]) -> None:
        if adjustments:
            keys = [self.prefix + a.key for a in adjustments]
            await self._call(self._adjust, keys, [n for a in adjustments for n in (a.window, a.delta)])

    async def _call(self, script: AsyncScript, keys: list[str], args: list[int]) -> Any:
        try:
            return await self._redis.call(lambda: script(keys=keys, args=args))
        except RedisUnavailable as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def aclose(self) -> None:
        await self._redis.aclose()
