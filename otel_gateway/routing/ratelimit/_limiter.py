"""The rate-limiting layer: a ``send`` around the next ``send``, owning the ``RateLimiterMiddleware`` span.

Per call: find every matching rule, check and consume all their buckets at once (the span covers
this check only), put ``x-ratelimit-*`` on the response, call the next layer outside the span,
then settle token reservations to the real usage (for streams, when the stream ends).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from ..._throttle import ThrottledLog
from ...calls import ChatCall, ChunkStream, Completion, Send
from ...chat import SPECS
from ...config import RateLimitDocument
from ...errors import GatewayError, RateLimitError, ServiceUnavailableError
from ...redaction import Redactor
from ._backend import Adjustment, Backend, BackendUnavailable, Demand, Outcome
from ._rules import Bucket, buckets_for, usage_tokens
from ._settle import SettlingStream
from ._window import WindowState, whole_seconds

logger = logging.getLogger("otel_gateway.ratelimit")

SPAN_NAME = "RateLimiterMiddleware"
WARN_EVERY_SECONDS = 30.0


class RateLimitUnavailableError(ServiceUnavailableError):
    """503: the rate-limit backend cannot be reached and the config says to refuse then."""

    code = "rate_limit_backend_unavailable"


@dataclass(frozen=True, slots=True)
class _Admission:
    """What an admitted call took, for settling it later."""

    buckets: Sequence[Bucket]
    slots: Sequence[int]
    """The slot each bucket was charged to."""
    headers: Mapping[str, str]

    @property
    def reserves_tokens(self) -> bool:
        return any(b.kind == "tokens" for b in self.buckets)

    def corrections(self, actual: int | None, *, refund: bool) -> list[Adjustment]:
        out = []
        for b, slot in zip(self.buckets, self.slots, strict=True):
            if b.kind != "tokens":
                continue
            delta = -b.cost if refund else (0 if actual is None else actual - b.cost)
            if delta:
                out.append(Adjustment(b.key, slot, delta))
        return out


class RateLimiter:
    """Enforces every matching rule of a ``gateway-rate-limiting-config`` document: a call passes
    only if all its buckets have room, and then takes from all of them.

    ``backend_failures`` counts the calls the backend could not be asked about.
    """

    def __init__(
        self, next: Send, config: RateLimitDocument, backend: Backend, *, tracer: Tracer | None,
        redactor: Redactor | None = None,
    ) -> None:
        self._next = next
        self._redact = redactor or Redactor()
        self._config = config
        self.backend = backend
        self._tracer = tracer
        self.backend_failures = 0
        self._warn = ThrottledLog(logger, every=WARN_EVERY_SECONDS)
        self._failing = False

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        buckets = buckets_for(self._config, call)
        admission = await self._check(call, buckets)
        if admission is None:
            return await self._next(call)
        call.context.response_headers.update(admission.headers)
        try:
            result = await self._next(call)
        except BaseException as exc:
            if isinstance(exc, GatewayError):
                for name, value in admission.headers.items():
                    exc.headers.setdefault(name, value)
            await self._settle(admission, None, refund=True)
            raise
        if not admission.reserves_tokens:
            return result
        if isinstance(result, Completion):
            await self._settle(admission, _charged(call, SPECS[call.kind].usage(result.data)))
            return result

        async def settle(usage: Mapping[str, Any] | None) -> None:
            await self._settle(admission, _charged(call, usage))

        return SettlingStream(result, settle)

    # -- the check, inside the span ---------------------------------------------------------------

    async def _check(self, call: ChatCall, buckets: list[Bucket]) -> _Admission | None:
        with self._span(call, buckets) as span:
            if not buckets:
                _set(span, {"rate_limiter.status": "no_matching_rules"})
                return None
            demands = [Demand(b.key, b.limit, b.window_ms, b.cost) for b in buckets]
            try:
                outcome = await self.backend.consume(demands)
            except BackendUnavailable as exc:
                self._unavailable(exc, span)
                return None
            if self._failing:
                self._failing = False
                logger.info("rate-limit backend %r is answering again", self.backend)
            return _decide(buckets, outcome, span)

    @contextlib.contextmanager
    def _span(self, call: ChatCall, buckets: list[Bucket]) -> Iterator[Span | None]:
        if self._tracer is None:
            yield None
            return
        identity = call.context.identity
        attributes: dict[str, Any] = {
            "rate_limiter.model": call.model,
            "rate_limiter.metadata": orjson.dumps(self._redact.headers(call.context.metadata)).decode(),
            "rate_limiter.user.subject_type": identity.subject_type,
            "rate_limiter.user.subject_slug": identity.subject_slug,
            "rate_limiter.user.tenant_name": identity.tenant,
            "rate_limiter.rules": [b.rule_id for b in buckets],
        }
        span = self._tracer.start_span(SPAN_NAME, kind=SpanKind.INTERNAL, attributes=attributes)
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            yield span

    def _unavailable(self, exc: BackendUnavailable, span: Span | None) -> None:
        """Counts and logs the failure; admits (fail open) or raises 503 (``fail_closed``)."""
        self.backend_failures += 1
        self._failing = True
        closed = self._config.fail_closed
        _set(span, {"rate_limiter.status": "backend_unavailable_refused" if closed else "backend_unavailable"})
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, f"rate-limit backend unavailable: {exc}"))
        self._warn("rate-limit backend unavailable (%s); %s", exc,
                   "refusing requests (fail_closed: true)" if closed else "admitting requests unchecked")
        if closed:
            raise RateLimitUnavailableError(
                "Rate limiting is temporarily unavailable and this gateway refuses requests it cannot "
                "check (fail_closed: true). Retry shortly.",
                headers={"retry-after": "1"},
            ) from exc

    # -- after the call -----------------------------------------------------------------------

    async def _settle(self, admission: _Admission, usage: Mapping[str, Any] | None, *, refund: bool = False) -> None:
        corrections = admission.corrections(usage_tokens(usage), refund=refund)
        if not corrections:
            return
        try:
            await self.backend.adjust(corrections)
        except BackendUnavailable as exc:
            self.backend_failures += 1
            self._warn("could not settle token reservations with the rate-limit backend (%s)", exc)


def _charged(call: ChatCall, usage: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The usage a call costs against token limits: none for an answer served from the cache."""
    return _NOTHING if call.context.outcome.cache_status == "HIT" else usage


