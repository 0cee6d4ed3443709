"""Request log records as OpenTelemetry log records, exported over OTLP when ``ENABLE_OTEL_LOGS=true``
(the provider is made by the entry point: ``telemetry.logger_provider_from_env``).

Each record becomes one log record: its ``timestamp`` and trace context natively, ``event_name``
``ai_gateway_request_log``, the record's ``attributes`` as the body, and a few flat attributes for
log backends to index. The standard variables apply: ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``, ``OTEL_EXPORTER_OTLP_(LOGS_)PROTOCOL`` (``grpc`` or
``http/protobuf``), ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from .._version import __version__
from ._record import RECORD_NAME
from ._sinks import Records


class OtlpLogSink:
    """Emits every record to ``provider``, and flushes it at close (its owner, the entry point,
    shuts it down at exit)."""

    name = "otlp"

    def __init__(self, provider: LoggerProvider) -> None:
        self.provider = provider
        self._logger = provider.get_logger("otel_gateway.warehouse", __version__)

    async def write(self, records: Records) -> None:
        for record in records:
            self._emit(record)

    def _emit(self, record: Mapping[str, Any]) -> None:
        attributes = record.get("attributes") or {}
        metadata = attributes.get("metadata") or {}
        status = metadata.get("status")
        flat = {
            "ai_gateway.request.id": attributes.get("id"),
            "ai_gateway.status": status,
            "ai_gateway.endpoint": attributes.get("endpoint"),
            "gen_ai.request.model": attributes.get("model"),
            "gen_ai.provider.name": metadata.get("provider_type"),
            "user.id": attributes.get("user_id"),
            "http.response.status_code": metadata.get("http_status"),
        }
        error = status in ("error", "rate_limited")
        self._logger.emit(
            timestamp=_nanos(record.get("timestamp")),
            context=_trace_context(attributes.get("trace_id"), attributes.get("span_id")),
            severity_number=SeverityNumber.ERROR if error else SeverityNumber.INFO,
            severity_text="ERROR" if error else "INFO",
            body=attributes,
            attributes={key: value for key, value in flat.items() if value is not None},
            event_name=RECORD_NAME,
        )

    async def tick(self) -> None:
        return None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.provider.force_flush)


def _nanos(timestamp: Any) -> int | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return int(datetime.fromisoformat(timestamp).timestamp() * 1_000_000) * 1000
    except ValueError:
        return None


def _trace_context(trace_id: Any, span_id: Any) -> Context:
    """A context holding the request's span, so the log record carries its trace; without one, an
    empty context (never the worker's current one)."""
    if not (isinstance(trace_id, str) and isinstance(span_id, str)):
        return Context()
    try:
        span_context = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                                   trace_flags=TraceFlags(TraceFlags.SAMPLED))
    except ValueError:
        return Context()
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())
