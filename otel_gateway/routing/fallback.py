"""Fallback: when the model a call is for fails, try other models in turn.

The first rule whose ``when`` matches the call (``models`` against the model this call is for,
after load balancing; ``subjects``; ``metadata``) applies. The primary attempt goes through
unchanged. It falls back when the attempt fails

- with an upstream status in ``when.response_status_codes`` (absent: any 5xx or 429),
- without an answer (timeout, connection refused or reset, stream ended before its first chunk),
- or, always, with the time-to-first-token timeout (408) or 503 ``overloaded`` (the provider
  account's ``max_concurrent_requests`` is reached: the next model may be elsewhere),

to each of ``fallback_models`` in order, as ``call.retarget(target, override_params)``: the
client's request is never changed. A fallback that fails the same way moves on to the next; one
that fails otherwise ends the chain with its error. When every fallback failed, the client gets
the last error: it is the freshest word of an upstream, and the primary's is on its span.

A stream falls back only while ``send`` raises, that is before its first chunk reached the
client; a failure after that reaches the client as the stream's final error event. No fallback
starts past the request deadline (``x-gateway-request-timeout``): that request fails with 504.

Each fallback attempt runs inside its own ``fallbackRequest`` span, the parent of the
attempt's ``chatCompletions`` span.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind, Tracer

from ..calls import ChatCall, ChunkStream, Completion, Send
from ..config import FallbackDocument, FallbackRule
from ..errors import GatewayError, OverloadedError, RequestTimeoutError
from ._attempts import CHAT_METHOD, is_transport_failure, out_of_time, send_in_span, status_of, time_left
from ._match import matches

__all__ = ["FALLBACK_SPAN", "Alternative", "Fallback", "send_with_fallbacks"]

FALLBACK_SPAN = "fallbackRequest"


class Fallback:
    def __init__(self, send: Send, config: FallbackDocument, *, tracer: Tracer | None = None) -> None:
        self._send = send
        self._rules = config.rules
        self._tracer = tracer

    def rule_for(self, call: ChatCall) -> FallbackRule | None:
        return next((rule for rule in self._rules if matches(rule.when, call)), None)

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        rule = self.rule_for(call)
        if rule is None:
            return await self._send(call)
        triggers = _trigger(rule)
        via = f"the fallback rule '{rule.id}'"
        alternatives = (Alternative(call.retarget(model.target, model.override_params, via=via), self._send, triggers)
                        for model in rule.fallback_models)
        return await send_with_fallbacks(
            Alternative(call, self._send, triggers), alternatives, config_id=rule.id, tracer=self._tracer
        )


@dataclass(frozen=True, slots=True)
class Alternative:
    """One attempt of a fallback chain: the call, where it goes, and which of its failures
    move on to the next attempt."""

    call: ChatCall
    send: Send
    falls_back: Callable[[GatewayError], bool]


async def send_with_fallbacks(
    primary: Alternative,
    alternatives: Iterable[Alternative],
    *,
    config_id: str,
    tracer: Tracer | None,
) -> Completion | ChunkStream:
    """Tries ``primary``, then each alternative in turn while the failed attempt ``falls_back``;
    raises the last error. Every alternative runs in its own ``fallbackRequest`` span.
    ``alternatives`` is only iterated after a failure: a generator costs nothing when none is needed."""
    try:
        return await primary.send(primary.call)
    except GatewayError as exc:
        if not primary.falls_back(exc):
            raise
        last = exc
    for alternative in alternatives:
        left = time_left(primary.call)
        if left is not None and left <= 0:
            raise out_of_time(last) from last
        try:
            if tracer is None:
                return await alternative.send(alternative.call)
            span = tracer.start_span(FALLBACK_SPAN, kind=SpanKind.INTERNAL,
                                     attributes=fallback_attributes(primary.call, alternative.call, config_id))
            return await send_in_span(span, alternative.send, alternative.call)
        except GatewayError as exc:
            if not alternative.falls_back(exc):
                raise
            last = exc
    raise last


def fallback_attributes(primary: ChatCall, attempt: ChatCall, config_id: str) -> dict[str, Any]:
    """Exactly the seed's ``fallback.*`` keys; ``max_tokens`` and ``temperature`` are those this
    attempt sends, present only when set."""
    attributes: dict[str, Any] = {
        "fallback.http.url": primary.path,
        "fallback.http.method": CHAT_METHOD,
        "fallback.requested_model": primary.model,
        "fallback.resolved_model": attempt.model,
        "fallback.config_id": config_id,
    }
    max_tokens = attempt.param("max_tokens")
    if max_tokens is None:
        max_tokens = attempt.param("max_completion_tokens")
    if _number(max_tokens):
        attributes["fallback.max_tokens"] = max_tokens
    temperature = attempt.param("temperature")
    if _number(temperature):
        attributes["fallback.temperature"] = temperature
    return attributes


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _trigger(rule: FallbackRule) -> Callable[[GatewayError], bool]:
    statuses = rule.when.response_status_codes

    def falls_back(error: GatewayError) -> bool:
        if isinstance(error, (RequestTimeoutError, OverloadedError)) or is_transport_failure(error):
            return True
        status = status_of(error)
        if status is None:
            return False
        return status in statuses if statuses is not None else status >= 500 or status == 429

    return falls_back
