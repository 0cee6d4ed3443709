"""The sinks the pipeline feeds: OTLP logs (in memory, and over real OTLP/HTTP from the
environment), JSONL files, and the stores ``store_for`` opens from a URL."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from servers import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text
from otel_gateway.identity import Identity
from otel_gateway.telemetry import logger_provider_from_env, resource_from, service_name
from otel_gateway.warehouse import Exchange, JsonlSink, MemoryStore, OtlpLogSink, RecordBuilder, store_for
from otel_gateway.warehouse._postgres import PostgresStore
from otel_gateway.warehouse._sqlite import SQLiteStore

MOCK = "type: gateway-providers-config\nproviders:\n  - {name: demo, type: mock, models: [echo]}\n"


def record(**fields: Any) -> dict[str, Any]:
    builder = RecordBuilder(load_config_text(MOCK, environ={}))
    base: dict[str, Any] = {"request_id": "req-9", "endpoint": "/v1/chat/completions", "model": "demo/echo",
                            "started_at": 1741190600.5, "identity": Identity("user:bob", "acme")}
    return builder.build(Exchange(**{**base, **fields}))


@pytest.fixture
def logs() -> Iterator[tuple[LoggerProvider, InMemoryLogRecordExporter]]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "gw"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_a_record_becomes_an_otlp_log_record(logs: tuple[LoggerProvider, InMemoryLogRecordExporter]) -> None:
    provider, exporter = logs
    ok = record(trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331")
    failed = record(request_id="req-10", status="error", http_status=502, error={"error": {"message": "down"}})
    await OtlpLogSink(provider).write([ok, failed])
    first, second = (item.log_record for item in exporter.get_finished_logs())
    assert first.body == ok["attributes"]
    assert first.event_name == "ai_gateway_request_log"
    assert first.timestamp == 1741190600500000000
    assert (first.trace_id, first.span_id) == (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331)
    assert (first.severity_number, first.severity_text) == (SeverityNumber.INFO, "INFO")
    assert dict(first.attributes or {}) == {
        "ai_gateway.request.id": "req-9", "ai_gateway.status": "success", "ai_gateway.endpoint": "/v1/chat/completions",
        "gen_ai.request.model": "demo/echo", "user.id": "user:bob", "http.response.status_code": 200,
    }
    assert (second.severity_number, second.trace_id, second.body) == (SeverityNumber.ERROR, 0, failed["attributes"])


class LogsReceiver:
    """An OTLP/HTTP logs receiver keeping every decoded export request."""

    def __init__(self) -> None:
        self.received: list[tuple[str, logs_service_pb2.ExportLogsServiceRequest]] = []

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._export, methods=["POST"])])

    async def _export(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        message = logs_service_pb2.ExportLogsServiceRequest()
        message.ParseFromString(body)
        self.received.append((request.url.path, message))
        return Response(logs_service_pb2.ExportLogsServiceResponse().SerializeToString(),
                        media_type="application/x-protobuf")


def plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    return getattr(value, kind)


def test_otlp_log_export_as_the_entry_point_sets_it_up(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = LogsReceiver()
    config = load_config_text(MOCK + "---\ntype: gateway-logging-config\nstore: none\nflush_interval_ms: 10\n"
                                     "environment: qa\n", environ={})
    with serve(receiver.app) as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)  # the SDK's exporter reads it
        env = {"ENABLE_OTEL_LOGS": "true", "OTEL_SERVICE_NAME": "gw-otlp"}
        provider = logger_provider_from_env(env, resource_from(env, environment=config.logging.environment))
        with serve(create_app(config, logger_provider=provider, service_name=service_name(env))) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model="demo/echo", messages=[{"role": "user", "content": "over otlp"}])
        # the app's shutdown flushed the queue and the provider, exporting the batch
    ((path, message),) = receiver.received
    assert path == "/v1/logs"
    (resource_logs,) = message.resource_logs
    resource = {kv.key: plain(kv.value) for kv in resource_logs.resource.attributes}
    assert (resource["service.name"], resource["deployment.environment"]) == ("gw-otlp", "qa")
    ((log,),) = [scope.log_records for scope in resource_logs.scope_logs]
    body = plain(log.body)
    assert log.event_name == "ai_gateway_request_log"
    assert body["id"] == raw.headers["x-gateway-request-id"]
    assert body["response"]["choices"][0]["message"]["content"] == "over otlp"
    assert body["metadata"]["status"] == "success"
    assert body["request_headers"]["authorization"] == "[REDACTED]"


async def test_jsonl_appends_one_object_a_line(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "records.jsonl"
    first, second = record(request_id="a"), record(request_id="b")
    sink = JsonlSink(path)
    await sink.write([first])
    await sink.write([second])
    await sink.aclose()
    again = JsonlSink(path)
    await again.write([record(request_id="c")])
    await again.aclose()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["attributes"]["id"] for line in lines] == ["a", "b", "c"]
    assert lines[0] == first


@pytest.mark.parametrize(("url", "kind", "detail"), [
    pytest.param("sqlite:///./logs/gw.db", SQLiteStore, "logs/gw.db", id="sqlite-relative"),
    pytest.param("sqlite:////var/lib/gw.db", SQLiteStore, "/var/lib/gw.db", id="sqlite-absolute"),
    pytest.param("postgresql://gw:pw@db:5432/logs", PostgresStore, "postgresql://gw:pw@db:5432/logs", id="postgresql"),
    pytest.param("postgres://db/logs", PostgresStore, "postgres://db/logs", id="postgres"),
    pytest.param("memory", MemoryStore, None, id="memory"),
])
async def test_store_for(url: str, kind: type, detail: str | None) -> None:
    store = store_for(url)
    assert isinstance(store, kind)
    if isinstance(store, SQLiteStore):
        assert store.path == Path(detail or "")
    elif isinstance(store, PostgresStore):
        assert store.dsn == detail
    await store.aclose()


def test_store_for_none_and_nonsense() -> None:
    assert store_for("none") is None
    with pytest.raises(ValueError, match="unsupported store URL"):
        store_for("mysql://x")
    with pytest.raises(ValueError, match="no file"):
        store_for("sqlite:///")
