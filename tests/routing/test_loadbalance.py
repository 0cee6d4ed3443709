"""``LoadBalancer`` over a scripted next layer, with health recorded by a ``HealthObserver`` under
it and a settable clock: each routing type, ejection and probing, latency learning, fail-over,
retries, and the ``loadBalanceMiddleware`` span."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer
from routing_fakes import (
    Clock,
    FakeSend,
    Outcome,
    chat_call,
    current_span_is_recording,
    finished,
    ok,
    parent_of,
    refused,
    status,
    streams,
    timeout,
    ttft,
)

from otel_gateway.calls import ChatCall, Completion
from otel_gateway.config import LoadBalanceDocument
from otel_gateway.errors import GatewayError, UpstreamStatusError, UpstreamTimeoutError
from otel_gateway.identity import Identity
from otel_gateway.routing.health import HealthObserver, HealthPolicy, HealthRegistry
from otel_gateway.routing.loadbalance import LoadBalancer
from otel_gateway.routing.retry import RetryLayer

A, B, C = "a/gpt-4o", "b/gpt-4o", "c/gpt-4o"


def document(*rules: dict[str, Any]) -> LoadBalanceDocument:
    return LoadBalanceDocument.model_validate({"type": "gateway-load-balancing-config", "rules": list(rules)})


def rule(kind: str, *targets: dict[str, Any], id: str = "gpt4o",
         models: tuple[str, ...] = ("gpt-4o",)) -> dict[str, Any]:
    return {"id": id, "type": f"{kind}-based-routing", "when": {"models": list(models)},
            "load_balance_targets": list(targets)}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> HealthRegistry:
    return HealthRegistry(HealthPolicy(failure_threshold=3, cooldown=30, max_cooldown=300), clock=clock)


async def _no_wait(seconds: float) -> None:
    pass


class Setup:
    def __init__(self, health: HealthRegistry, clock: Clock, tracer: Tracer | None = None) -> None:
        self.health, self.clock, self.tracer = health, clock, tracer

    def __call__(self, doc: LoadBalanceDocument, script: dict[str, Outcome | list[Outcome]],
                 took: dict[str, float] | None = None, seed: int = 1) -> tuple[LoadBalancer, FakeSend]:
        send = FakeSend(script, tracer=self.tracer, clock=self.clock, took=took)
        retried = RetryLayer(HealthObserver(send, self.health), rng=random.Random(seed), sleep=_no_wait)
        balancer = LoadBalancer(retried, doc, health=self.health, tracer=self.tracer, rng=random.Random(seed))
        return balancer, send


@pytest.fixture
def setup(health: HealthRegistry, clock: Clock) -> Setup:
    return Setup(health, clock)


@pytest.fixture
def tracer(tracer_provider: TracerProvider) -> Tracer:
    return tracer_provider.get_tracer("test")


@pytest.fixture
def traced(health: HealthRegistry, clock: Clock, tracer: Tracer) -> Setup:
    return Setup(health, clock, tracer)


async def run(balancer: LoadBalancer, times: int, model: str = "gpt-4o") -> None:
    for _ in range(times):
        await balancer(chat_call(model))


# -- matching -----------------------------------------------------------------------------------------------------


async def test_no_matching_rule_passes_the_call_through(traced: Setup, span_exporter: InMemorySpanExporter) -> None:
    balancer, send = traced(document(rule("weight", {"target": A, "weight": 100})), {"x/other": ok()})
    call = chat_call("x/other")
    await balancer(call)
    assert send.calls == [call]
    assert [span.name for span in span_exporter.get_finished_spans()] == ["chatCompletions"]


async def test_the_first_matching_rule_wins(setup: Setup) -> None:
    doc = document(rule("weight", {"target": A, "weight": 100}, id="first", models=("gpt-4o", "fast")),
                   rule("weight", {"target": B, "weight": 100}, id="second", models=("fast",)))
    balancer, send = setup(doc, {A: ok(), B: ok()})
    await balancer(chat_call("fast"))
    assert send.models == [A]


async def test_the_target_gets_its_override_params_and_the_request_stays(setup: Setup) -> None:
    doc = document(rule("weight", {"target": A, "weight": 100, "override_params": {"max_tokens": 512}}))
    balancer, send = setup(doc, {A: ok()})
    call = chat_call("gpt-4o", max_tokens=20)
    await balancer(call)
    (sent,) = send.calls
    assert (sent.model, sent.param("max_tokens"), sent.requested_model) == (A, 512, "gpt-4o")
    assert call.body["max_tokens"] == 20
    assert sent.body is call.body


# -- weight-based -------------------------------------------------------------------------------------------------


async def test_weights_over_a_thousand_calls(setup: Setup) -> None:
    doc = document(rule("weight", {"target": A, "weight": 70}, {"target": B, "weight": 20},
                        {"target": C, "weight": 10}))
    balancer, send = setup(doc, {A: ok(), B: ok(), C: ok()}, seed=20240601)
    await run(balancer, 1000)
    shares = {model: count / 10 for model, count in Counter(send.models).items()}
    assert shares.keys() == {A, B, C}
    assert abs(shares[A] - 70) <= 5
    assert abs(shares[B] - 20) <= 5
    assert abs(shares[C] - 10) <= 5


async def test_a_zero_weight_is_never_chosen(setup: Setup) -> None:
    doc = document(rule("weight", {"target": A, "weight": 100}, {"target": B, "weight": 0}))
    balancer, send = setup(doc, {A: ok(), B: ok()})
    await run(balancer, 200)
    assert set(send.models) == {A}


# -- priority-based -----------------------------------------------------------------------------------------------


async def test_priority_takes_the_lowest_number(setup: Setup) -> None:
    doc = document(rule("priority", {"target": A, "priority": 2}, {"target": B, "priority": 0},
                        {"target": C, "priority": 1}))
    balancer, send = setup(doc, {A: ok(), B: ok(), C: ok()})
    await run(balancer, 20)
    assert set(send.models) == {B}


async def test_priority_ties_take_turns(setup: Setup) -> None:
    doc = document(rule("priority", {"target": A, "priority": 0}, {"target": B, "priority": 0},
                        {"target": C, "priority": 1}))
    balancer, send = setup(doc, {A: ok(), B: ok(), C: ok()})
    await run(balancer, 6)
    assert send.models == [A, B, A, B, A, B]


async def test_priority_ties_by_weight(setup: Setup) -> None:
    doc = document(rule("priority", {"target": A, "priority": 0, "weight": 90},
                        {"target": B, "priority": 0, "weight": 10}, {"target": C, "priority": 1, "weight": 100}))
    balancer, send = setup(doc, {A: ok(), B: ok(), C: ok()}, seed=3)
    await run(balancer, 1000)
    counts = Counter(send.models)
    assert counts[C] == 0
    assert abs(counts[A] / 10 - 90) <= 5


async def test_priority_moves_down_while_the_first_is_ejected_and_back_after_the_probe(
    setup: Setup, clock: Clock
) -> None:
    doc = document(rule("priority", {"target": A, "priority": 0}, {"target": B, "priority": 1}))
    balancer, send = setup(doc, {A: [status(500)] * 3 + [ok()], B: ok()})
    for _ in range(3):
        with pytest.raises(UpstreamStatusError):
            await balancer(chat_call())
    await run(balancer, 5)
    assert send.models == [A, A, A, B, B, B, B, B]
    clock.advance(30)
    await run(balancer, 3)
    assert send.models[8:] == [A, A, A]  # the probe succeeded: restored


# -- ejection -----------------------------------------------------------------------------------------------------


async def test_a_failing_target_is_cooled_down_and_its_traffic_moves_then_a_probe_brings_it_back(
    setup: Setup, clock: Clock, health: HealthRegistry
) -> None:
    doc = document(rule("weight", {"target": A, "weight": 50, "fallback_status_codes": [500]},
                        {"target": B, "weight": 50, "fallback_status_codes": [500]}))
    balancer, send = setup(doc, {A: status(500), B: ok()})
    await run(balancer, 100)  # every call answered: A's failures fail over to B
    assert Counter(send.models) == {A: 3, B: 100}
    assert health.ejected(A)

    clock.advance(30)  # half-open: the next call that picks A is its probe, and it fails again
    sent = len(send.calls)
    await run(balancer, 100)
    assert Counter(send.models[sent:]) == {A: 1, B: 100}

    send._script[A] = [ok()]  # A recovers
    clock.advance(60)  # the second ejection lasts twice as long
    sent = len(send.calls)
    await run(balancer, 100)
    counts = Counter(send.models[sent:])
    assert counts[A] + counts[B] == 100
    assert 35 <= counts[A] <= 65
    assert not health.ejected(A)


async def test_when_every_target_is_ejected_all_get_traffic(setup: Setup, health: HealthRegistry) -> None:
    doc = document(rule("weight", {"target": A, "weight": 50}, {"target": B, "weight": 50}))
    balancer, send = setup(doc, {A: status(503), B: status(503)})
    for _ in range(20):
        with pytest.raises(UpstreamStatusError):
            await balancer(chat_call())
    assert health.ejected(A) and health.ejected(B)
    sent = len(send.calls)
    for _ in range(20):
        with pytest.raises(UpstreamStatusError):
            await balancer(chat_call())
    assert set(send.models[sent:]) == {A, B}


# -- latency-based ------------------------------------------------------------------------------------------------


async def test_latency_learns_each_target_then_sends_traffic_to_the_fastest(setup: Setup) -> None:
    doc = document(rule("latency", {"target": A}, {"target": B}, {"target": C}))
    balancer, send = setup(doc, {A: ok(10), B: ok(10), C: ok(10)}, took={A: 3.0, B: 1.0, C: 2.0})
    await run(balancer, 9)
    assert Counter(send.models) == {A: 3, B: 3, C: 3}
    await run(balancer, 50)
    assert set(send.models[9:]) == {B}


async def test_latency_spreads_over_targets_within_a_fifth_of_the_fastest(setup: Setup) -> None:
    doc = document(rule("latency", {"target": A}, {"target": B}, {"target": C}))
    balancer, send = setup(doc, {A: ok(10), B: ok(10), C: ok(10)}, took={A: 1.15, B: 1.0, C: 1.3})
    await run(balancer, 9)
    await run(balancer, 100)
    counts = Counter(send.models[9:])
    assert counts[C] == 0
    assert counts[A] > 30 and counts[B] > 30


async def test_latency_moves_traffic_when_the_fastest_slows_down(setup: Setup, clock: Clock) -> None:
    doc = document(rule("latency", {"target": A}, {"target": B}))
    balancer, send = setup(doc, {A: ok(10), B: ok(10)}, took={A: 1.0, B: 2.0})
    await run(balancer, 6)
    await run(balancer, 5)
    assert send.models[6:] == [A] * 5
    send._took[A] = 10.0  # A's recent samples (window 10) get worse
    await run(balancer, 10)
    assert send.models[-5:] == [B] * 5


async def test_latency_relearns_a_target_whose_samples_grew_old(setup: Setup, clock: Clock) -> None:
    doc = document(rule("latency", {"target": A}, {"target": B}))
    balancer, send = setup(doc, {A: ok(10), B: ok(10)}, took={A: 1.0, B: 2.0})
    await run(balancer, 6)
    await run(balancer, 5)
    clock.advance(300)  # older than sample_ttl
    sent = len(send.calls)
    await run(balancer, 6)
    assert Counter(send.models[sent:]) == {A: 3, B: 3}


async def test_latency_learns_a_target_whose_answers_carry_no_usage(setup: Setup) -> None:
    """B sends no usage (some OpenAI-compatible servers do not); it is still measured, and slower."""

    def no_usage(call: ChatCall) -> Completion:
        return Completion({"id": "c1", "object": "chat.completion", "model": call.model, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello there friend"}, "finish_reason": "stop"}]})

    doc = document(rule("latency", {"target": A}, {"target": B}))
    balancer, send = setup(doc, {A: ok(10), B: no_usage}, took={A: 1.0, B: 5.0})
    await run(balancer, 50)
    assert Counter(send.models) == {A: 47, B: 3}


# -- fail-over ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("failure", "fails_over"), [
    pytest.param(status(500), True, id="listed-500"),
    pytest.param(status(429), True, id="listed-429"),
    pytest.param(status(503), False, id="unlisted-503"),
    pytest.param(status(400), False, id="unlisted-400"),
    pytest.param(timeout(), True, id="timeout"),
    pytest.param(refused(), True, id="connection-error"),
    pytest.param(ttft(), True, id="ttft-408"),
])
async def test_which_failures_fail_over(setup: Setup, failure: Outcome, fails_over: bool) -> None:
    doc = document(rule("priority", {"target": A, "priority": 0, "fallback_status_codes": [429, 500]},
                        {"target": B, "priority": 1}))
    balancer, send = setup(doc, {A: failure, B: ok()})
    if fails_over:
        await balancer(chat_call())
        assert send.models == [A, B]
    else:
        with pytest.raises(GatewayError):
            await balancer(chat_call())
        assert send.models == [A]


@pytest.mark.parametrize(("kind", "targets", "order"), [
    pytest.param("weight", [{"target": A, "weight": 100}, {"target": B, "weight": 0}, {"target": C, "weight": 0}],
                 [A, B, C], id="weight-rule-order"),
    pytest.param("priority", [{"target": C, "priority": 2}, {"target": A, "priority": 0},
                              {"target": B, "priority": 1}], [A, B, C], id="priority-order"),
], )
async def test_fail_over_order(setup: Setup, kind: str, targets: list[dict[str, Any]], order: list[str]) -> None:
    for target in targets:
        target["fallback_status_codes"] = [500]
    balancer, send = setup(document(rule(kind, *targets)), {A: status(500), B: status(500), C: ok()})
    await balancer(chat_call())
    assert send.models == order


async def test_fail_over_skips_non_candidates_and_raises_the_last_error(setup: Setup) -> None:
    doc = document(rule("priority", {"target": A, "priority": 0, "fallback_status_codes": [500, 502]},
                        {"target": B, "priority": 1, "fallback_candidate": False},
                        {"target": C, "priority": 2, "fallback_status_codes": [500]}))
    balancer, send = setup(doc, {A: status(500), B: ok(), C: status(502)})
    with pytest.raises(UpstreamStatusError) as raised:
        await balancer(chat_call())
    assert raised.value.upstream_status == 502
    assert send.models == [A, C]


async def test_fail_over_skips_ejected_targets(setup: Setup, health: HealthRegistry) -> None:
    doc = document(rule("priority", {"target": A, "priority": 0, "fallback_status_codes": [500]},
                        {"target": B, "priority": 1}, {"target": C, "priority": 2}))
    balancer, send = setup(doc, {A: status(500), B: ok(), C: ok()})
    for _ in range(3):
        health.begin(B).failed()
    await balancer(chat_call())
    assert send.models == [A, C]


async def test_latency_fail_over_goes_fastest_first(setup: Setup) -> None:
    doc = document(rule("latency", *({"target": t, "fallback_status_codes": [500]} for t in (A, B, C))))
    balancer, send = setup(doc, {A: ok(10), B: ok(10), C: ok(10)}, took={A: 1.0, B: 3.0, C: 2.0})
    await run(balancer, 9)
    send._script[A] = [status(500)]
    sent = len(send.calls)
    await balancer(chat_call())
    assert send.models[sent:] == [A, C]


async def test_retries_a_target_before_failing_over(setup: Setup) -> None:
    retry = {"attempts": 3, "delay": 0, "on_status_codes": [503]}
    doc = document(rule("priority", {"target": A, "priority": 0, "retry_config": retry, "fallback_status_codes": [503]},
                        {"target": B, "priority": 1}))
    balancer, send = setup(doc, {A: [status(503), status(503), ok()], B: ok()})
    await balancer(chat_call())
    assert send.models == [A, A, A]
    balancer, send = setup(doc, {A: status(503), B: ok()})
    await balancer(chat_call())
    assert send.models == [A, A, A, B]


async def test_no_fail_over_once_the_deadline_cut_the_retries(setup: Setup) -> None:
    retry = {"attempts": 5, "delay": 60_000, "on_status_codes": [503]}
    doc = document(rule("priority", {"target": A, "priority": 0, "retry_config": retry, "fallback_status_codes": [503]},
                        {"target": B, "priority": 1}))
    balancer, send = setup(doc, {A: status(503), B: ok()}, seed=2)
    deadline = asyncio.get_running_loop().time() + 0.5  # shorter than any wait but the very shortest
    with pytest.raises(UpstreamTimeoutError) as raised:
        await balancer(chat_call(deadline=deadline))
    assert (raised.value.status, raised.value.code) == (504, "request_timeout")
    assert send.models == [A]


async def test_a_stream_fails_over_only_before_its_first_chunk(setup: Setup) -> None:
    doc = document(rule("priority", {"target": A, "priority": 0}, {"target": B, "priority": 1}))
    balancer, send = setup(doc, {A: [ttft(), streams(3, fail_after=1)], B: streams(3)})
    stream = await balancer(chat_call(stream=True))
    assert [chunk["model"] async for chunk in stream] == [B, B, B]
    stream = await balancer(chat_call(stream=True))
    with pytest.raises(GatewayError):
        async for _ in stream:
            pass
    assert send.models == [A, B, A]


# -- spans ----------------------------------------------------------------------------------------------------------


def lb_attributes(resolved: str, tenant: str = "acme") -> dict[str, Any]:
    return {
        "load_balance.http.url": "/v1/chat/completions",
        "load_balance.http.method": "POST",
        "user.tenantName": tenant,
        "load_balance.requested_model": "gpt-4o",
        "load_balance.resolved_model": resolved,
    }


async def test_span_attributes_and_nesting(traced: Setup, span_exporter: InMemorySpanExporter) -> None:
    doc = document(rule("weight", {"target": A, "weight": 100}))
    balancer, _ = traced(doc, {A: ok()})
    await balancer(chat_call(identity=Identity("team:ml", "research")))
    spans = list(span_exporter.get_finished_spans())
    (balanced,) = finished(span_exporter, "loadBalanceMiddleware")
    (attempt,) = finished(span_exporter, "chatCompletions")
    assert dict(balanced.attributes or {}) == lb_attributes(A, tenant="research")
    assert parent_of(attempt, spans) is balanced
    assert balanced.status.status_code == StatusCode.UNSET


@pytest.mark.parametrize(("kind", "targets", "took", "resolved"), [
    pytest.param("weight", [{"target": A, "weight": 0}, {"target": B, "weight": 100}], {}, B, id="weight-based"),
    pytest.param("latency", [{"target": A}, {"target": B}], {A: 2.0, B: 1.0}, B, id="latency-based"),
    pytest.param("priority", [{"target": A, "priority": 1}, {"target": B, "priority": 0}], {}, B,
                 id="priority-based"),
])
async def test_the_span_of_each_routing_type(
    traced: Setup, span_exporter: InMemorySpanExporter, kind: str, targets: list[dict[str, Any]],
    took: dict[str, float], resolved: str,
) -> None:
    balancer, send = traced(document(rule(kind, *targets)), {A: ok(10), B: ok(10)}, took=took)
    await run(balancer, 6)  # latency-based: three samples of each target to learn them
    span_exporter.clear()
    await balancer(chat_call())
    assert send.models[-1] == resolved
    spans = list(span_exporter.get_finished_spans())
    assert sorted(s.name for s in spans) == ["chatCompletions", "loadBalanceMiddleware"]
    (balanced,) = finished(span_exporter, "loadBalanceMiddleware")
    (attempt,) = finished(span_exporter, "chatCompletions")
    assert dict(balanced.attributes or {}) == lb_attributes(resolved)
    assert parent_of(attempt, spans) is balanced
    assert balanced.status.status_code == StatusCode.UNSET


async def test_retry_then_success_spans(traced: Setup, span_exporter: InMemorySpanExporter) -> None:
    retry = {"attempts": 2, "delay": 100, "on_status_codes": [503]}
    doc = document(rule("priority", {"target": A, "priority": 0, "retry_config": retry, "fallback_status_codes": [503]},
                        {"target": B, "priority": 1}))
    balancer, send = traced(doc, {A: [status(503), ok()], B: ok()})
    result = await balancer(chat_call())
    assert isinstance(result, Completion)
    assert send.models == [A, A]
    spans = list(span_exporter.get_finished_spans())
    assert finished(span_exporter, "fallbackRequest") == []
    (balanced,) = finished(span_exporter, "loadBalanceMiddleware")
    first, second = finished(span_exporter, "chatCompletions")
    assert dict(balanced.attributes or {}) == lb_attributes(A)
    assert balanced.status.status_code == StatusCode.UNSET
    assert [parent_of(s, spans) for s in (first, second)] == [balanced, balanced]
    assert [s.status.status_code for s in (first, second)] == [StatusCode.ERROR, StatusCode.UNSET]
    waited = round(random.Random(1).uniform(0, 0.1) * 1000)  # the retry layer's first draw (seed 1)
    assert [(event.name, dict(event.attributes or {})) for event in balanced.events] == [
        ("retry", {"retry.attempt": 2, "retry.delay_ms": waited, "retry.model": A, "error.type": "503"})]


async def test_fail_over_attempts_get_a_fallback_span(traced: Setup, span_exporter: InMemorySpanExporter) -> None:
    doc = document(rule("priority", {"target": A, "priority": 0, "fallback_status_codes": [500]},
                        {"target": B, "priority": 1, "override_params": {"temperature": 0.1, "max_tokens": 64}}))
    balancer, _ = traced(doc, {A: status(500), B: ok()})
    await balancer(chat_call())
    spans = list(span_exporter.get_finished_spans())
    (balanced,) = finished(span_exporter, "loadBalanceMiddleware")
    (fallback,) = finished(span_exporter, "fallbackRequest")
    first, second = finished(span_exporter, "chatCompletions")
    assert dict(balanced.attributes or {}) == lb_attributes(A)
    assert dict(fallback.attributes or {}) == {
        "fallback.http.url": "/v1/chat/completions",
        "fallback.http.method": "POST",
        "fallback.requested_model": A,
        "fallback.resolved_model": B,
        "fallback.config_id": "gpt4o",
        "fallback.max_tokens": 64,
        "fallback.temperature": 0.1,
    }
    assert [parent_of(s, spans) for s in (first, fallback, second)] == [balanced, balanced, fallback]


async def test_the_span_fails_with_the_call(traced: Setup, span_exporter: InMemorySpanExporter) -> None:
    balancer, _ = traced(document(rule("weight", {"target": A, "weight": 100})), {A: status(502)})
    with pytest.raises(UpstreamStatusError):
        await balancer(chat_call())
    (balanced,) = finished(span_exporter, "loadBalanceMiddleware")
    assert balanced.status.status_code == StatusCode.ERROR
    assert balanced.status.description == "p: failing with 502"


async def test_the_span_of_a_stream_ends_with_the_stream(traced: Setup, span_exporter: InMemorySpanExporter) -> None:
    balancer, _ = traced(document(rule("weight", {"target": A, "weight": 100})), {A: streams(2)})
    stream = await balancer(chat_call(stream=True))
    assert finished(span_exporter, "loadBalanceMiddleware") == []
    assert len([chunk async for chunk in stream]) == 2
    (balanced,) = finished(span_exporter, "loadBalanceMiddleware")
    assert dict(balanced.attributes or {}) == lb_attributes(A)


async def test_without_a_tracer_no_span_work() -> None:
    seen: list[bool] = []

    async def send(call: ChatCall) -> Completion:
        seen.append(current_span_is_recording())
        return Completion({})

    health = HealthRegistry()
    balancer = LoadBalancer(send, document(rule("weight", {"target": A, "weight": 100})), health=health)
    await balancer(chat_call())
    assert seen == [False]


async def test_retries_run_below_fallback_so_a_fallback_chain_is_not_repeated(health: HealthRegistry) -> None:
    from otel_gateway.config import FallbackDocument
    from otel_gateway.routing.fallback import Fallback

    send = FakeSend({A: status(503), C: ok()})
    fallback = FallbackDocument.model_validate({"type": "gateway-fallback-config", "rules": [
        {"id": "a-to-c", "when": {"models": [A]}, "fallback_models": [{"target": C}]}]})
    retry = {"attempts": 3, "delay": 0, "on_status_codes": [503]}
    chain = LoadBalancer(
        Fallback(RetryLayer(HealthObserver(send, health), sleep=_no_wait), fallback),
        document(rule("weight", {"target": A, "weight": 100, "retry_config": retry})), health=health)
    await chain(chat_call())
    assert send.models == [A, A, A, C]
