"""``otel-gateway serve`` as a user runs it: the console script in a fresh directory, no keys, no
``OTEL_*`` set. The default config answers the ``openai`` SDK (a completion, a stream, tool calls);
tracing follows the environment alone, over real OTLP/HTTP to an in-test receiver."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from servers import free_port, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

REPO = Path(__file__).resolve().parents[1]
USER = {"role": "user", "content": "hello gateway world"}
TOOL = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}}


def command() -> list[str]:
    script = shutil.which("otel-gateway", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "otel_gateway"]


def clean_environ(**extra: str) -> dict[str, str]:
    """The environment of a fresh machine: nothing for tracing, no provider keys, no config path."""
    dropped = ("OTEL_", "ENABLE_OTEL", "OPENAI_", "ANTHROPIC_", "AZURE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and not k.endswith("_API_KEY")}
    return env | extra


SERVE_LOG = "otel-gateway-serve.log"


@contextlib.contextmanager
def served(cwd: Path, *options: str, **environ: str) -> Iterator[str]:
    """``otel-gateway serve --port P [options]`` run in ``cwd``, its output to ``cwd/SERVE_LOG``;
    yields its URL once /healthz answers."""
    port = free_port()
    log = cwd / SERVE_LOG
    with log.open("wb") as output:
        process = subprocess.Popen([*command(), "serve", "--port", str(port), "--log-level", "warning", *options],
                                   cwd=cwd, env=clean_environ(**environ), stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"otel-gateway serve did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="no-key-needed", max_retries=0, timeout=10)


# --- the default config answers ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["built-in-default", "shipped-config-directory"])
def default_gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The gateway with no ``--config``: in an empty directory (the built-in default), and next to a
    copy of the shipped ``config/`` (which it then reads)."""
    cwd = tmp_path_factory.mktemp("fresh")
    if request.param == "shipped-config-directory":
        shutil.copytree(REPO / "config", cwd / "config")
    with served(cwd) as url:
        yield url


def test_default_config_lists_its_model(default_gateway: str) -> None:
    with sdk(default_gateway) as client:
        assert [(m.id, m.owned_by) for m in client.models.list().data] == [("demo/echo", "demo")]


def test_default_config_answers_a_chat_completion(default_gateway: str) -> None:
    with sdk(default_gateway) as client:
        completion = client.chat.completions.create(model="demo/echo", messages=[USER])

    (choice,) = completion.choices
    assert (choice.message.role, choice.message.content, choice.finish_reason) == (
        "assistant", "hello gateway world", "stop")
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0


def test_default_config_streams(default_gateway: str) -> None:
    with sdk(default_gateway) as client, client.chat.completions.create(
        model="demo/echo", messages=[USER], stream=True, stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)

    parts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(parts) == "hello gateway world"
    assert len(parts) == 5  # the shipped ``stream_chunks: 5``
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None


def test_default_config_calls_the_offered_tool(default_gateway: str) -> None:
    with sdk(default_gateway) as client:
        completion = client.chat.completions.create(model="demo/echo", messages=[USER], tools=[TOOL])

    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert (call.type, call.function.name, call.function.arguments) == ("function", "get_weather", '{"city":"mock"}')


def test_default_config_streams_a_tool_call(default_gateway: str) -> None:
    with sdk(default_gateway) as client:
        chunks = list(client.chat.completions.create(model="demo/echo", messages=[USER], tools=[TOOL], stream=True))

    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert [call.function.name for call in calls if call.function and call.function.name] == ["get_weather"]
    assert "".join(call.function.arguments or "" for call in calls if call.function) == '{"city":"mock"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


# --- tracing from the environment, over OTLP/HTTP --------------------------------------------------------------


