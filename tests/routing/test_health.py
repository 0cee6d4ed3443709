"""Target health: ejection after consecutive failures, growing cooldowns, the half-open probe,
latency samples; and ``HealthObserver`` recording real attempts, streams included."""

from __future__ import annotations

import pytest
from routing_fakes import (
    Clock,
    FakeSend,
    Outcome,
    chat_call,
    ok,
    refused,
    status,
    streams,
    timeout,
    ttft,
    unknown_model,
)

from otel_gateway.calls import ChatCall, Completion
from otel_gateway.errors import GatewayError, UpstreamStreamError
from otel_gateway.routing.health import HealthObserver, HealthPolicy, HealthRegistry, LatencyStats

T = "a/m"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> HealthRegistry:
    return HealthRegistry(HealthPolicy(failure_threshold=3, cooldown=30, max_cooldown=120), clock=clock)


def fail(health: HealthRegistry, times: int = 1, target: str = T) -> None:
    for _ in range(times):
        health.begin(target).failed()


def test_unknown_target_is_available(health: HealthRegistry) -> None:
    assert health.available(T)
    assert not health.ejected(T)
    assert health.latency(T) == LatencyStats(recent=0, per_token=None, total=0)


def test_consecutive_failures_eject_for_the_cooldown(health: HealthRegistry, clock: Clock) -> None:
    fail(health, 2)
    assert health.available(T)
    fail(health)
    assert (health.available(T), health.ejected(T)) == (False, True)
    clock.advance(29.9)
    assert not health.available(T)
    clock.advance(0.1)
    assert health.available(T)  # half-open
    assert health.ejected(T)


def test_a_success_between_failures_starts_the_count_over(health: HealthRegistry) -> None:
    fail(health, 2)
    health.begin(T).succeeded(10)
    fail(health, 2)
    assert health.available(T)
    fail(health)
    assert not health.available(T)


def test_a_client_error_answer_is_no_failure(health: HealthRegistry) -> None:
    fail(health, 2)
    health.begin(T).succeeded(None)  # e.g. a 400: the upstream answered
    fail(health, 2)
    assert health.available(T)
    assert health.latency(T).total == 0


def test_half_open_lets_one_probe_through_and_its_success_restores(health: HealthRegistry, clock: Clock) -> None:
    fail(health, 3)
    clock.advance(30)
    probe = health.begin(T)
    assert (probe.trial, probe.probe) == (True, True)
    assert not health.available(T)  # the probe is under way
    probe.succeeded(10)
    assert (health.available(T), health.ejected(T)) == (True, False)
    fail(health, 2)
    assert health.available(T)  # the count started over


@pytest.mark.parametrize(("failures", "cooldowns"), [
    pytest.param(1, [30], id="first-ejection-30s"),
    pytest.param(2, [30, 60], id="failed-probe-doubles"),
    pytest.param(4, [30, 60, 120, 120], id="capped-at-max"),
])
def test_a_failed_probe_ejects_again_for_longer(
    health: HealthRegistry, clock: Clock, failures: int, cooldowns: list[int]
) -> None:
    fail(health, 3)
    observed = []
    for _ in range(failures - 1):
        started = clock.now
        while not health.available(T):
            clock.advance(1)
        observed.append(clock.now - started)
        fail(health)  # the probe
    started = clock.now
    while not health.available(T):
        clock.advance(1)
    observed.append(clock.now - started)
    assert observed == cooldowns


def test_ejections_start_over_after_a_long_healthy_spell(health: HealthRegistry, clock: Clock) -> None:
    fail(health, 3)
    clock.advance(30)
    fail(health)  # probe fails: 60 s
    clock.advance(60)
    health.begin(T).succeeded(10)
    clock.advance(60)
    fail(health, 3)  # soon after: 120 s
    clock.advance(119)
    assert not health.available(T)
    clock.advance(1)
    health.begin(T).succeeded(10)
    clock.advance(120)  # healthy for max_cooldown
    fail(health, 3)
    clock.advance(30)
    assert health.available(T)


def test_an_abandoned_probe_frees_the_slot(health: HealthRegistry, clock: Clock) -> None:
    fail(health, 3)
    clock.advance(30)
    health.begin(T).abandoned()
    assert health.available(T)
    assert health.ejected(T)


def test_a_failure_of_forced_traffic_while_cooling_changes_nothing(health: HealthRegistry, clock: Clock) -> None:
    fail(health, 3)
    forced = health.begin(T)  # every target of a rule is ejected: traffic goes to them anyway
    assert (forced.trial, forced.probe) == (True, False)
    forced.failed()
    clock.advance(30)
    assert health.available(T)


def test_a_success_of_forced_traffic_while_cooling_restores(health: HealthRegistry) -> None:
    fail(health, 3)
    health.begin(T).succeeded(5)
    assert (health.available(T), health.ejected(T)) == (True, False)


def test_an_attempt_from_before_the_ejection_does_not_restore(health: HealthRegistry) -> None:
    in_flight = health.begin(T)
    fail(health, 3)
    in_flight.succeeded(10)
    assert health.ejected(T)
    assert not health.available(T)


def test_only_the_first_outcome_of_a_lease_counts(health: HealthRegistry) -> None:
    lease = health.begin(T)
    lease.failed()
    lease.failed()
    lease.succeeded(1)
    fail(health, 1)
    assert health.available(T)
    fail(health, 1)
    assert not health.available(T)
    assert health.latency(T).total == 0


