"""``Retry``: which failures are tried again, how long it waits, and that the deadline bounds it."""

from __future__ import annotations

import asyncio
import random

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from routing_fakes import FakeSend, Outcome, Stream, chat_call, ok, refused, status, streams, timeout, ttft

from otel_gateway.calls import Completion
from otel_gateway.config import RetryConfig
from otel_gateway.errors import GatewayError, UpstreamStatusError, UpstreamStreamError, UpstreamTimeoutError
from otel_gateway.routing.retry import MAX_BACKOFF, Retry


class Highest(random.Random):
    """Full jitter at its upper bound, so waits are exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def retry(send: FakeSend, sleeps: Sleeps, **config: object) -> Retry:
    return Retry(send, RetryConfig.model_validate(config), rng=Highest(), sleep=sleeps)


@pytest.mark.parametrize("failure", [
    pytest.param(status(500), id="status-500"),
    pytest.param(status(429), id="status-429"),
    pytest.param(timeout(), id="timeout"),
    pytest.param(refused(), id="connection-refused"),
])
async def test_retry_then_success(failure: Outcome) -> None:
    send, sleeps = FakeSend({"a/m": [failure, failure, ok()]}), Sleeps()
    result = await retry(send, sleeps, attempts=3, delay=100, on_status_codes=[429, 500])(chat_call("a/m"))
    assert isinstance(result, Completion)
    assert send.models == ["a/m", "a/m", "a/m"]
    assert sleeps.waits == [0.1, 0.2]


async def test_gives_up_after_attempts_with_the_last_error() -> None:
    send, sleeps = FakeSend({"a/m": [status(500), status(502), status(503)]}), Sleeps()
    with pytest.raises(UpstreamStatusError) as raised:
        await retry(send, sleeps, attempts=3, delay=100, on_status_codes=[500, 502, 503])(chat_call("a/m"))
    assert raised.value.upstream_status == 503
    assert len(send.calls) == 3
    assert sleeps.waits == [0.1, 0.2]


@pytest.mark.parametrize(("failure", "on_status_codes"), [
    pytest.param(status(400), [429, 500], id="bad-request"),
    pytest.param(status(502), [429, 500], id="status-not-listed"),
    pytest.param(ttft(), [500], id="ttft-408-not-listed"),
])
async def test_not_retried(failure: Outcome, on_status_codes: list[int]) -> None:
    send, sleeps = FakeSend({"a/m": [failure, ok()]}), Sleeps()
    with pytest.raises(GatewayError):
        await retry(send, sleeps, attempts=3, on_status_codes=on_status_codes)(chat_call("a/m"))
    assert len(send.calls) == 1
    assert sleeps.waits == []


async def test_ttft_timeout_retried_when_408_is_listed() -> None:
    send, sleeps = FakeSend({"a/m": [ttft(), ok()]}), Sleeps()
    assert isinstance(await retry(send, sleeps, attempts=2, on_status_codes=["408"])(chat_call("a/m")), Completion)
    assert len(send.calls) == 2


async def test_backoff_doubles_and_is_capped() -> None:
    send, sleeps = FakeSend({"a/m": [status(503)] * 9 + [ok()]}), Sleeps()
    await retry(send, sleeps, attempts=10, delay=10_000, on_status_codes=[503])(chat_call("a/m"))
    assert sleeps.waits == [10.0, 20.0, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF,
                            MAX_BACKOFF, MAX_BACKOFF]


async def test_full_jitter_waits_between_zero_and_the_doubled_delay() -> None:
    send, sleeps = FakeSend({"a/m": [status(503)] * 4 + [ok()]}), Sleeps()
    config = RetryConfig(attempts=5, delay=100, on_status_codes=(503,))
    await Retry(send, config, rng=random.Random(7), sleep=sleeps)(chat_call("a/m"))
    assert len(sleeps.waits) == 4
    for n, wait in enumerate(sleeps.waits, start=1):
        assert 0 <= wait <= 0.1 * 2 ** (n - 1)
    assert len(set(sleeps.waits)) == 4


def with_retry_after(seconds: str) -> Outcome:
    def fail(call: object) -> Completion:
        raise UpstreamStatusError("p: slow down", upstream_status=429, headers={"retry-after": seconds})

    return fail


@pytest.mark.parametrize(("retry_after", "waits", "calls"), [
    pytest.param("2", [2.0], 2, id="longer-than-the-backoff"),
    pytest.param("0", [0.1], 2, id="shorter-than-the-backoff"),
    pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", [0.1], 2, id="http-date-ignored"),
    pytest.param("120", [], 1, id="longer-than-max-backoff-not-retried"),
])
async def test_retry_after_is_honoured(retry_after: str, waits: list[float], calls: int) -> None:
    send, sleeps = FakeSend({"a/m": [with_retry_after(retry_after), ok()]}), Sleeps()
    policy = retry(send, sleeps, attempts=2, delay=100, on_status_codes=[429])
    if calls == 1:
        with pytest.raises(UpstreamStatusError):
            await policy(chat_call("a/m"))
    else:
        assert isinstance(await policy(chat_call("a/m")), Completion)
    assert sleeps.waits == waits
    assert len(send.calls) == calls


async def test_a_wait_past_the_deadline_is_not_started() -> None:
    deadline = asyncio.get_running_loop().time() + 1.5
    send, sleeps = FakeSend({"a/m": status(500)}), Sleeps()
    with pytest.raises(UpstreamTimeoutError) as raised:
        await retry(send, sleeps, attempts=5, delay=1000, on_status_codes=[500])(chat_call("a/m", deadline=deadline))
    # waits of 1 s (slept by the fake), then 2 s: the second would end past the deadline
    assert len(send.calls) == 2
    assert sleeps.waits == [1.0]
    assert raised.value.status == 504
    assert raised.value.code == "request_timeout"
    assert raised.value.message == ("x-gateway-request-timeout leaves no time for another attempt; "
                                    "the last one failed: p: failing with 500")
    assert isinstance(raised.value.__cause__, UpstreamStatusError)


async def test_a_stream_that_started_is_never_retried() -> None:
    send, sleeps = FakeSend({"a/m": [streams(3, fail_after=1), ok()]}), Sleeps()
    stream = await retry(send, sleeps, attempts=3, on_status_codes=[500])(chat_call("a/m", stream=True))
    assert isinstance(stream, Stream)
    chunks = []
    with pytest.raises(UpstreamStreamError):
        async for chunk in stream:
            chunks.append(chunk)
    assert len(chunks) == 1
    assert len(send.calls) == 1


async def test_each_retry_is_an_event_on_the_current_span(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    send, sleeps = FakeSend({"a/m": [status(503), timeout(), ok()]}), Sleeps()
    with tracer_provider.get_tracer("test").start_as_current_span("outer"):
        await retry(send, sleeps, attempts=3, delay=100, on_status_codes=[503])(chat_call("a/m"))
    (span,) = span_exporter.get_finished_spans()
    assert [(event.name, dict(event.attributes or {})) for event in span.events] == [
        ("retry", {"retry.attempt": 2, "retry.delay_ms": 100, "retry.model": "a/m", "error.type": "503"}),
        ("retry", {"retry.attempt": 3, "retry.delay_ms": 200, "retry.model": "a/m", "error.type": "upstream_timeout"}),
    ]