class Receiver:
    """An OTLP/HTTP trace receiver that decodes every export request."""

    def __init__(self) -> None:
        self.received: list[trace_service_pb2.ExportTraceServiceRequest] = []

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/traces", self._export, methods=["POST"])])

    async def _export(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.received.append(message)
        return Response(trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
                        media_type="application/x-protobuf")

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) of everything received."""
        return [({kv.key: value_of(kv.value) for kv in rs.resource.attributes}, span)
                for message in self.received for rs in message.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def wait_for(self, name: str, count: int, timeout: float = 10.0) -> list[tuple[dict[str, Any], Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [(resource, span) for resource, span in self.spans() if span.name == name]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value_of(v) for v in value.array_value.values)
    return getattr(value, kind)


def attributes_of(span: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in span.attributes}


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    with serve(receiver.app) as url:
        yield receiver, url


def ask_three_times(url: str) -> None:
    """A completion, a stream and a streamed tool call."""
    with sdk(url) as client:
        assert client.chat.completions.create(model="demo/echo", messages=[USER]).choices[0].message.content
        assert list(client.chat.completions.create(model="demo/echo", messages=[USER], stream=True))
        assert list(client.chat.completions.create(model="demo/echo", messages=[USER], tools=[TOOL], stream=True))


MOCK_SPAN = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "otel_gateway.mock",
    "gen_ai.provider.name": "otel_gateway.mock",
    "gen_ai.request.model": "demo/echo",
    "server.address": "mock.invalid",
    "server.port": 80,
    "gen_ai.prompt.0.role": "user",
    "gen_ai.response.model": "echo",
    "gen_ai.completion.0.role": "assistant",
    "gen_ai.usage.input_tokens": 6,
    "gen_ai.usage.output_tokens": 3,
}


def test_tracing_on_from_the_environment_without_content(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    spans, receiver_url = receiver
    with served(tmp_path, ENABLE_OTEL_TRACING="true", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                OTEL_EXPORTER_OTLP_ENDPOINT=receiver_url, OTEL_SERVICE_NAME="gateway-under-test",
                OTEL_BSP_SCHEDULE_DELAY="50", OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="false") as url:
        ask_three_times(url)
        chats = spans.wait_for("chatCompletions", 3)
        servers = spans.wait_for("POST /v1/chat/completions", 3)

    assert len(chats) == len(servers) == 3
    assert {resource["service.name"] for resource, _ in chats} == {"gateway-under-test"}
    for (_, chat), (_, server) in zip(chats, servers, strict=True):
        assert (chat.trace_id, chat.parent_span_id) == (server.trace_id, server.span_id)
    attributes = [attributes_of(span) for _, span in chats]
    for one in attributes:
        assert one.pop("gen_ai.response.id").startswith("chatcmpl-mock-")
    for streamed in attributes[1:]:
        assert 0 <= streamed.pop("gen_ai.response.time_to_first_chunk") < 5
    assert attributes == [
        {**MOCK_SPAN, "gen_ai.request.stream": False, "gen_ai.response.finish_reasons": ("stop",),
         "gen_ai.completion.0.finish_reason": "stop"},
        {**MOCK_SPAN, "gen_ai.request.stream": True, "gen_ai.response.finish_reasons": ("stop",),
         "gen_ai.completion.0.finish_reason": "stop"},
        {**MOCK_SPAN, "gen_ai.request.stream": True, "gen_ai.response.finish_reasons": ("tool_calls",),
         "gen_ai.completion.0.finish_reason": "tool_calls",
         "gen_ai.completion.0.tool_calls.0.id": "call_8c12ca6a28e2022ecf65ba66",
         "gen_ai.completion.0.tool_calls.0.name": "get_weather",
         "gen_ai.usage.output_tokens": 1},
    ]
    for _, chat in chats:
        assert [(e.name, attributes_of(e)) for e in chat.events] == [
            ("gen_ai.user.message", {"gen_ai.system": "otel_gateway.mock", "role": "user"})]


@pytest.mark.parametrize("enable", [None, "false"], ids=["unset", "false"])
def test_tracing_off_from_the_environment_exports_nothing(tmp_path: Path, receiver: tuple[Receiver, str],
                                                          enable: str | None) -> None:
    spans, receiver_url = receiver
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    if enable is not None:
        environ["ENABLE_OTEL_TRACING"] = enable
    with served(tmp_path, **environ) as url:
        ask_three_times(url)
        time.sleep(0.3)  # six times the export delay the tracing-on test needs
    assert spans.received == []


# --- the access log ------------------------------------------------------------------------------------------


def test_the_access_log_redacts_keys_in_the_query(tmp_path: Path) -> None:
    secret = os.urandom(12).hex()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gateway.yaml").write_text("""\
type: gateway-providers-config
providers: [{name: demo, type: mock, models: [echo]}]
---
type: gateway-logging-config
store: memory
redact_headers: [x-tenant-ref]
""")
    query = dict.fromkeys(("key", "api_key", "x-tenant-ref", "session_token"), f"sk-canary-{secret}")
    with served(tmp_path, "--access-log", "--log-level", "info") as url, sdk(url) as client:
        client.chat.completions.create(model="demo/echo", messages=[USER], extra_query={**query, "keep": "yes"})
    log = (tmp_path / SERVE_LOG).read_text()
    assert '"POST /v1/chat/completions?key=[REDACTED]&api_key=[REDACTED]&x-tenant-ref=[REDACTED]' \
           '&session_token=[REDACTED]&keep=yes HTTP/1.1" 200' in log
    assert secret not in log