def test_latency_is_the_recent_mean_time_per_output_token(clock: Clock) -> None:
    health = HealthRegistry(HealthPolicy(window=3, sample_ttl=60), clock=clock)
    for seconds, tokens in [(1.0, 10), (2.0, 10), (3.0, 10), (0.4, 4)]:
        lease = health.begin(T)
        clock.advance(seconds)
        lease.succeeded(tokens)
    assert health.latency(T) == LatencyStats(recent=3, per_token=pytest.approx(0.2), total=4)
    clock.advance(59.6)
    lease = health.begin(T)
    clock.advance(0.2)
    lease.succeeded(10)
    # kept: 0.3 (now older than 60 s), 0.1, 0.02
    assert health.latency(T) == LatencyStats(recent=2, per_token=pytest.approx(0.06), total=5)


# -- the observer over real attempts ----------------------------------------------------------------------------


def observer(script: dict[str, Outcome | list[Outcome]], health: HealthRegistry, clock: Clock,
             took: float = 2.0) -> tuple[HealthObserver, FakeSend]:
    send = FakeSend(script, clock=clock, took={T: took})
    return HealthObserver(send, health), send


@pytest.mark.parametrize("failure", [
    pytest.param(status(500), id="status-500"),
    pytest.param(status(503), id="status-503"),
    pytest.param(status(429), id="status-429"),
    pytest.param(timeout(), id="timeout"),
    pytest.param(refused(), id="connection-refused"),
    pytest.param(ttft(), id="ttft-408"),
])
async def test_observer_counts_upstream_failures(health: HealthRegistry, clock: Clock, failure: Outcome) -> None:
    observe, _ = observer({T: failure}, health, clock)
    for _ in range(3):
        with pytest.raises(GatewayError):
            await observe(chat_call(T))
    assert not health.available(T)


@pytest.mark.parametrize("failure", [
    pytest.param(status(400), id="status-400"),
    pytest.param(status(404), id="status-404"),
    pytest.param(unknown_model(), id="model-not-found"),
])
async def test_observer_does_not_blame_the_target_for_the_request(
    health: HealthRegistry, clock: Clock, failure: Outcome
) -> None:
    observe, _ = observer({T: failure}, health, clock)
    for _ in range(5):
        with pytest.raises(GatewayError):
            await observe(chat_call(T))
    assert health.available(T)


async def test_observer_samples_a_completion(health: HealthRegistry, clock: Clock) -> None:
    observe, send = observer({T: ok(output_tokens=8)}, health, clock)
    await observe(chat_call(T))
    assert send.models == [T]
    assert health.latency(T) == LatencyStats(recent=1, per_token=0.25, total=1)


async def test_observer_samples_a_completion_without_usage_from_its_text(health: HealthRegistry, clock: Clock) -> None:
    """An OpenAI-compatible server may send no usage; the answer still yields a sample, or latency
    routing would keep the target "learning" and send it traffic first for ever."""

    def no_usage(call: ChatCall) -> Completion:
        return Completion({"id": "c1", "object": "chat.completion", "model": call.model, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x" * 30}, "finish_reason": "stop"}]})

    observe, _ = observer({T: no_usage}, health, clock)
    await observe(chat_call(T))
    assert health.latency(T) == LatencyStats(recent=1, per_token=0.25, total=1)  # 2 s / ceil(30 / 4) tokens


async def test_observer_samples_a_stream_when_it_ends(health: HealthRegistry, clock: Clock) -> None:
    observe, _ = observer({T: streams(4)}, health, clock)
    stream = await observe(chat_call(T, stream=True))
    assert health.latency(T).total == 0
    chunks = [chunk async for chunk in stream]
    assert len(chunks) == 4
    assert health.latency(T).total == 0  # a stream without an assembler has no token count
    assert health.available(T)


async def test_observer_samples_an_upstream_stream_from_its_usage(health: HealthRegistry, clock: Clock) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    observe, _ = observer({T: streams(4, usage=usage)}, health, clock)
    stream = await observe(chat_call(T, stream=True))
    assert stream.assembler.chunk_count == 5  # type: ignore[union-attr]  # passed through from the upstream's
    async for _ in stream:
        clock.advance(1)
    assert health.latency(T) == LatencyStats(recent=1, per_token=1.5, total=1)  # (2 s + 4 s) / 4 tokens


async def test_observer_counts_a_stream_cut_midway_as_a_failure(health: HealthRegistry, clock: Clock) -> None:
    observe, _ = observer({T: streams(4, fail_after=2)}, health, clock)
    for _ in range(3):
        stream = await observe(chat_call(T, stream=True))
        with pytest.raises(UpstreamStreamError):
            async for _ in stream:
                pass
    assert not health.available(T)


async def test_observer_releases_a_probe_whose_stream_the_client_left(health: HealthRegistry, clock: Clock) -> None:
    fail(health, 3)
    clock.advance(30)
    observe, _ = observer({T: streams(4)}, health, clock)
    stream = await observe(chat_call(T, stream=True))
    assert not health.available(T)
    await anext(aiter(stream))
    await stream.aclose()
    assert health.available(T)
    assert health.ejected(T)
