"""The rate limiter over the in-memory backend, with a clock the test sets: window arithmetic,
all-or-nothing rules, per-user / per-model buckets, token reservations and their settling."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from ratelimit_helpers import ALICE, BOB, Clock, Next, Stream, chat_call, completion, rules_doc, stream_chunks

from otel_gateway.calls import ChatCall
from otel_gateway.config import RateLimitDocument
from otel_gateway.errors import RateLimitError, UpstreamConnectionError, UpstreamStreamError
from otel_gateway.identity import Identity
from otel_gateway.routing.ratelimit import (
    Backends,
    Demand,
    MemoryBackend,
    RateLimiter,
    buckets_for,
    estimate_tokens,
)

RPM10 = {"id": "rpm", "limit_to": 10, "unit": "requests_per_minute"}
TPM1000 = {"id": "tpm", "limit_to": 1000, "unit": "tokens_per_minute"}
RESERVE_500 = {"max_tokens": 495}
"""With the default message ("hi": 1 token + 4 per message), a reservation of exactly 500."""


def limiter(doc: RateLimitDocument, clock: Clock | None = None, next: Next | None = None) -> RateLimiter:
    return RateLimiter(next or Next(), doc, MemoryBackend(clock or Clock()), tracer=None)


async def admit(rl: RateLimiter, call: ChatCall | None = None) -> dict[str, str]:
    call = call or chat_call()
    await rl(call)
    return call.context.response_headers


async def refuse(rl: RateLimiter, call: ChatCall | None = None) -> RateLimitError:
    with pytest.raises(RateLimitError) as caught:
        await rl(call or chat_call())
    return caught.value


async def used(rl: RateLimiter, call: ChatCall) -> dict[str, float]:
    """What each bucket ``call`` draws on has used, read by consuming nothing."""
    out = {}
    for b in buckets_for(rl._config, call):
        outcome = await rl.backend.consume([Demand(b.key, b.limit, b.window_ms, 0)])
        out[b.rule_id] = outcome.states[0].used
    return out


# -- the sliding window -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "retry_after"),
    # One slot is 1 s: the 10 count until their slot is 61 slots old, 60 to 61 s from now.
    [(0.0, 61), (1234.5, 61), (59.999, 61)],
    ids=["slot-start", "mid-slot", "slot-end"],
)
async def test_a_fresh_bucket_admits_exactly_the_limit(start: float, retry_after: int) -> None:
    rl = limiter(rules_doc(RPM10), Clock(start))
    for _ in range(10):
        await admit(rl)
    error = await refuse(rl)
    assert error.status == 429
    assert error.message == (
        f"Rate limit exceeded: rule 'rpm' allows 10 requests per minute. Retry after {retry_after} s.")


async def test_a_burst_counts_until_its_slot_has_slid_out() -> None:
    clock = Clock(0.5)
    rl = limiter(rules_doc(RPM10), clock)
    for _ in range(10):
        await admit(rl)
    assert (await refuse(rl)).headers == {
        "retry-after": "61", "x-ratelimit-limit": "10", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "61"}

    clock.now = 60.0  # a minute boundary is nothing special: no double burst
    assert (await refuse(rl)).headers["retry-after"] == "1"
    clock.now = 60.999  # the slot [0 s, 1 s) still overlaps the last minute
    await refuse(rl)
    clock.now = 61.0  # now it does not: all 10 are back at once
    for remaining in range(9, -1, -1):
        assert (await admit(rl))["x-ratelimit-remaining"] == str(remaining)
    await refuse(rl)


async def test_charges_slide_out_slot_by_slot() -> None:
    clock = Clock(0.0)
    rl = limiter(rules_doc(RPM10), clock)
    for second, count in ((0, 4), (10, 3), (20, 3)):
        clock.now = second
        for _ in range(count):
            await admit(rl)
    # Full: room for one when the 4 of second 0 slide out (61 s); for all 10 when those of second 20 do.
    clock.now = 30.0
    assert (await refuse(rl)).headers == {
        "retry-after": "31", "x-ratelimit-limit": "10", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "31"}
    clock.now = 61.0
    # With room, the reset is when nothing counts any more: this call's own slot, 61 s on.
    assert await admit(rl) == {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "3", "x-ratelimit-reset": "61"}
    for _ in range(3):
        await admit(rl)
    assert (await refuse(rl)).headers["retry-after"] == "10"  # second 10's 3 slide out at 71 s
    clock.now = 71.0
    assert await admit(rl) == {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "2", "x-ratelimit-reset": "61"}


@pytest.mark.parametrize(
    ("limit", "charges", "at", "cost", "expected"),
    [
        (10, [(0, 5)], 0, 1, (5, 0, 61_000)),
        (10, [(0, 10)], 0, 1, (10, 61_000, 61_000)),
        (10, [(0, 10)], 20_000, 1, (10, 41_000, 41_000)),
        (10, [(0, 6), (30_500, 4)], 60_000, 1, (10, 1_000, 31_000)),
        (10, [(0, 6), (30_500, 4)], 61_000, 1, (4, 0, 30_000)),
        (10, [(0, 6), (30_500, 4)], 60_000, 7, (10, 31_000, 31_000)),
        (1000, [(0, 600), (30_000, 400)], 45_000, 700, (1000, 46_000, 46_000)),
        (1000, [(0, 600), (30_000, 400)], 45_000, 400, (1000, 16_000, 46_000)),
        (1000, [(0, 600), (30_000, 300)], 45_000, 100, (900, 0, 46_000)),
        (1000, [], 45_000, 100, (0, 0, 0)),
    ],
    ids=["room", "full-now", "full-later", "two-slots", "one-slid-out", "both-slots", "tokens-all",
         "tokens-first", "tokens-room", "empty"],
)
async def test_used_wait_and_reset(limit: int, charges: list[tuple[int, int]], at: int, cost: int,
                                   expected: tuple[int, int, int]) -> None:
    """``(used, wait, reset)`` in ms per minute: ``wait`` until ``cost`` more fits, ``reset`` until
    nothing counts; a slot of 1 s counts until 61 s after its start."""
    clock = Clock()
    backend = MemoryBackend(clock)
    for ms, charge in charges:
        clock.now = ms / 1000
        assert (await backend.consume([Demand("k", limit, 60_000, charge)])).admitted
    clock.now = at / 1000
    never = Demand("never", 1, 60_000, 2)  # refuses the check, so that it charges nothing
    state, _ = (await backend.consume([Demand("k", limit, 60_000, cost), never])).states
    assert (state.used, state.wait_ms, state.reset_ms) == expected
    assert state.slot == at // 1000


async def test_retry_after_is_exact_on_the_clock() -> None:
    clock = Clock(15.0)
    rl = limiter(rules_doc(RPM10), clock)
    for _ in range(10):
        await admit(rl)
    error = await refuse(rl)
    assert error.headers["retry-after"] == "61"  # the slot [15 s, 16 s) counts until 76 s
    clock.now = 15.0 + 60.999
    await refuse(rl)
    clock.now = 15.0 + 61.0
    await admit(rl)


# -- several rules ----------------------------------------------------------------------------------------------


async def test_every_matching_rule_is_enforced_and_a_refusal_consumes_nothing() -> None:
    doc = rules_doc(
        {"id": "prod-rpm", "when": {"metadata": {"env": "prod"}}, "limit_to": 2, "unit": "requests_per_minute"},
        {"id": "all-rpm", "limit_to": 5, "unit": "requests_per_minute"},
    )
    rl = limiter(doc)
    prod = {"env": "prod"}
    await admit(rl, chat_call(metadata=prod))
    # Room for one more once the slot of both has slid out, 61 s on.
    assert await admit(rl, chat_call(metadata=prod)) == {
        "x-ratelimit-limit": "2", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "61"}
    for _ in range(3):
        error = await refuse(rl, chat_call(metadata=prod))
        assert error.message.startswith("Rate limit exceeded: rule 'prod-rpm' allows 2 requests per minute.")
    assert await used(rl, chat_call(metadata=prod)) == {"prod-rpm": 2, "all-rpm": 2}
    for _ in range(3):  # all-rpm still has its 3: the refusals took nothing from it
        await admit(rl, chat_call())
    error = await refuse(rl, chat_call())
    assert error.message.startswith("Rate limit exceeded: rule 'all-rpm' allows 5 requests per minute.")
    assert await used(rl, chat_call(metadata=prod)) == {"prod-rpm": 2, "all-rpm": 5}


async def test_the_headers_describe_the_most_constrained_rule() -> None:
    doc = rules_doc({"id": "wide", "limit_to": 100, "unit": "requests_per_minute"},
                    {"id": "narrow", "limit_to": 4, "unit": "requests_per_hour"})
    rl = limiter(doc)
    # Room now: the reset is when the whole limit is free again, an hour and a slot (1 min) on.
    assert await admit(rl) == {"x-ratelimit-limit": "4", "x-ratelimit-remaining": "3", "x-ratelimit-reset": "3660"}


async def test_a_call_no_rule_matches_passes_without_headers() -> None:
    rl = limiter(rules_doc({"id": "x", "when": {"models": ["demo/other"]}, "limit_to": 1, "unit": "requests_per_day"}))
    for _ in range(3):
        assert await admit(rl) == {}


# -- buckets per user, model, tenant; when ----------------------------------------------------------------------


async def test_user_and_model_in_the_id_give_one_bucket_each() -> None:
    rl = limiter(rules_doc({"id": "{user}-{model}", "limit_to": 1, "unit": "requests_per_minute"}))
    await admit(rl, chat_call("demo/echo", identity=ALICE))
    error = await refuse(rl, chat_call("demo/echo", identity=ALICE))
    assert error.message.startswith("Rate limit exceeded: rule 'user:alice-demo/echo' allows 1 requests per minute.")
    await admit(rl, chat_call("demo/other", identity=ALICE))
    await admit(rl, chat_call("demo/echo", identity=BOB))
    await refuse(rl, chat_call("demo/echo", identity=BOB))


async def test_a_fixed_id_is_one_bucket_per_tenant() -> None:
    rl = limiter(rules_doc({"id": "shared", "limit_to": 1, "unit": "requests_per_minute"}))
    await admit(rl, chat_call(identity=ALICE))
    await refuse(rl, chat_call(identity=BOB))  # same tenant: the same bucket
    await admit(rl, chat_call(identity=Identity("user:alice", "globex")))


@pytest.mark.parametrize(
    ("when", "matching", "other"),
    [
        ({"subjects": ["user:alice"]}, chat_call(identity=ALICE), chat_call(identity=BOB)),
        ({"models": ["demo/echo"]}, chat_call("demo/echo"), chat_call("demo/other")),
        ({"metadata": {"env": "prod"}}, chat_call(metadata={"env": "prod"}), chat_call(metadata={"env": "dev"})),
        ({"subjects": ["user:alice"], "models": ["demo/echo"]}, chat_call("demo/echo"), chat_call("demo/other")),
    ],
    ids=["subjects", "models", "metadata", "and-ed"],
)
async def test_when_selects_the_calls_a_rule_limits(when: dict[str, Any], matching: ChatCall, other: ChatCall) -> None:
    rl = limiter(rules_doc({"id": "r", "when": when, "limit_to": 1, "unit": "requests_per_minute"}))
    await rl(matching)
    await refuse(rl, chat_call(matching.model, identity=matching.context.identity,
                               metadata=matching.context.metadata))
    for _ in range(3):
        await rl(other)


# -- tokens -----------------------------------------------------------------------------------------------------


def test_the_token_estimate() -> None:
    call = chat_call(content="x" * 40, max_tokens=100)
    assert estimate_tokens(call, 1024) == 10 + 4 + 100
    parts = [{"type": "text", "text": "abcd" * 5}, {"type": "image_url", "image_url": {"url": "http://x"}}]
    call = chat_call(content=parts, max_completion_tokens=7, max_tokens=100, n=2)  # type: ignore[arg-type]
    assert estimate_tokens(call, 1024) == 5 + 4 + 7 * 2
    assert estimate_tokens(chat_call(content="abc"), 1024) == 1 + 4 + 1024


async def test_a_token_reservation_settles_to_the_real_usage() -> None:
    next = Next(result=lambda: completion(total_tokens=10))
    rl = limiter(rules_doc(TPM1000), next=next)
    assert await admit(rl, chat_call(**RESERVE_500)) == {
        "x-ratelimit-limit": "1000", "x-ratelimit-remaining": "500", "x-ratelimit-reset": "61"}
    assert await used(rl, chat_call()) == {"tpm": 10}
    # Used 10 of the 500 reserved: 490 came back.
    assert (await admit(rl, chat_call(**RESERVE_500)))["x-ratelimit-remaining"] == "490"


async def test_a_token_limit_refuses_a_reservation_that_does_not_fit() -> None:
    rl = limiter(rules_doc(TPM1000), next=Next(result=lambda: completion(total_tokens=600)))
    await admit(rl, chat_call(**RESERVE_500))
    error = await refuse(rl, chat_call(**RESERVE_500))
    assert error.message == "Rate limit exceeded: rule 'tpm' allows 1000 tokens per minute. Retry after 61 s."
    assert error.headers["x-ratelimit-remaining"] == "400"
    await admit(rl, chat_call(max_tokens=395))  # 400 fits


async def test_a_reservation_above_the_limit_may_start_on_an_empty_bucket() -> None:
    rl = limiter(rules_doc(TPM1000), next=Next(result=lambda: completion(total_tokens=30)))
    assert (await admit(rl, chat_call(max_tokens=5000)))["x-ratelimit-remaining"] == "0"
    assert await used(rl, chat_call()) == {"tpm": 30}


async def test_a_failed_call_refunds_its_tokens_but_counts_as_a_request() -> None:
    doc = rules_doc(TPM1000, {"id": "rpm", "limit_to": 2, "unit": "requests_per_minute"})
    next = Next(error=UpstreamConnectionError("demo: could not reach the upstream"))
    rl = limiter(doc, next=next)
    with pytest.raises(UpstreamConnectionError) as caught:
        await rl(chat_call(**RESERVE_500))
    assert caught.value.headers == {"x-ratelimit-limit": "1000", "x-ratelimit-remaining": "500",
                                    "x-ratelimit-reset": "61"}
    assert await used(rl, chat_call()) == {"tpm": 0, "rpm": 1}
    next.error = None
    await admit(rl, chat_call(**RESERVE_500))
    error = await refuse(rl, chat_call(**RESERVE_500))
    assert error.message.startswith("Rate limit exceeded: rule 'rpm'")
    assert await used(rl, chat_call()) == {"tpm": 10, "rpm": 2}


async def test_request_rules_leave_streams_unwrapped() -> None:
    stream = Stream(stream_chunks(10))
    rl = limiter(rules_doc(RPM10), next=Next(result=lambda: stream))
    assert await rl(chat_call(stream=True)) is stream


async def test_a_stream_settles_when_it_ends() -> None:
    rl = limiter(rules_doc(TPM1000), next=Next(result=lambda: Stream(stream_chunks(12))))
    stream = await rl(chat_call(stream=True, **RESERVE_500))
    assert await used(rl, chat_call()) == {"tpm": 500}
    chunks = [chunk async for chunk in stream]  # type: ignore[union-attr]
    assert chunks == stream_chunks(12)
    assert await used(rl, chat_call()) == {"tpm": 12}
    await stream.aclose()  # settles once only
    assert await used(rl, chat_call()) == {"tpm": 12}


async def test_a_stream_settles_from_the_assembler_when_the_client_gets_no_usage() -> None:
    inner = Stream(stream_chunks(None), assembler_usage={"prompt_tokens": 5, "completion_tokens": 37,
                                                         "total_tokens": 42})
    rl = limiter(rules_doc(TPM1000), next=Next(result=lambda: inner))
    stream = await rl(chat_call(stream=True, **RESERVE_500))
    assert stream.assembler is inner.assembler  # type: ignore[union-attr]
    async for _ in stream:  # type: ignore[union-attr]
        pass
    assert await used(rl, chat_call()) == {"tpm": 42}


@pytest.mark.parametrize(("assembler_usage", "expected"), [(None, 500), ({"total_tokens": 7}, 7)],
                         ids=["no-usage-yet-keeps-the-reservation", "usage-known"])
async def test_a_stream_closed_early_settles(assembler_usage: dict[str, int] | None, expected: int) -> None:
    inner = Stream(stream_chunks(12), assembler_usage=assembler_usage)
    rl = limiter(rules_doc(TPM1000), next=Next(result=lambda: inner))
    stream = await rl(chat_call(stream=True, **RESERVE_500))
    await anext(aiter(stream))  # type: ignore[arg-type]
    await stream.aclose()
    assert inner.closed
    assert await used(rl, chat_call()) == {"tpm": expected}


async def test_a_stream_that_fails_midway_keeps_its_reservation() -> None:
    class Failing(Stream):
        async def _iterate(self):  # type: ignore[no-untyped-def]
            yield self.chunks[0]
            raise UpstreamStreamError("cut")

    rl = limiter(rules_doc(TPM1000), next=Next(result=lambda: Failing(stream_chunks(12))))
    stream = await rl(chat_call(stream=True, **RESERVE_500))
    with pytest.raises(UpstreamStreamError):
        async for _ in stream:  # type: ignore[union-attr]
            pass
    assert await used(rl, chat_call()) == {"tpm": 500}


# -- tracing off or unsampled ----------------------------------------------------------------------------------


async def test_an_unsampled_check_limits_the_same_and_records_nothing() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rl = RateLimiter(Next(), rules_doc({"id": "r", "limit_to": 1, "unit": "requests_per_minute"}),
                     MemoryBackend(Clock()), tracer=provider.get_tracer("test"))
    assert await admit(rl) == {"x-ratelimit-limit": "1", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "61"}
    await refuse(rl)
    assert exporter.get_finished_spans() == ()


# -- the backend ------------------------------------------------------------------------------------------------


async def test_memory_forgets_buckets_that_count_nothing() -> None:
    clock = Clock(0.0)
    backend = MemoryBackend(clock)
    await backend.consume([Demand("a", 5, 60_000, 1)])
    clock.now = 60.0  # "a" (slot 0) still counts until 61 s
    await backend.consume([Demand("b", 5, 60_000, 1)])
    assert len(backend) == 2
    clock.now = 180.0
    await backend.consume([Demand("b", 5, 60_000, 1)])
    assert len(backend) == 1


async def test_backends_survive_a_reload_one_per_backend_name() -> None:
    backends = Backends()
    first = backends.get(rules_doc(RPM10))
    assert backends.get(rules_doc(RPM10, fail_closed=True)) is first
    await first.consume([Demand("k", 1, 60_000, 1)])
    await backends.aclose()
    assert len(first) == 0  # type: ignore[arg-type]
