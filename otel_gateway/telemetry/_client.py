"""The HTTP CLIENT span of every upstream call: ``opentelemetry-instrumentation-httpx``'s transport,
its URL attribute passed through the gateway's redaction."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport, RequestInfo
from opentelemetry.trace import Span, TracerProvider

from ..redaction import Redactor

_URL_ATTRIBUTES = ("http.url", "url.full")
"""Where the instrumentation puts the URL: the old semantic conventions, the new, or both."""


def traced_transport(
    transport: httpx.AsyncBaseTransport, tracer_provider: TracerProvider, redactor: Callable[[], Redactor]
) -> httpx.AsyncBaseTransport:
    """``transport`` with a CLIENT span per request. The instrumentation redacts user info and a
    few signature parameters of the URL; ``redactor()`` (the configuration's, asked at each request)
    redacts the rest by the gateway's rule: the value of every query parameter named like a
    credential, and every configured secret or key-shaped value anywhere in it."""

    async def redact_url(span: Span, request: RequestInfo) -> None:
        attributes = getattr(span, "attributes", None)
        if not attributes or not span.is_recording():
            return
        redact = redactor()
        for key in _URL_ATTRIBUTES:
            url = attributes.get(key)
            if isinstance(url, str) and (redacted := redact.url(url)) != url:
                span.set_attribute(key, redacted)

    return AsyncOpenTelemetryTransport(transport, tracer_provider=tracer_provider, request_hook=redact_url)
