"""The OpenTelemetry providers, as the standard ``OTEL_*`` variables say. The entry point
(``cli.py``) reads the environment and passes it in; nothing here reads it. One
:class:`Resource` (service name and version, deployment environment) is shared by every provider."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from .._version import __version__

_TRUE = ("1", "true", "yes", "on")
DEFAULT_SERVICE_NAME = "otel-gateway"


def _on(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in _TRUE


def tracing_enabled(env: Mapping[str, str]) -> bool:
    return _on(env, "ENABLE_OTEL_TRACING")


def logs_enabled(env: Mapping[str, str]) -> bool:
    return _on(env, "ENABLE_OTEL_LOGS")


def capture_content(env: Mapping[str, str]) -> bool:
    value = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true").strip().lower()
    return value not in ("0", "false", "no", "off")


def service_name(env: Mapping[str, str]) -> str:
    return env.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME


def resource_from(env: Mapping[str, str], *, environment: str | None = None) -> Resource:
    """The one resource of the process's traces, logs and metrics. ``Resource.create`` also merges
    ``OTEL_RESOURCE_ATTRIBUTES``, which it reads itself (the SDK's own detector)."""
    attributes = {"service.name": service_name(env), "service.version": __version__}
    if environment:
        attributes["deployment.environment"] = environment
    return Resource.create(attributes)


def tracer_provider_from_env(env: Mapping[str, str], resource: Resource | None = None) -> TracerProvider | None:
    """A provider exporting over OTLP, or ``None`` when ``ENABLE_OTEL_TRACING`` is not true. The
    sampler comes from ``OTEL_TRACES_SAMPLER``."""
    if not tracing_enabled(env):
        return None
    provider = TracerProvider(resource=resource or resource_from(env))
    provider.add_span_processor(BatchSpanProcessor(_span_exporter(env)))
    return provider


def logger_provider_from_env(env: Mapping[str, str], resource: Resource | None = None) -> LoggerProvider | None:
    """A provider exporting the request log records over OTLP, or ``None`` when ``ENABLE_OTEL_LOGS``
    is not true."""
    if not logs_enabled(env):
        return None
    provider = LoggerProvider(resource=resource or resource_from(env))
    provider.add_log_record_processor(BatchLogRecordProcessor(_log_exporter(env)))
    return provider


def _grpc(env: Mapping[str, str], signal: str) -> bool:
    protocol = env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    return (protocol or "http/protobuf").strip() == "grpc"


def _span_exporter(env: Mapping[str, str]) -> SpanExporter:
    if _grpc(env, "TRACES"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def _log_exporter(env: Mapping[str, str]) -> LogRecordExporter:
    if _grpc(env, "LOGS"):
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpExporter

    return HttpExporter()
