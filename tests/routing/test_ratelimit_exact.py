"""The guarantee, as properties over any arrival times (hypothesis), on a clock the test sets:

- **never over**: the calls admitted never hold more than the limit in any window of the unit's length;
- **at most one slot under**: a call is refused only if the calls admitted in the last window and a
  slot (``W + W/60``) and its own cost exceed the limit;
- ``used``, ``wait_ms`` and ``reset_ms`` (what the headers say) agree with a model of the slots;
- token reservations settled later, to less, keep all of that;
- the Redis script computes exactly what the memory backend computes, call for call.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ratelimit_gateways import REDIS_URL
from ratelimit_helpers import Clock
from services import require_service

from otel_gateway.routing.ratelimit import Adjustment, Backend, Demand, MemoryBackend, Outcome
from otel_gateway.routing.ratelimit._redis import RedisBackend

MINUTE = 60_000
HOUR = 3_600_000
START = 1_800_000_000_000
"""Milliseconds: a whole number of days, so slot and window edges fall on round numbers."""

gaps = st.one_of(st.integers(0, 40), st.integers(0, 3_000), st.integers(0, 70_000))
"""Milliseconds between arrivals: bursts, a steady trickle, and pauses longer than a window."""


@dataclass
class Charge:
    at: int
    amount: int
    slot: int


@dataclass
class Model:
    """What the backend should count: every admitted charge, with its amount as settled so far."""

    window: int
    charges: list[Charge] = field(default_factory=list)

    def counted(self, at: int) -> int:
        """What a check at ``at`` counts: the whole of every slot overlapping the last window."""
        first = at // (self.window // 60) - 60
        return sum(c.amount for c in self.charges if c.slot >= first)

    def in_window(self, start: int, length: int) -> int:
        return sum(c.amount for c in self.charges if start <= c.at < start + length)


@dataclass(frozen=True)
class Arrival:
    gap: int
    cost: int
    settle_to: int | None
    """For token calls: the real usage (at most the reservation), settled at the next arrival."""


def arrivals(limit: int, *, tokens: bool) -> st.SearchStrategy[list[Arrival]]:
    cost = st.integers(1, limit) if tokens else st.just(1)
    settle = st.one_of(st.none(), st.floats(0, 1)) if tokens else st.none()

    @st.composite
    def one(draw: st.DrawFn) -> Arrival:
        c = draw(cost)
        share = draw(settle)
        return Arrival(draw(gaps), c, None if share is None else int(c * share))

    return st.lists(one(), min_size=1, max_size=120)


async def run(backend: Backend, clock: Clock, limit: int, window: int, calls: list[Arrival]) -> None:
    """Plays ``calls`` against ``backend``, checking each answer against the model and the bound."""
    model = Model(window)
    width = window // 60
    now = START + 12_345
    pending: list[tuple[Charge, int]] = []
    for call in calls:
        now += call.gap
        clock.now = now / 1000
        for charge, usage in pending:  # the previous call ended: settle it to what it used
            await backend.adjust([Adjustment("k", charge.slot, usage - charge.amount)])
            charge.amount = usage
        pending = []
        outcome = await backend.consume([Demand("k", limit, window, call.cost)])
        (state,) = outcome.states
        assert outcome.now_ms == now and state.slot == now // width
        before = model.counted(now)
        assert outcome.admitted == (before + call.cost <= limit)
        if outcome.admitted:
            charge = Charge(now, call.cost, state.slot)
            model.charges.append(charge)
            if call.settle_to is not None:
                pending.append((charge, call.settle_to))
        else:  # at most one slot under: refused only if the last W + W/60 and this call exceed the limit
            assert model.in_window(now - window - width + 1, window + width) + call.cost > limit
        used = model.counted(now)
        assert state.used == used and state.remaining == max(0, limit - used)
        if state.wait_ms:
            assert model.counted(now + state.wait_ms) + call.cost <= limit
            assert model.counted(now + state.wait_ms - 1) + call.cost > limit
        else:
            assert used + call.cost <= limit
        if state.reset_ms:
            assert model.counted(now + state.reset_ms) == 0 < model.counted(now + state.reset_ms - 1)
        else:
            assert used == 0
    for charge, usage in pending:
        charge.amount = usage
    # Never over: no window of length W holds more than the limit (the fullest starts at a charge).
    for charge in model.charges:
        assert model.in_window(charge.at, window) <= limit


PROPERTY = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.integers(1, 12), st.sampled_from([MINUTE, HOUR]), st.data())
def test_requests_never_over_and_at_most_one_slot_under(limit: int, window: int, data: st.DataObject) -> None:
    calls = data.draw(arrivals(limit, tokens=False))
    clock = Clock()
    asyncio.run(run(MemoryBackend(clock), clock, limit, window, calls))


@PROPERTY
@given(st.integers(1, 5000), st.data())
def test_tokens_settled_later_never_over_and_at_most_one_slot_under(limit: int, data: st.DataObject) -> None:
    calls = data.draw(arrivals(limit, tokens=True))
    clock = Clock()
    asyncio.run(run(MemoryBackend(clock), clock, limit, MINUTE, calls))


# -- Redis ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_up() -> None:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5) as client:
            client.ping()
    except (redis.RedisError, OSError):
        require_service("Redis at 127.0.0.1:6379 is unreachable")


async def with_redis(clock: Clock, play: object) -> None:
    prefix = f"test:ratelimit:{uuid.uuid4().hex}:"
    backend = RedisBackend(REDIS_URL, prefix=prefix, clock=clock)
    try:
        await play(backend)  # type: ignore[operator]
    finally:
        client = backend._redis.client
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await backend.aclose()


REDIS_PROPERTY = settings(max_examples=25, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])


@REDIS_PROPERTY
@given(st.integers(1, 5000), st.data())
def test_redis_never_over_and_at_most_one_slot_under(redis_up: None, limit: int, data: st.DataObject) -> None:
    calls = data.draw(arrivals(limit, tokens=True))
    clock = Clock()
    asyncio.run(with_redis(clock, lambda backend: run(backend, clock, limit, MINUTE, calls)))


@dataclass(frozen=True)
class Step:
    gap: int
    """May be negative: a clock stepped back, which both backends take as the bucket's newest slot."""
    costs: tuple[int, int]
    """What the call asks of a minute bucket (limit 20) and an hour bucket (limit 50); 0 leaves it out."""
    adjust: tuple[int, int]
    """What to add to each bucket's slot of the previous admitted call afterwards."""


