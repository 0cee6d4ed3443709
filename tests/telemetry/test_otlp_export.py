"""Spans leave the gateway over real OTLP (HTTP/protobuf and gRPC) to in-test receivers; tracing
is set up from the environment."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from servers import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from otel_gateway.app import create_app
from otel_gateway.config import load_config, load_config_text
from otel_gateway.telemetry import capture_content, tracer_provider_from_env, tracing_enabled

Request_ = trace_service_pb2.ExportTraceServiceRequest


class HttpReceiver:
    """An OTLP/HTTP trace receiver: keeps every decoded export request and the path it came to."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Request_]] = []

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._export, methods=["POST"])])

    async def _export(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.headers["content-type"] == "application/x-protobuf"
        message = Request_()
        message.ParseFromString(body)
        self.received.append((request.url.path, message))
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return Response(reply, media_type="application/x-protobuf")

    def requests(self) -> list[Request_]:
        return [message for _, message in self.received]


class GrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.received: list[Request_] = []

    def Export(self, request: Request_, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        self.received.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def requests(self) -> list[Request_]:
        return list(self.received)


def value_of(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value"))


def exported_spans(requests: list[Request_]) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, span) for every span of every export request."""
    out = []
    for message in requests:
        for resource_spans in message.resource_spans:
            resource = {kv.key: value_of(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                out += [(resource, span) for span in scope_spans.spans]
    return out


def wait_for_span(provider: TracerProvider, requests: Callable[[], list[Request_]], name: str,
                  timeout: float = 10.0) -> tuple[dict[str, Any], Any]:
    deadline = time.monotonic() + timeout
    while True:
        provider.force_flush()
        found = [(resource, span) for resource, span in exported_spans(requests()) if span.name == name]
        if found:
            (one,) = found
            return one
        if time.monotonic() > deadline:
            raise AssertionError(f"no span {name!r} was exported in {timeout} s")
        time.sleep(0.02)


def span_attributes(span: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in span.attributes}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("OTEL_") or name == "ENABLE_OTEL_TRACING":
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def http_receiver() -> Iterator[tuple[HttpReceiver, str]]:
    receiver = HttpReceiver()
    with serve(receiver.app) as url:
        yield receiver, url


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[GrpcReceiver, str]]:
    receiver = GrpcReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


# -- the gateway through the real OTLP/HTTP exporter ------------------------------------------------------------


def test_chat_span_exported_over_otlp_http(clean_env: pytest.MonkeyPatch,
                                           http_receiver: tuple[HttpReceiver, str]) -> None:
    receiver, receiver_url = http_receiver
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver_url}/v1/traces")))
    try:
        with serve(create_app(load_config(None, environ={}), tracer_provider=provider)) as url, \
                openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=10) as client:
            answer = client.chat.completions.create(model="demo/echo", messages=[{"role": "user", "content": "ping"}])
            assert answer.choices[0].message.content == "ping"
            _, chat = wait_for_span(provider, receiver.requests, "chatCompletions")
            _, server = wait_for_span(provider, receiver.requests, "POST /v1/chat/completions")
    finally:
        provider.shutdown()

    assert {path for path, _ in receiver.received} == {"/v1/traces"}
    attributes = span_attributes(chat)
    assert attributes["gen_ai.request.model"] == "demo/echo"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.completion.0.content"] == "ping"
    assert [event.name for event in chat.events] == ["gen_ai.user.message"]
    assert chat.trace_id == server.trace_id
    assert chat.parent_span_id == server.span_id


# -- tracer_provider_from_env -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({}, id="unset"),
        pytest.param({"ENABLE_OTEL_TRACING": ""}, id="empty"),
        pytest.param({"ENABLE_OTEL_TRACING": "false"}, id="false"),
        pytest.param({"ENABLE_OTEL_TRACING": "0"}, id="zero"),
        pytest.param({"ENABLE_OTEL_TRACING": "no", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, id="no"),
    ],
)
def test_tracing_off(environ: dict[str, str]) -> None:
    assert not tracing_enabled(environ)
    assert tracer_provider_from_env(environ) is None


@pytest.mark.parametrize("value", ["true", "TRUE", " True ", "1", "yes", "on"])
def test_tracing_enabled_values(value: str) -> None:
    assert tracing_enabled({"ENABLE_OTEL_TRACING": value})


def test_nothing_here_reads_os_environ(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ENABLE_OTEL_TRACING", "true")  # only the environ passed in counts
    assert tracer_provider_from_env({}) is None


def emit_span(provider: TracerProvider) -> None:
    with provider.get_tracer("test").start_as_current_span("probe"):
        pass


def test_http_protobuf_by_default(clean_env: pytest.MonkeyPatch, http_receiver: tuple[HttpReceiver, str]) -> None:
    receiver, url = http_receiver
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    provider = tracer_provider_from_env({"ENABLE_OTEL_TRACING": "true"})
    assert provider is not None
    try:
        emit_span(provider)
        resource, _ = wait_for_span(provider, receiver.requests, "probe")
    finally:
        provider.shutdown()
    assert {path for path, _ in receiver.received} == {"/v1/traces"}
    assert resource["service.name"] == "otel-gateway"
    assert isinstance(resource["service.version"], str)


def test_traces_endpoint_from_os_environ_and_service_name_from_the_given_environ(clean_env: pytest.MonkeyPatch,
                                                          http_receiver: tuple[HttpReceiver, str]) -> None:
    receiver, url = http_receiver
    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{url}/custom/traces")  # the exporter reads it
    provider = tracer_provider_from_env({"ENABLE_OTEL_TRACING": "true", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                                         "OTEL_SERVICE_NAME": "gateway-eu"})
    assert provider is not None
    try:
        emit_span(provider)
        resource, _ = wait_for_span(provider, receiver.requests, "probe")
    finally:
        provider.shutdown()
    assert {path for path, _ in receiver.received} == {"/custom/traces"}
    assert resource["service.name"] == "gateway-eu"


def test_grpc_protocol(clean_env: pytest.MonkeyPatch, grpc_receiver: tuple[GrpcReceiver, str]) -> None:
    receiver, url = grpc_receiver
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)  # the exporter reads its endpoint from os.environ
    provider = tracer_provider_from_env({
        "ENABLE_OTEL_TRACING": "true", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "gateway-grpc",
    })
    assert provider is not None
    try:
        emit_span(provider)
        resource, _ = wait_for_span(provider, receiver.requests, "probe")
    finally:
        provider.shutdown()
    assert resource["service.name"] == "gateway-grpc"


@pytest.mark.parametrize(
    ("environ", "service_name"),
    [
        pytest.param({}, "otel-gateway", id="default"),
        pytest.param({"OTEL_SERVICE_NAME": ""}, "otel-gateway", id="empty"),
        pytest.param({"OTEL_SERVICE_NAME": "gateway-us"}, "gateway-us", id="set"),
    ],
)
def test_service_name_from_the_given_environ(clean_env: pytest.MonkeyPatch, environ: dict[str, str],
                                             service_name: str) -> None:
    provider = tracer_provider_from_env({"ENABLE_OTEL_TRACING": "true", **environ})
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == service_name
    finally:
        provider.shutdown()


def test_sampler_from_os_environ(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_TRACES_SAMPLER", "always_off")
    provider = tracer_provider_from_env({"ENABLE_OTEL_TRACING": "true"})
    assert provider is not None
    try:
        assert provider.sampler is ALWAYS_OFF
    finally:
        provider.shutdown()


# -- capture_content --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, True, id="unset"),
        pytest.param({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}, True, id="true"),
        pytest.param({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false"}, False, id="false"),
        pytest.param({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": " FALSE "}, False, id="FALSE"),
        pytest.param({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "0"}, False, id="zero"),
        pytest.param({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "off"}, False, id="off"),
    ],
)
def test_capture_content(environ: dict[str, str], expected: bool) -> None:
    assert capture_content(environ) is expected


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("false", False)])
def test_the_entry_point_passes_what_os_environ_says(clean_env: pytest.MonkeyPatch, value: str | None,
                                                     expected: bool) -> None:
    import gc

    from otel_gateway import cli

    if value is not None:
        clean_env.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    clean_env.setenv("OTEL_SERVICE_NAME", "gw-from-env")
    before = gc.get_threshold()
    try:
        gateway = cli._app(load_config_text("type: gateway-providers-config\nproviders: [{name: d, type: mock, "
                                            "models: [e]}]\n---\ntype: gateway-logging-config\nstore: none\n",
                                            environ={})).state.gateway
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert gateway._capture_content is expected
    assert gateway.request_log._builder.resource["service.name"] == "gw-from-env"