_NOTHING: Mapping[str, Any] = {"total_tokens": 0}


def _decide(buckets: Sequence[Bucket], outcome: Outcome, span: Span | None) -> _Admission:
    """Headers for the most constrained bucket when admitted; a 429 naming the refusing rule if not."""
    states = outcome.states
    if outcome.admitted:
        i = min(range(len(buckets)), key=lambda k: states[k].remaining / states[k].limit)
        bucket, state = buckets[i], states[i]
        _set(span, {"rate_limiter.status": "allowed", "rate_limiter.rule.id": bucket.rule_id,
                    "rate_limiter.remaining": state.remaining})
        return _Admission(buckets, [s.slot for s in states], _headers(bucket, state))
    i = max(range(len(buckets)), key=lambda k: states[k].wait_ms)
    bucket, state = buckets[i], states[i]
    _set(span, {"rate_limiter.status": "rate_limited", "rate_limiter.rule.id": bucket.rule_id,
                "rate_limiter.remaining": state.remaining})
    headers = {"retry-after": str(whole_seconds(state.wait_ms)), **_headers(bucket, state)}
    raise RateLimitError(
        f"Rate limit exceeded: rule '{bucket.rule_id}' allows {bucket.limit} {bucket.unit.replace('_', ' ')}. "
        f"Retry after {headers['retry-after']} s.",
        headers=headers,
    )


def _headers(bucket: Bucket, state: WindowState) -> dict[str, str]:
    """``x-ratelimit-reset``: seconds until there is room for another call like this one, or, when
    there is room now, until everything the bucket counts has slid out (the whole limit free)."""
    reset = state.wait_ms if state.wait_ms > 0 else state.reset_ms
    return {
        "x-ratelimit-limit": str(bucket.limit),
        "x-ratelimit-remaining": str(state.remaining),
        "x-ratelimit-reset": str(whole_seconds(reset)),
    }


def _set(span: Span | None, attributes: Mapping[str, Any]) -> None:
    if span is not None and span.is_recording():
        span.set_attributes(attributes)