steps = st.builds(
    Step,
    gap=st.one_of(st.integers(0, 2_000), st.integers(0, 200_000), st.integers(-5_000, 0)),
    costs=st.tuples(st.integers(0, 12), st.integers(0, 20)),
    adjust=st.tuples(st.integers(-12, 6), st.integers(-20, 10)),
)


async def play_steps(backend: Backend, clock: Clock, script: list[Step]) -> list[Outcome]:
    now, charged, outcomes = START, None, []
    for step in script:
        now += step.gap
        clock.now = now / 1000
        if charged is not None:
            await backend.adjust([Adjustment(key, slot, delta)
                                  for key, slot, delta in zip(("m", "h"), charged, step.adjust, strict=True)])
        demands = [Demand(key, limit, window, cost)
                   for key, limit, window, cost in zip(("m", "h"), (20, 50), (MINUTE, HOUR), step.costs, strict=True)
                   if cost]
        outcome = await backend.consume(demands)
        outcomes.append(outcome)
        if outcome.admitted and len(demands) == 2:
            charged = tuple(s.slot for s in outcome.states)
    return outcomes


@REDIS_PROPERTY
@given(st.lists(steps, min_size=1, max_size=60))
def test_redis_answers_exactly_as_memory(redis_up: None, script: list[Step]) -> None:
    """Same calls, same clock, same adjustments: the same outcomes, field for field."""
    clock = Clock()
    expected = asyncio.run(play_steps(MemoryBackend(clock), clock, script))
    got: list[Outcome] = []

    async def play(backend: Backend) -> None:
        got.extend(await play_steps(backend, clock, script))

    asyncio.run(with_redis(clock, play))
    assert got == expected
