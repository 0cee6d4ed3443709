"""Shared pieces of the load-balancing, fallback, retry and health tests: calls, a settable clock,
a scripted next layer (``send``) and chunk streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from types import SimpleNamespace
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from otel_gateway.calls import ChatCall, ChunkStream, Completion, RequestContext
from otel_gateway.errors import (
    ModelNotFoundError,
    RequestTimeoutError,
    UpstreamConnectionError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from otel_gateway.identity import Identity

ACME = Identity("user:alice", "acme")
USER = {"role": "user", "content": "hi"}


def chat_call(
    model: str = "gpt-4o",
    *,
    identity: Identity = ACME,
    metadata: Mapping[str, str] | None = None,
    deadline: float | None = None,
    **params: Any,
) -> ChatCall:
    body = {"model": model, "messages": [USER], **params}
    context = RequestContext(request_id="req-1", identity=identity, metadata=dict(metadata or {}), deadline=deadline)
    return ChatCall(body=body, model=model, context=context)


class Clock:
    """Seconds, moved by the test (or by the fake upstream taking its time)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Stream:
    """A ``ChunkStream`` over fixed chunks, optionally failing after ``fail_after`` of them; with
    ``usage``, an ``assembler`` like the upstream stream's."""

    def __init__(self, chunks: int = 3, *, model: str = "m", fail_after: int | None = None,
                 usage: dict[str, int] | None = None) -> None:
        self.chunks = [{"id": "s1", "object": "chat.completion.chunk", "model": model,
                        "choices": [{"index": 0, "delta": {"content": f"w{i}"}, "finish_reason": None}]}
                       for i in range(chunks)]
        self.fail_after = fail_after
        self.closed = False
        if usage is not None:
            self.assembler = SimpleNamespace(usage=usage, chunk_count=chunks + 1)

    async def _generate(self) -> AsyncIterator[dict[str, Any]]:
        for sent, chunk in enumerate(self.chunks):
            if self.fail_after is not None and sent >= self.fail_after:
                raise UpstreamStreamError("the upstream connection was cut mid-stream")
            yield chunk

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._generate()

    async def aclose(self) -> None:
        self.closed = True


Outcome = Callable[[ChatCall], "Completion | ChunkStream"]
"""What the fake upstream does with one call: answers, or raises."""


def ok(output_tokens: int = 10) -> Outcome:
    def answer(call: ChatCall) -> Completion:
        usage = {"prompt_tokens": 5, "completion_tokens": output_tokens, "total_tokens": 5 + output_tokens}
        return Completion({"id": "c1", "object": "chat.completion", "model": call.model, "usage": usage,
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                                        "finish_reason": "stop"}]})

    return answer


def streams(chunks: int = 3, *, fail_after: int | None = None, usage: dict[str, int] | None = None) -> Outcome:
    return lambda call: Stream(chunks, model=call.model, fail_after=fail_after, usage=usage)


def status(code: int) -> Outcome:
    def fail(call: ChatCall) -> Completion:
        raise UpstreamStatusError(f"p: failing with {code}", upstream_status=code, provider="p")

    return fail


def timeout() -> Outcome:
    def fail(call: ChatCall) -> Completion:
        raise UpstreamTimeoutError("p: the upstream did not answer in time", provider="p")

    return fail


def refused() -> Outcome:
    def fail(call: ChatCall) -> Completion:
        raise UpstreamConnectionError("p: could not reach the upstream", provider="p")

    return fail


def ttft() -> Outcome:
    def fail(call: ChatCall) -> Completion:
        raise RequestTimeoutError("no streamed chunk arrived within 100 ms (x-gateway-ttft-timeout-ms)")

    return fail


def unknown_model() -> Outcome:
    def fail(call: ChatCall) -> Completion:
        raise ModelNotFoundError(f"unknown model {call.model}")

    return fail


class FakeSend:
    """The next layer: plays each model's script in order (its last outcome repeats), records the
    calls, and with a tracer opens a ``chatCompletions`` span under the current one, as the
    provider attempt does. ``took`` moves ``clock`` by a model's seconds on each call."""

    def __init__(
        self,
        script: Mapping[str, Outcome | list[Outcome]],
        *,
        tracer: Tracer | None = None,
        clock: Clock | None = None,
        took: Mapping[str, float] | None = None,
    ) -> None:
        self._script = {model: list(o) if isinstance(o, list) else [o] for model, o in script.items()}
        self._played: dict[str, int] = {}
        self._tracer = tracer
        self._clock = clock
        self._took = took or {}
        self.calls: list[ChatCall] = []

    @property
    def models(self) -> list[str]:
        return [call.model for call in self.calls]

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        self.calls.append(call)
        outcomes = self._script[call.model]
        played = self._played.get(call.model, 0)
        self._played[call.model] = played + 1
        outcome = outcomes[min(played, len(outcomes) - 1)]
        if self._clock is not None:
            self._clock.advance(self._took.get(call.model, 0.0))
        if self._tracer is None:
            return outcome(call)
        with self._tracer.start_as_current_span("chatCompletions", attributes={"gen_ai.request.model": call.model}):
            return outcome(call)


def current_span_is_recording() -> bool:
    return trace.get_current_span().is_recording()


def finished(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def parent_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan | None:
    parent = span.parent
    return next((s for s in spans if parent is not None and s.context.span_id == parent.span_id), None)
