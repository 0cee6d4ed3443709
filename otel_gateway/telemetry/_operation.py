"""The span of one GenAI call that is not a chat completion: ``embeddings``, ``moderations``, and
Anthropic's native ``messages``.

It owns its span from request to answer: request attributes when it starts, response attributes
when it stops, ``error.type`` when it fails; the first of ``stop``, ``fail`` and ``cancel`` wins.
Without a tracer it wraps the invalid span: no SDK work at all. ``ChatInvocation`` is built on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from ..errors import GatewayError


def error_type(error: BaseException) -> str:
    """``error.type``: the upstream's status, else the gateway's error code, else the class name."""
    status = getattr(error, "upstream_status", None)
    if status is not None:
        return str(status)
    if isinstance(error, GatewayError) and error.code:
        return error.code
    return type(error).__qualname__


class OperationInvocation:
    __slots__ = ("_ended", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self._ended = False

    @classmethod
    def start(cls, tracer: Tracer | None, name: str, attributes: Mapping[str, Any]) -> OperationInvocation:
        if tracer is None:
            return cls(trace.INVALID_SPAN)
        return cls(tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes))

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Makes the span the parent of what runs inside (the upstream HTTP call's CLIENT span)."""
        with trace.use_span(self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield

    def stop(self, attributes: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """Ends the span; ``attributes`` is only called when the span records."""
        if self._ended:
            return
        self._ended = True
        if attributes is not None and self.span.is_recording():
            self.span.set_attributes(attributes())
        self.span.end()

    def fail(self, error: BaseException, attributes: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """``error.type`` and an error status, plus ``attributes`` of what had arrived."""
        if self._ended:
            return
        self._ended = True
        if self.span.is_recording():
            self.span.set_attribute("error.type", error_type(error))
            if attributes is not None:
                self.span.set_attributes(attributes())
            self.span.set_status(Status(StatusCode.ERROR, str(error)))
        self.span.end()

    def cancel(self, attributes: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """The client went away: ``error.type=cancelled``, plus ``attributes`` of what had arrived."""
        if self._ended:
            return
        self._ended = True
        if self.span.is_recording():
            self.span.set_attribute("error.type", "cancelled")
            if attributes is not None:
                self.span.set_attributes(attributes())
        self.span.end()
