"""A provider account's slots: the bounded wait, the hand-over to the longest waiter, a waiter
cancelled at any moment, a new capacity on reload; and what retries make of ``overloaded``."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from otel_gateway.config import RetryConfig
from otel_gateway.errors import OverloadedError
from otel_gateway.providers._limit import LimitedTransport, Slots
from otel_gateway.routing.retry import Retry


async def test_a_free_slot_is_taken_at_once_and_none_is_waited_for_at_most_the_wait() -> None:
    slots = Slots(2)
    assert [slots.try_acquire(), await slots.acquire(0.0), await slots.acquire(0.0)] == [True, True, False]
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await slots.acquire(0.05) is False
    assert 0.05 <= loop.time() - started < 0.5
    assert (slots.in_use, slots.waiting) == (2, 0)


async def test_a_freed_slot_goes_to_the_longest_waiter() -> None:
    slots = Slots(1)
    assert slots.try_acquire()
    first = asyncio.create_task(slots.acquire(5))
    second = asyncio.create_task(slots.acquire(5))
    await asyncio.sleep(0)
    assert slots.waiting == 2
    slots.release()
    assert slots.try_acquire() is False  # no newcomer overtakes the queue
    assert await first is True
    assert (slots.in_use, slots.waiting) == (1, 1)
    slots.release()
    assert await second is True
    slots.release()
    assert (slots.in_use, slots.waiting) == (0, 0)


async def test_a_cancelled_waiter_leaves_nothing_behind_even_when_a_slot_was_just_handed_to_it() -> None:
    slots = Slots(1)
    assert slots.try_acquire()
    waiting = asyncio.create_task(slots.acquire(5))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (slots.in_use, slots.waiting) == (1, 0)
    handed = asyncio.create_task(slots.acquire(5))
    await asyncio.sleep(0)
    slots.release()  # the slot goes to ``handed`` ...
    handed.cancel()  # ... which is cancelled before it runs: the slot must come back
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert (slots.in_use, slots.waiting) == (0, 0)
    assert slots.try_acquire()


async def test_a_new_capacity_lets_waiters_in_or_holds_back_releases() -> None:
    slots = Slots(1)
    assert slots.try_acquire()
    waiter = asyncio.create_task(slots.acquire(5))
    await asyncio.sleep(0)
    slots.resize(2)
    assert await waiter is True
    assert slots.in_use == 2
    slots.resize(1)
    late = asyncio.create_task(slots.acquire(5))
    await asyncio.sleep(0)
    slots.release()  # two in use, capacity one: the release frees nothing for ``late``
    await asyncio.sleep(0)
    assert (late.done(), slots.in_use) == (False, 1)
    slots.release()
    assert await late is True
    assert slots.in_use == 1


class _Answering(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"ok"), request=request)


async def test_the_transport_holds_a_slot_until_the_answer_is_closed() -> None:
    slots = Slots(1)
    transport = LimitedTransport(_Answering(), slots, wait=0.0, provider="acct")
    request = httpx.Request("POST", "http://upstream.test/v1/chat/completions")
    response = await transport.handle_async_request(request)
    assert slots.in_use == 1
    with pytest.raises(OverloadedError) as refused:
        await transport.handle_async_request(request)
    assert (refused.value.status, refused.value.code, refused.value.headers, refused.value.provider) == (
        503, "overloaded", {"retry-after": "1"}, "acct")
    assert [chunk async for chunk in response.aiter_raw()] == [b"ok"]
    await response.aclose()
    await response.aclose()
    assert slots.in_use == 0


@pytest.mark.parametrize(("statuses", "retried"), [
    pytest.param((503,), True, id="503-listed"),
    pytest.param((429, 500), False, id="503-not-listed"),
])
def test_a_retry_repeats_overloaded_as_it_would_a_503(statuses: tuple[int, ...], retried: bool) -> None:
    async def send(call: object) -> None:
        raise AssertionError("not sent")

    retry = Retry(send, RetryConfig(attempts=3, on_status_codes=statuses))  # type: ignore[arg-type]
    assert retry.retryable(OverloadedError("full", provider="acct")) is retried


async def test_the_memory_of_a_burst_is_reclaimed_once_nothing_is_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_gateway.http import _limits

    reclaimed: list[int] = []
    monkeypatch.setattr(_limits, "QUIET", 0.01)
    monkeypatch.setattr(_limits, "reclaim", lambda trim: reclaimed.append(limit.in_flight))
    release = asyncio.Event()

    async def app(scope: object, receive: object, send: object) -> None:
        await release.wait()

    class Server:
        max_requests_in_flight = 1000

    gateway: Any = SimpleNamespace(current=SimpleNamespace(config=SimpleNamespace(server=Server)))
    limit = _limits.InFlightLimit(app, gateway=gateway)  # type: ignore[arg-type]
    scope = {"type": "http", "path": "/v1/chat/completions"}
    for burst in (_limits.BURST - 1, _limits.BURST):
        calls = [asyncio.create_task(limit(scope, None, None)) for _ in range(burst)]  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert limit.in_flight == burst
        release.set()
        await asyncio.gather(*calls)
        release.clear()
        await asyncio.sleep(0.05)
        assert reclaimed == ([] if burst < _limits.BURST else [0])
