"""``Fallback`` over a scripted next layer: which failures fall back, to what, with which params,
the ``fallbackRequest`` spans, streams before and after their first chunk, the deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer
from routing_fakes import (
    FakeSend,
    Outcome,
    Stream,
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
    unknown_model,
)

from otel_gateway.calls import ChatCall, Completion
from otel_gateway.config import FallbackDocument
from otel_gateway.errors import GatewayError, UpstreamStatusError, UpstreamStreamError, UpstreamTimeoutError
from otel_gateway.identity import Identity
from otel_gateway.routing.fallback import Fallback

PRIMARY, SECOND, THIRD = "oai/gpt-4o", "claude/sonnet", "mistral/large"


def document(*rules: dict[str, Any]) -> FallbackDocument:
    return FallbackDocument.model_validate({"type": "gateway-fallback-config", "rules": list(rules)})


RULE = {
    "id": "gpt4o-out",
    "when": {"models": [PRIMARY]},
    "fallback_models": [{"target": SECOND, "override_params": {"temperature": 0.2}}, {"target": THIRD}],
}


@pytest.fixture
def tracer(tracer_provider: TracerProvider) -> Tracer:
    return tracer_provider.get_tracer("test")


def attributes(resolved: str, **extra: Any) -> dict[str, Any]:
    return {
        "fallback.http.url": "/v1/chat/completions",
        "fallback.http.method": "POST",
        "fallback.requested_model": PRIMARY,
        "fallback.resolved_model": resolved,
        "fallback.config_id": "gpt4o-out",
        **extra,
    }


async def test_no_matching_rule_passes_the_call_through() -> None:
    send = FakeSend({"other/m": status(500)})
    call = chat_call("other/m")
    with pytest.raises(UpstreamStatusError):
        await Fallback(send, document(RULE))(call)
    assert send.calls == [call]


async def test_a_primary_success_opens_no_span(tracer: Tracer, span_exporter: InMemorySpanExporter) -> None:
    send = FakeSend({PRIMARY: ok()}, tracer=tracer)
    call = chat_call(PRIMARY)
    assert isinstance(await Fallback(send, document(RULE), tracer=tracer)(call), Completion)
    assert send.calls == [call]
    assert [span.name for span in span_exporter.get_finished_spans()] == ["chatCompletions"]


@pytest.mark.parametrize("failure", [
    pytest.param(status(500), id="status-500"),
    pytest.param(timeout(), id="timeout"),
    pytest.param(refused(), id="connection-refused"),
    pytest.param(ttft(), id="ttft-408"),
])
async def test_falls_back_with_a_span_parent_of_the_attempt(
    tracer: Tracer, span_exporter: InMemorySpanExporter, failure: Outcome
) -> None:
    send = FakeSend({PRIMARY: failure, SECOND: ok()}, tracer=tracer)
    call = chat_call(PRIMARY, max_tokens=100)
    result = await Fallback(send, document(RULE), tracer=tracer)(call)
    assert isinstance(result, Completion)
    assert result.data["model"] == SECOND
    assert send.models == [PRIMARY, SECOND]
    spans = list(span_exporter.get_finished_spans())
    (fallback,) = finished(span_exporter, "fallbackRequest")
    assert dict(fallback.attributes or {}) == attributes(SECOND, **{"fallback.max_tokens": 100,
                                                                    "fallback.temperature": 0.2})
    primary_attempt, fallback_attempt = finished(span_exporter, "chatCompletions")
    assert parent_of(fallback_attempt, spans) is fallback
    assert parent_of(primary_attempt, spans) is None
    assert fallback.status.status_code == StatusCode.UNSET


async def test_the_original_request_is_never_changed() -> None:
    send = FakeSend({PRIMARY: status(503), SECOND: ok()})
    call = chat_call(PRIMARY, temperature=0.9)
    body = dict(call.body)
    await Fallback(send, document(RULE))(call)
    primary, second = send.calls
    assert primary is call
    assert (second.model, second.param("temperature"), dict(second.overrides)) == (SECOND, 0.2, {"temperature": 0.2})
    assert dict(call.body) == body
    assert second.body is call.body


@pytest.mark.parametrize(("codes", "failure", "falls_back"), [
    pytest.param(None, status(500), True, id="default-500"),
    pytest.param(None, status(503), True, id="default-503"),
    pytest.param(None, status(429), True, id="default-429"),
    pytest.param(None, status(400), False, id="default-not-400"),
    pytest.param(None, status(401), False, id="default-not-401"),
    pytest.param(None, unknown_model(), False, id="default-not-model-not-found"),
    pytest.param([429], status(429), True, id="listed-429"),
    pytest.param([429], status(500), False, id="unlisted-500"),
    pytest.param([401], status(401), True, id="listed-401"),
    pytest.param([429], ttft(), True, id="ttft-408-always"),
    pytest.param([429], timeout(), True, id="timeout-always"),
    pytest.param([429], refused(), True, id="connection-error-always"),
])
async def test_which_failures_fall_back(codes: list[int] | None, failure: Outcome, falls_back: bool) -> None:
    when: dict[str, Any] = {"models": [PRIMARY]}
    if codes is not None:
        when["response_status_codes"] = codes
    send = FakeSend({PRIMARY: failure, SECOND: ok()})
    fallback = Fallback(send, document({**RULE, "when": when}))
    if falls_back:
        assert isinstance(await fallback(chat_call(PRIMARY)), Completion)
        assert send.models == [PRIMARY, SECOND]
    else:
        with pytest.raises(GatewayError):
            await fallback(chat_call(PRIMARY))
        assert send.models == [PRIMARY]


async def test_each_fallback_in_turn_with_a_span_each(tracer: Tracer, span_exporter: InMemorySpanExporter) -> None:
    send = FakeSend({PRIMARY: status(500), SECOND: timeout(), THIRD: ok()}, tracer=tracer)
    await Fallback(send, document(RULE), tracer=tracer)(chat_call(PRIMARY))
    assert send.models == [PRIMARY, SECOND, THIRD]
    second, third = finished(span_exporter, "fallbackRequest")
    assert dict(second.attributes or {}) == attributes(SECOND, **{"fallback.temperature": 0.2})
    assert dict(third.attributes or {}) == attributes(THIRD)
    assert second.status.status_code == StatusCode.ERROR
    assert second.status.description == "p: the upstream did not answer in time"
    assert third.status.status_code == StatusCode.UNSET


async def test_when_every_fallback_fails_the_last_error_reaches_the_client() -> None:
    send = FakeSend({PRIMARY: status(500), SECOND: status(503), THIRD: status(502)})
    with pytest.raises(UpstreamStatusError) as raised:
        await Fallback(send, document(RULE))(chat_call(PRIMARY))
    assert raised.value.upstream_status == 502
    assert send.models == [PRIMARY, SECOND, THIRD]


async def test_a_fallback_failing_otherwise_ends_the_chain() -> None:
    send = FakeSend({PRIMARY: status(500), SECOND: status(400), THIRD: ok()})
    with pytest.raises(UpstreamStatusError) as raised:
        await Fallback(send, document(RULE))(chat_call(PRIMARY))
    assert raised.value.upstream_status == 400
    assert send.models == [PRIMARY, SECOND]


@pytest.mark.parametrize(("params", "overrides", "expected"), [
    pytest.param({}, {}, {}, id="neither-set"),
    pytest.param({"max_tokens": 50}, {}, {"fallback.max_tokens": 50}, id="client-max-tokens"),
    pytest.param({"max_completion_tokens": 70}, {}, {"fallback.max_tokens": 70}, id="max-completion-tokens"),
    pytest.param({"max_tokens": 50, "temperature": 1}, {"max_tokens": 512, "temperature": 0.0},
                 {"fallback.max_tokens": 512, "fallback.temperature": 0.0}, id="override-wins"),
])
async def test_max_tokens_and_temperature_are_those_the_attempt_sends(
    tracer: Tracer, span_exporter: InMemorySpanExporter, params: dict[str, Any], overrides: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    rule = {**RULE, "fallback_models": [{"target": SECOND, "override_params": overrides}]}
    send = FakeSend({PRIMARY: status(500), SECOND: ok()})
    await Fallback(send, document(rule), tracer=tracer)(chat_call(PRIMARY, **params))
    (span,) = finished(span_exporter, "fallbackRequest")
    assert dict(span.attributes or {}) == attributes(SECOND, **expected)


@pytest.mark.parametrize(("when", "identity", "metadata", "applies"), [
    pytest.param({"subjects": ["team:ml"]}, Identity("team:ml", "acme"), {}, True, id="subject-matches"),
    pytest.param({"subjects": ["team:ml"]}, Identity("user:bob", "acme"), {}, False, id="subject-differs"),
    pytest.param({"metadata": {"env": "prod"}}, Identity("user:bob", "acme"), {"env": "prod"}, True,
                 id="metadata-matches"),
    pytest.param({"metadata": {"env": "prod"}}, Identity("user:bob", "acme"), {"env": "dev"}, False,
                 id="metadata-differs"),
    pytest.param({"models": [SECOND]}, Identity("user:bob", "acme"), {}, False, id="model-differs"),
])
async def test_first_matching_rule(
    when: dict[str, Any], identity: Identity, metadata: dict[str, str], applies: bool
) -> None:
    send = FakeSend({PRIMARY: status(500), SECOND: ok(), THIRD: ok()})
    rules = [{**RULE, "id": "first", "when": when}, {**RULE, "id": "second", "when": {"models": ["none"]}}]
    fallback = Fallback(send, document(*rules))
    if applies:
        await fallback(chat_call(PRIMARY, identity=identity, metadata=metadata))
        assert send.models == [PRIMARY, SECOND]
    else:
        with pytest.raises(UpstreamStatusError):
            await fallback(chat_call(PRIMARY, identity=identity, metadata=metadata))
        assert send.models == [PRIMARY]


async def test_a_stream_falls_back_before_its_first_chunk(
    tracer: Tracer, span_exporter: InMemorySpanExporter
) -> None:
    send = FakeSend({PRIMARY: ttft(), SECOND: streams(3)}, tracer=tracer)
    stream = await Fallback(send, document(RULE), tracer=tracer)(chat_call(PRIMARY, stream=True))
    assert finished(span_exporter, "fallbackRequest") == []  # open until the stream ends
    chunks = [chunk async for chunk in stream]
    assert [chunk["model"] for chunk in chunks] == [SECOND] * 3
    (span,) = finished(span_exporter, "fallbackRequest")
    assert dict(span.attributes or {}) == attributes(SECOND, **{"fallback.temperature": 0.2})
    assert span.status.status_code == StatusCode.UNSET


async def test_a_stream_that_started_never_falls_back(tracer: Tracer, span_exporter: InMemorySpanExporter) -> None:
    send = FakeSend({PRIMARY: streams(3, fail_after=1), SECOND: ok()}, tracer=tracer)
    stream = await Fallback(send, document(RULE), tracer=tracer)(chat_call(PRIMARY, stream=True))
    assert isinstance(stream, Stream)
    received = []
    with pytest.raises(UpstreamStreamError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 1
    assert send.models == [PRIMARY]
    assert finished(span_exporter, "fallbackRequest") == []


async def test_a_fallback_stream_cut_midway_fails_its_span(
    tracer: Tracer, span_exporter: InMemorySpanExporter
) -> None:
    send = FakeSend({PRIMARY: status(500), SECOND: streams(3, fail_after=2)}, tracer=tracer)
    stream = await Fallback(send, document(RULE), tracer=tracer)(chat_call(PRIMARY, stream=True))
    with pytest.raises(UpstreamStreamError):
        async for _ in stream:
            pass
    (span,) = finished(span_exporter, "fallbackRequest")
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "the upstream connection was cut mid-stream"


async def test_no_fallback_starts_past_the_deadline() -> None:
    deadline = asyncio.get_running_loop().time() - 0.001
    send = FakeSend({PRIMARY: status(500), SECOND: ok()})
    with pytest.raises(UpstreamTimeoutError) as raised:
        await Fallback(send, document(RULE))(chat_call(PRIMARY, deadline=deadline))
    assert (raised.value.status, raised.value.code) == (504, "request_timeout")
    assert send.models == [PRIMARY]


async def test_without_a_tracer_no_span_is_current() -> None:
    seen: list[bool] = []

    async def send(call: ChatCall) -> Completion:
        seen.append(current_span_is_recording())
        if call.model == PRIMARY:
            raise UpstreamStatusError("p: 500", upstream_status=500)
        return Completion({})

    await Fallback(send, document(RULE))(chat_call(PRIMARY))
    assert seen == [False, False]
