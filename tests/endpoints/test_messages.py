"""``POST /v1/messages`` through the real ``anthropic`` SDK: passed through with only the model
replaced, answers and streams relayed byte for byte, logged with their usage, errors, a client
that leaves mid-stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from fakes import Reply, anthropic_events, anthropic_message, anthropic_text_stream, sse
from opentelemetry.trace import SpanKind

from otel_gateway.errors import anthropic_error_type

from .endpoint_fakes import ProxyUpstream, RawReply
from .harness import ANTHROPIC_KEY, Gateway

MESSAGES = [{"role": "user", "content": "Hi"}]
BODY = {"model": "claude/sonnet", "max_tokens": 100, "messages": MESSAGES}
UPSTREAM_MODEL = "claude-sonnet-4-5-20250929"
PARTS = ["Hel", "lo ", "there"]


@pytest.fixture
def client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0, timeout=10) as sdk:
        yield sdk


def only_request(upstream: ProxyUpstream) -> Any:
    (request,) = upstream.requests
    assert (request.method, request.path, request.query) == ("POST", "/v1/messages", "")
    assert request.headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in request.headers
    return request


def text_message(text: str = "Hello there") -> dict[str, Any]:
    return anthropic_message([{"type": "text", "text": text}])


def error_event_of(frame: bytes) -> dict[str, Any]:
    head, _, data = frame.partition(b"\ndata: ")
    assert head == b"event: error"
    parsed: dict[str, Any] = orjson.loads(data)
    return parsed


# --- answers ---------------------------------------------------------------------------------------


def test_a_message_is_passed_through_with_only_the_model_replaced(
    client: anthropic.Anthropic, upstream: ProxyUpstream
) -> None:
    upstream.reply = Reply(json=text_message())

    message = client.messages.create(
        model="claude/sonnet", max_tokens=100, messages=MESSAGES, system="Be brief.", stop_sequences=["END"],
        metadata={"user_id": "u1"}, extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )

    assert (message.id, message.content[0].type, message.stop_reason) == ("msg_fake1", "text", "end_turn")
    assert message.content[0].text == "Hello there"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 3)
    request = only_request(upstream)
    assert request.body == {"max_tokens": 100, "messages": MESSAGES, "model": UPSTREAM_MODEL,
                            "metadata": {"user_id": "u1"}, "system": "Be brief.", "stop_sequences": ["END"]}
    assert (request.headers["anthropic-version"], request.headers["anthropic-beta"]) == (
        client.default_headers["anthropic-version"], "prompt-caching-2024-07-31")  # the client's version


@pytest.mark.parametrize(("sent", "received"), [
    pytest.param({}, "2023-06-01", id="the-provider-config"),
    pytest.param({"anthropic-version": "2099-01-01"}, "2099-01-01", id="the-client"),
])
def test_anthropic_version(http: httpx.Client, upstream: ProxyUpstream, sent: dict[str, str], received: str) -> None:
    upstream.reply = Reply(json=text_message())

    http.post("/v1/messages", json=BODY, headers=sent)

    request = only_request(upstream)
    assert request.headers["anthropic-version"] == received
    assert "anthropic-beta" not in request.headers


def test_the_answer_comes_back_byte_for_byte(http: httpx.Client, upstream: ProxyUpstream) -> None:
    raw = orjson.dumps(text_message()) + b"\n"
    upstream.reply = RawReply(body=raw, headers={"request-id": "req_abc"})

    response = http.post("/v1/messages", json=BODY)

    assert (response.status_code, response.content) == (200, raw)
    assert (response.headers["content-type"], response.headers["request-id"]) == ("application/json", "req_abc")


def test_a_message_is_logged_with_its_usage(gateway: Gateway, client: anthropic.Anthropic,
                                            upstream: ProxyUpstream) -> None:
    answer = {**text_message(), "usage": {"input_tokens": 20, "output_tokens": 4, "cache_read_input_tokens": 50,
                                          "cache_creation_input_tokens": 0}}
    upstream.reply = Reply(json=answer, headers={"request-id": "req_1"})

    client.messages.create(model="claude/sonnet", max_tokens=100, messages=MESSAGES)

    exchange = gateway.log.next()
    assert (exchange.endpoint, exchange.model, exchange.stream, exchange.status, exchange.http_status) == (
        "/v1/messages", "claude/sonnet", False, "success", 200)
    assert exchange.request == {"model": "claude/sonnet", "max_tokens": 100, "messages": MESSAGES}
    assert exchange.response == answer
    assert exchange.usage == {"prompt_tokens": 70, "completion_tokens": 4, "total_tokens": 74,
                              "prompt_tokens_details": {"cached_tokens": 50}}
    outcome = exchange.outcome
    assert (outcome.provider, outcome.provider_type, outcome.upstream_model, outcome.provider_request_id) == (
        "claude", "anthropic", UPSTREAM_MODEL, "req_1")


def test_a_messages_span(gateway: Gateway, client: anthropic.Anthropic, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json=text_message())

    client.messages.create(model="claude/sonnet", max_tokens=100, messages=MESSAGES, extra_body={"temperature": 0.5})

    gateway.log.next()
    (span,) = gateway.spans("messages")
    assert span.kind == SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude/sonnet",
        "gen_ai.request.stream": False,
        "gen_ai.request.max_tokens": 100,
        "gen_ai.request.temperature": 0.5,
        "server.address": "127.0.0.1",
        "server.port": gateway.upstream_port,
        "gen_ai.response.id": "msg_fake1",
        "gen_ai.response.model": UPSTREAM_MODEL,
        "gen_ai.response.finish_reasons": ("end_turn",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
    }
    (http_span,) = gateway.spans("POST")
    assert http_span.parent is not None and http_span.parent.span_id == span.context.span_id


# --- streams ---------------------------------------------------------------------------------------


def test_a_stream_through_the_sdk(gateway: Gateway, client: anthropic.Anthropic, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(events=anthropic_text_stream(PARTS))

    with client.messages.stream(model="claude/sonnet", max_tokens=100, messages=MESSAGES) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()

    assert texts == PARTS
    assert (final.content[0].text, final.usage.input_tokens, final.usage.output_tokens) == (
        "Hello there", 12, 3)
    assert only_request(upstream).body == {"max_tokens": 100, "messages": MESSAGES, "model": UPSTREAM_MODEL,
                                           "stream": True}


def test_a_stream_is_relayed_byte_for_byte_as_it_arrives(http: httpx.Client, upstream: ProxyUpstream) -> None:
    frames = anthropic_text_stream(PARTS)
    upstream.reply = Reply(events=frames, event_delay=0.02)

    with http.stream("POST", "/v1/messages", json={**BODY, "stream": True}) as response:
        chunks = list(response.iter_raw())

    assert response.status_code == 200
    assert (response.headers["content-type"], response.headers["cache-control"]) == (
        "text/event-stream", "no-cache")
    assert b"".join(chunks) == b"".join(frames)
    assert len(chunks) > 1, "the stream was held back and sent at once"


def test_the_first_event_arrives_before_the_upstream_is_done(http: httpx.Client, upstream: ProxyUpstream) -> None:
    frames = anthropic_text_stream(PARTS)
    upstream.reply = Reply(events=frames, event_delay=0.1)

    started = time.monotonic()
    with http.stream("POST", "/v1/messages", json={**BODY, "stream": True}) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        first_after = time.monotonic() - started
        rest = b"".join(chunks)

    assert first_after < 0.1 * (len(frames) - 1) / 2
    assert first + rest == b"".join(frames)


def test_a_stream_is_logged_with_its_events_and_usage(gateway: Gateway, http: httpx.Client,
                                                      upstream: ProxyUpstream) -> None:
    frames = anthropic_text_stream(PARTS)
    upstream.reply = Reply(events=frames)

    http.post("/v1/messages", json={**BODY, "stream": True})

    exchange = gateway.log.next()
    assert (exchange.stream, exchange.status, exchange.http_status) == (True, "success", 200)
    assert exchange.streamed_data == [orjson.loads(frame.partition(b"data: ")[2]) for frame in frames]
    assert exchange.response == {**text_message(), "stop_reason": "end_turn", "stop_sequence": None}
    assert exchange.usage == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    (span,) = gateway.spans("messages")
    assert span.attributes is not None
    assert (span.attributes["gen_ai.request.stream"], span.attributes["gen_ai.usage.output_tokens"],
            span.attributes["gen_ai.response.finish_reasons"]) == (True, 3, ("end_turn",))


def test_a_streamed_tool_call_is_assembled_for_the_log(gateway: Gateway, http: httpx.Client,
                                                       upstream: ProxyUpstream) -> None:
    tool = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}
    deltas = [{"type": "input_json_delta", "partial_json": part} for part in ['{"ci', 'ty": "Pa', 'ris"}']]
    upstream.reply = Reply(events=anthropic_events([({"type": "text", "text": ""}, [
        {"type": "text_delta", "text": "Let me look."}]), (tool, deltas)], "tool_use"))

    http.post("/v1/messages", json={**BODY, "stream": True})

    exchange = gateway.log.next()
    assert exchange.response is not None
    assert exchange.response["content"] == [{"type": "text", "text": "Let me look."},
                                            {**tool, "input": {"city": "Paris"}}]
    assert exchange.response["stop_reason"] == "tool_use"


# --- a client that leaves --------------------------------------------------------------------------


def test_leaving_mid_stream_closes_the_upstream(gateway: Gateway, upstream: ProxyUpstream,
                                                client: anthropic.Anthropic) -> None:
    upstream.reply = Reply(events=anthropic_text_stream([f"w{i} " for i in range(200)]), event_delay=0.05)

    with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0, timeout=10) as sdk, \
            sdk.messages.stream(model="claude/sonnet", max_tokens=100, messages=MESSAGES) as stream:
        events = iter(stream)
        kinds = [next(events).type, next(events).type]

    assert kinds == ["message_start", "content_block_start"]
    assert upstream.stream_abandoned.wait(5), "the gateway kept reading the upstream after the client left"
    exchange = gateway.log.next()
    assert exchange.status == "cancelled"
    assert exchange.response is not None and exchange.response["id"] == "msg_fake1"
    (span,) = gateway.spans("messages")
    assert span.attributes is not None and span.attributes["error.type"] == "cancelled"
    upstream.reset(Reply(json=text_message("still here")))
    assert client.messages.create(model="claude/sonnet", max_tokens=10, messages=MESSAGES).id == "msg_fake1"


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "status", "code", "param"), [
    pytest.param(b"{not json", 400, "invalid_json", None, id="malformed"),
    pytest.param(b'{"max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}', 400,
                 "missing_required_parameter", "model", id="no-model"),
    pytest.param(b'{"model": "claude/sonnet", "max_tokens": 10}', 400, "missing_required_parameter", "messages",
                 id="no-messages"),
    pytest.param(b'{"model": "claude/sonnet", "messages": [{"role": "user", "content": "Hi"}], "stream": "yes"}',
                 400, "invalid_type", "stream", id="stream-not-a-boolean"),
    pytest.param(b'{"model": "oai/gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}', 400,
                 "unsupported_endpoint", "model", id="not-an-anthropic-provider"),
    pytest.param(b'{"model": "claude/nope", "messages": [{"role": "user", "content": "Hi"}]}', 404,
                 "model_not_found", "model", id="unknown-model"),
])
def test_bad_requests(http: httpx.Client, upstream: ProxyUpstream, content: bytes, status: int, code: str,
                      param: str | None) -> None:
    response = http.post("/v1/messages", content=content, headers={"content-type": "application/json"})

    assert response.status_code == status
    error = response.json()["error"]  # Anthropic's shape: the type by status, and the gateway's param
    assert response.json()["type"] == "error"
    assert (error["type"], error.get("param")) == (anthropic_error_type(status), param)
    assert upstream.requests == []


def test_a_non_anthropic_provider_is_refused_by_name(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="oai/gpt-4o", max_tokens=10, messages=MESSAGES)

    assert raised.value.status_code == 400
    assert raised.value.body == {"type": "error", "error": {
        "message": "The provider 'oai' (type openai) has no /v1/messages endpoint.",
        "type": "invalid_request_error", "param": "model"}}


@pytest.mark.parametrize(("upstream_status", "status"), [
    pytest.param(400, 400, id="400"), pytest.param(401, 502, id="401"), pytest.param(429, 429, id="429"),
    pytest.param(529, 502, id="529-overloaded"),
])
def test_upstream_error_status(http: httpx.Client, upstream: ProxyUpstream, upstream_status: int,
                               status: int) -> None:
    upstream.reply = Reply(status=upstream_status, json={
        "type": "error", "error": {"type": "x", "message": f"bad key {ANTHROPIC_KEY}"}})

    response = http.post("/v1/messages", json={**BODY, "stream": True})

    assert response.status_code == status
    error = response.json()["error"]
    assert (error["message"], error["type"]) == ("claude: bad key [REDACTED]", anthropic_error_type(status))


def test_an_upstream_timeout_is_504(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json=text_message(), delay=2)

    response = http.post("/v1/messages", json={**BODY, "model": "claude-slow/sonnet"})

    assert response.status_code == 504
    assert response.json()["error"]["type"] == "api_error"


def test_a_refused_connection_is_502(http: httpx.Client) -> None:
    response = http.post("/v1/messages", json={**BODY, "model": "claude-dead/sonnet"})

    assert response.status_code == 502
    assert response.json()["error"]["type"] == "api_error"
    assert "sk-ant-dead-key-0123456789" not in response.text


def test_a_stream_cut_by_the_upstream_ends_with_an_error_event(gateway: Gateway, http: httpx.Client,
                                                               upstream: ProxyUpstream) -> None:
    frames = anthropic_text_stream(PARTS)
    upstream.reply = Reply(events=frames, cut_after=3)

    response = http.post("/v1/messages", json={**BODY, "stream": True})

    assert response.status_code == 200
    assert response.content.startswith(b"".join(frames[:3]))
    last = response.content.removeprefix(b"".join(frames[:3]))
    event = error_event_of(last)
    assert event["type"] == "error" and event["error"]["type"] == "api_error"
    assert event["error"]["message"].startswith("the upstream connection was cut mid-stream: ")
    exchange = gateway.log.next()
    assert (exchange.status, exchange.http_status) == ("error", 200)
    assert exchange.error is not None and exchange.error["error"]["code"] == "upstream_stream_error"


def test_a_stream_without_message_stop_ends_with_an_error_event(http: httpx.Client, upstream: ProxyUpstream) -> None:
    frames = anthropic_text_stream(PARTS)[:-1]
    upstream.reply = Reply(events=frames)

    response = http.post("/v1/messages", json={**BODY, "stream": True})

    assert error_event_of(response.content.removeprefix(b"".join(frames)))["error"]["message"] == (
        "claude: the upstream ended the stream before message_stop")


def test_an_upstream_error_event_is_relayed_as_it_is(gateway: Gateway, client: anthropic.Anthropic,
                                                     upstream: ProxyUpstream) -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    frames = [*anthropic_text_stream(PARTS)[:3], sse(error, "error")]
    upstream.reply = Reply(events=frames)

    with pytest.raises(anthropic.APIStatusError) as raised, \
            client.messages.stream(model="claude/sonnet", max_tokens=100, messages=MESSAGES) as stream:
        list(stream)

    assert raised.value.body == error
    exchange = gateway.log.next()
    assert exchange.status == "error"
    assert exchange.error is not None
    assert exchange.error["error"]["message"] == "claude: the upstream failed mid-stream: Overloaded"
