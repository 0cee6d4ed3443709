"""Every error the contract names: status, OpenAI's error body, ``x-gateway-request-id``; before a
stream starts as a JSON answer, after it started as a final SSE error event without ``[DONE]``."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes import FakeUpstream, Reply, anthropic_text_stream, openai_completion, openai_stream, sse
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text

CANARY = "sk-canary-1234567890abcdef"
LIMIT = 4096
MESSAGES = [{"role": "user", "content": "Hi"}]
BODY = {"model": "oai/gpt-4o", "messages": MESSAGES}
STREAM_BODY = {**BODY, "stream": True}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def gateway(served_fake: tuple[FakeUpstream, str]) -> Iterator[str]:
    url = served_fake[1]
    config = load_config_text(f"""
type: gateway-providers-config
providers:
  - name: oai
    type: openai
    base_url: {url}/v1
    api_key: {CANARY}
    models: [gpt-4o]
  - name: slow
    type: openai
    base_url: {url}/v1
    api_key: sk-slow-provider-key
    timeout_ms: 150
    models: [gpt-4o]
  - name: claude
    type: anthropic
    base_url: {url}
    api_key: sk-ant-api03-canary-abcdef
    models: [claude-sonnet-4-5]
  - name: demo
    type: mock
    models: [echo]
  - name: dead
    type: openai-compatible
    base_url: http://127.0.0.1:{closed_port()}/v1
    models: [gpt-4o]
---
type: gateway-server-config
max_request_body_bytes: {LIMIT}
""")
    with serve(create_app(config)) as gateway_url:
        yield gateway_url


@pytest.fixture(scope="module")
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="client-key", max_retries=0, timeout=10) as sdk:
        yield sdk


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The ``error`` object of a JSON error answer, after checking its status and headers."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    uuid.UUID(response.headers["x-gateway-request-id"])
    body = response.json()
    assert list(body) == ["error"]
    assert list(body["error"]) == ["message", "type", "code", "param"]
    return dict(body["error"])


def error(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": type_, "code": code, "param": param}


def sse_payloads(response: httpx.Response) -> list[str]:
    """The ``data`` of every event of a streamed answer, read to its end."""
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    uuid.UUID(response.headers["x-gateway-request-id"])
    raw = response.read()
    events = raw.split(b"\n\n")
    assert events[-1] == b"", raw
    assert all(event.startswith(b"data: ") for event in events[:-1]), raw
    return [event.removeprefix(b"data: ").decode() for event in events[:-1]]


# --- the request itself is wrong --------------------------------------------------------------------

MISSING_MODEL = error("You must provide a model parameter (a non-empty string).", "invalid_request_error",
                      "missing_required_parameter", "model")
MISSING_MESSAGES = error("You must provide messages: a non-empty array of message objects.",
                         "invalid_request_error", "missing_required_parameter", "messages")


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param(b"", error("The request body is empty; send a JSON object.", "invalid_request_error",
                            "invalid_json"), id="empty-body"),
    pytest.param(b"[1, 2]", error("The request body must be a JSON object.", "invalid_request_error",
                                  "invalid_json"), id="body-not-an-object"),
    pytest.param(b'"text"', error("The request body must be a JSON object.", "invalid_request_error",
                                  "invalid_json"), id="body-a-string"),
    pytest.param({"messages": MESSAGES}, MISSING_MODEL, id="missing-model"),
    pytest.param({"model": "", "messages": MESSAGES}, MISSING_MODEL, id="empty-model"),
    pytest.param({"model": 4, "messages": MESSAGES}, MISSING_MODEL, id="model-not-a-string"),
    pytest.param({"model": "oai/gpt-4o"}, MISSING_MESSAGES, id="missing-messages"),
    pytest.param({"model": "oai/gpt-4o", "messages": []}, MISSING_MESSAGES, id="empty-messages"),
    pytest.param({"model": "oai/gpt-4o", "messages": "Hi"}, MISSING_MESSAGES, id="messages-not-a-list"),
    pytest.param({"model": "oai/gpt-4o", "messages": ["Hi"]},
                 error("messages[0] must be an object with a string 'role'.", "invalid_request_error",
                       "invalid_value", "messages[0]"), id="message-not-an-object"),
    pytest.param({"model": "oai/gpt-4o", "messages": [*MESSAGES, {"content": "no role"}]},
                 error("messages[1] must be an object with a string 'role'.", "invalid_request_error",
                       "invalid_value", "messages[1]"), id="message-without-role"),
    pytest.param({**BODY, "stream": "yes"},
                 error("stream must be a boolean.", "invalid_request_error", "invalid_type", "stream"),
                 id="stream-not-a-bool"),
    pytest.param({**BODY, "stream": 1},
                 error("stream must be a boolean.", "invalid_request_error", "invalid_type", "stream"),
                 id="stream-an-int"),
])
def test_invalid_request_is_400(http: httpx.Client, fake: FakeUpstream, body: bytes | dict[str, Any],
                                expected: dict[str, Any]) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()

    response = http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})

    assert error_of(response, 400) == expected
    assert fake.requests == []


def test_malformed_json_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", content=b'{"model": "oai/gpt-4o", "messages": [',
                         headers={"content-type": "application/json"})

    body = error_of(response, 400)
    assert body["message"].startswith("The request body is not valid JSON: ")
    assert {k: body[k] for k in ("type", "code", "param")} == {
        "type": "invalid_request_error", "code": "invalid_json", "param": None}


def test_malformed_json_through_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.post("/chat/completions", content=b"{oops", cast_to=httpx.Response)

    assert raised.value.status_code == 400
    assert raised.value.code == "invalid_json"
    assert raised.value.type == "invalid_request_error"


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", ""], ids=["word", "zero", "negative", "fraction", "empty"])
def test_malformed_ttft_header_is_400(http: httpx.Client, fake: FakeUpstream, value: str) -> None:
    response = http.post("/v1/chat/completions", json=STREAM_BODY, headers={"x-gateway-ttft-timeout-ms": value})

    assert error_of(response, 400) == error(
        "x-gateway-ttft-timeout-ms must be a positive whole number of milliseconds.", "invalid_request_error",
        "invalid_header", "x-gateway-ttft-timeout-ms")
    assert fake.requests == []


def test_unknown_model_is_404(client: openai.OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="nobody/gpt-4o", messages=MESSAGES)

    assert error_of(raised.value.response, 404) == error(
        "The model 'nobody/gpt-4o' does not exist or you do not have access to it. "
        "Address models as 'provider-account/model'; GET /v1/models lists them.",
        "not_found_error", "model_not_found", "model")
    assert fake.requests == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413(http: httpx.Client, fake: FakeUpstream, chunked: bool) -> None:
    body = json.dumps({**BODY, "messages": [{"role": "user", "content": "x" * LIMIT}]}).encode()
    content: bytes | Iterator[bytes] = iter([body[:100], body[100:]]) if chunked else body

    response = http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})

    assert error_of(response, 413) == error(
        f"The request body is larger than the gateway's limit of {LIMIT} bytes.", "invalid_request_error",
        "request_too_large")
    assert fake.requests == []


def test_body_just_under_the_limit_passes(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.reply = Reply(json=openai_completion("fits"))

    completion = client.chat.completions.create(
        model="oai/gpt-4o", messages=[{"role": "user", "content": "x" * (LIMIT - 100)}])

    assert completion.choices[0].message.content == "fits"


@pytest.mark.parametrize(("method", "path", "status", "expected"), [
    pytest.param("GET", "/v1/nothing-here", 404,
                 error("Unknown path: GET /v1/nothing-here. To pass it through to a provider, name the provider "
                       "account in the x-gateway-provider header.", "not_found_error", "unknown_path"),
                 id="unknown-v1-path"),
    pytest.param("POST", "/elsewhere", 404,
                 error("Unknown path: POST /elsewhere", "not_found_error", "unknown_path"), id="unknown-root-path"),
    pytest.param("GET", "/v1/chat/completions", 405,
                 error("Method Not Allowed", "invalid_request_error", "http_405"), id="wrong-method"),
])
def test_unknown_path_or_method(http: httpx.Client, method: str, path: str, status: int,
                                expected: dict[str, Any]) -> None:
    assert error_of(http.request(method, path), status) == expected


# --- the upstream refuses or fails -----------------------------------------------------------------


def upstream_error(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@pytest.mark.parametrize(("upstream_status", "status", "sdk_error", "expected"), [
    pytest.param(400, 400, openai.BadRequestError,
                 error("oai: Invalid value for 'temperature': must be at most 1.", "invalid_request_error",
                       "upstream_400"), id="400-kept"),
    pytest.param(404, 404, openai.NotFoundError,
                 error("oai: Invalid value for 'temperature': must be at most 1.", "invalid_request_error",
                       "upstream_404"), id="404-kept"),
    pytest.param(429, 429, openai.RateLimitError,
                 error("oai: Invalid value for 'temperature': must be at most 1.", "rate_limit_error",
                       "upstream_429"), id="429-kept"),
    pytest.param(500, 502, openai.InternalServerError,
                 error("oai: Invalid value for 'temperature': must be at most 1.", "upstream_error",
                       "upstream_500"), id="500-becomes-502"),
    pytest.param(502, 502, openai.InternalServerError,
                 error("oai: Invalid value for 'temperature': must be at most 1.", "upstream_error",
                       "upstream_502"), id="502-stays-502"),
    pytest.param(503, 503, openai.InternalServerError,
                 error("oai: Invalid value for 'temperature': must be at most 1.", "upstream_error",
                       "upstream_503"), id="503-kept"),
    pytest.param(504, 504, openai.InternalServerError,
                 error("oai: Invalid value for 'temperature': must be at most 1.", "upstream_error",
                       "upstream_504"), id="504-kept"),
])
def test_upstream_error_status(client: openai.OpenAI, fake: FakeUpstream, upstream_status: int, status: int,
                               sdk_error: type[openai.APIStatusError], expected: dict[str, Any]) -> None:
    fake.reply = Reply(status=upstream_status,
                       json=upstream_error("Invalid value for 'temperature': must be at most 1.", code="bad"))

    with pytest.raises(sdk_error) as raised:
        client.chat.completions.create(model="oai/gpt-4o", messages=MESSAGES, temperature=1.5)

    assert raised.value.status_code == status
    assert error_of(raised.value.response, status) == expected
    assert len(fake.requests) == 1


@pytest.mark.parametrize("upstream_status", [401, 403], ids=["401", "403"])
@pytest.mark.parametrize("shown_key", [CANARY, "sk-canar**************cdef"], ids=["raw-key", "masked-key"])
def test_refused_provider_key_is_502_and_never_shown(http: httpx.Client, fake: FakeUpstream, upstream_status: int,
                                                     shown_key: str) -> None:
    fake.reply = Reply(status=upstream_status, json=upstream_error(
        f"Incorrect API key provided: {shown_key}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.", code="invalid_api_key"))

    response = http.post("/v1/chat/completions", json=BODY)

    assert error_of(response, 502) == error(
        "oai: Incorrect API key provided: [REDACTED]. You can find your API key at "
        "https://platform.openai.com/account/api-keys.", "upstream_error", "upstream_authentication_failed")
    assert "canary" not in response.text
    assert "cdef" not in response.text
    assert not any("canary" in value for value in response.headers.values())
    assert fake.requests[0].headers["authorization"] == f"Bearer {CANARY}"


@pytest.mark.parametrize(("reply", "status", "expected"), [
    pytest.param(Reply(status=200, events=[b"<html>all good</html>"]), 502,
                 error("oai: the upstream answered with a body that is not JSON", "upstream_error", None),
                 id="200-not-json"),
    pytest.param(Reply(status=200, json=["not", "an", "object"]), 502,
                 error("oai: the upstream answered with a body that is not JSON", "upstream_error", None),
                 id="200-json-not-an-object"),
    pytest.param(Reply(status=502, events=[b"<html><body>Bad Gateway</body></html>"]), 502,
                 error("oai: <html><body>Bad Gateway</body></html>", "upstream_error", "upstream_502"),
                 id="502-html"),
    pytest.param(Reply(status=500, events=[b""]), 502,
                 error("oai: HTTP 500", "upstream_error", "upstream_500"), id="500-empty"),
])
def test_upstream_body_not_json(http: httpx.Client, fake: FakeUpstream, reply: Reply, status: int,
                                expected: dict[str, Any]) -> None:
    fake.reply = reply

    assert error_of(http.post("/v1/chat/completions", json=BODY), status) == expected


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_upstream_timeout_is_504(http: httpx.Client, fake: FakeUpstream, stream: bool) -> None:
    fake.reply = Reply(json=openai_completion(), delay=0.6)

    response = http.post("/v1/chat/completions", json={**BODY, "model": "slow/gpt-4o", "stream": stream})

    body = error_of(response, 504)
    assert body["message"].startswith("slow: the upstream did not answer in time (0.15 s): ")
    assert {k: body[k] for k in ("type", "code", "param")} == {
        "type": "timeout_error", "code": "upstream_timeout", "param": None}


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_connection_refused_is_502(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="dead/gpt-4o", messages=MESSAGES, stream=stream)

    body = error_of(raised.value.response, 502)
    assert body["message"].startswith("dead: could not reach the upstream: ")
    assert {k: body[k] for k in ("type", "code", "param")} == {
        "type": "upstream_error", "code": "upstream_connection_error", "param": None}


def test_upstream_error_on_a_streaming_request_is_a_json_answer(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.reply = Reply(status=429, json=upstream_error("Rate limit reached for gpt-4o", "rate_limit_error"))

    with http.stream("POST", "/v1/chat/completions", json=STREAM_BODY) as response:
        response.read()

    assert error_of(response, 429) == error("oai: Rate limit reached for gpt-4o", "rate_limit_error", "upstream_429")


def test_stream_ending_before_any_chunk_is_a_json_502(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.reply = Reply(events=[b"data: [DONE]\n\n"])

    response = http.post("/v1/chat/completions", json=STREAM_BODY)

    assert error_of(response, 502) == error("the upstream ended the stream before sending anything",
                                            "upstream_error", "upstream_stream_error")


# --- failures after the stream started ---------------------------------------------------------------

HEAD = {"id": "chatcmpl-fake2", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-2024-08-06"}
PARTS = ["one ", "two ", "three ", "four"]


def delivered(frames: list[bytes]) -> list[str]:
    """The ``data`` of OpenAI frames as the gateway passes them on."""
    return [frame.removeprefix(b"data: ").removesuffix(b"\n\n").decode() for frame in frames]


def stream_error(payload: str, message: str) -> None:
    assert json.loads(payload) == {"error": error(message, "upstream_error", "upstream_stream_error")}


def test_stream_cut_mid_way_ends_with_an_error_event(http: httpx.Client, fake: FakeUpstream) -> None:
    frames = openai_stream(PARTS)
    fake.reply = Reply(events=frames, cut_after=3)

    with http.stream("POST", "/v1/chat/completions", json=STREAM_BODY) as response:
        payloads = sse_payloads(response)

    *chunks, last = payloads
    assert chunks == delivered(frames[:3])
    assert "[DONE]" not in payloads
    (error_body,) = json.loads(last).values()
    assert error_body["message"].startswith("the upstream connection was cut mid-stream: ")
    assert {k: error_body[k] for k in ("type", "code", "param")} == {
        "type": "upstream_error", "code": "upstream_stream_error", "param": None}


@pytest.mark.parametrize(("frames", "sent", "message"), [
    pytest.param(openai_stream(PARTS, usage=False, done=False)[:-1], 5,
                 "the upstream ended the stream before it was complete", id="no-finish-reason-no-done"),
    pytest.param([*openai_stream(PARTS)[:2], b"data: {not json\n\n"], 2,
                 "the upstream sent a malformed stream event: '{not json'", id="malformed-event"),
    pytest.param([*openai_stream(PARTS)[:3], sse({"error": {"message": "The server is overloaded"}})], 3,
                  "the upstream failed mid-stream: The server is overloaded", id="error-event"),
])
def test_stream_failing_after_start_ends_with_an_error_event(http: httpx.Client, fake: FakeUpstream,
                                                             frames: list[bytes], sent: int, message: str) -> None:
    fake.reply = Reply(events=frames)

    with http.stream("POST", "/v1/chat/completions", json=STREAM_BODY) as response:
        *chunks, last = sse_payloads(response)

    assert chunks == delivered(frames[:sent])
    stream_error(last, message)


def test_stream_complete_without_done_ends_normally(http: httpx.Client, fake: FakeUpstream) -> None:
    frames = openai_stream(PARTS, usage=False, done=False)
    fake.reply = Reply(events=frames)

    with http.stream("POST", "/v1/chat/completions", json=STREAM_BODY) as response:
        payloads = sse_payloads(response)

    assert payloads == [*delivered(frames), "[DONE]"]


def test_stream_cut_through_the_sdk_raises(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.reply = Reply(events=openai_stream(PARTS, usage=False, done=False)[:-1])
    received: list[str] = []

    with pytest.raises(openai.APIError) as raised:
        for chunk in client.chat.completions.create(model="oai/gpt-4o", messages=MESSAGES, stream=True):
            received.append(chunk.choices[0].delta.content or "")

    assert "".join(received) == "".join(PARTS)
    assert raised.value.message == "the upstream ended the stream before it was complete"
    assert raised.value.body == error("the upstream ended the stream before it was complete", "upstream_error",
                                      "upstream_stream_error")


# --- time to first token ------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", [
    pytest.param(Reply(events=openai_stream(PARTS), delay=0.6), id="slow-response-start"),
    pytest.param(Reply(events=[b": waiting\n\n", *openai_stream(PARTS)], event_delay=0.6), id="slow-first-event"),
])
def test_ttft_exceeded_is_408(http: httpx.Client, fake: FakeUpstream, reply: Reply) -> None:
    fake.reply = reply

    response = http.post("/v1/chat/completions", json=STREAM_BODY, headers={"x-gateway-ttft-timeout-ms": "100"})

    assert error_of(response, 408) == error("no streamed chunk arrived within 100 ms (x-gateway-ttft-timeout-ms)",
                                            "timeout_error", "ttft_timeout")
    assert len(fake.requests) == 1


def test_ttft_met_streams_normally(http: httpx.Client, fake: FakeUpstream) -> None:
    frames = openai_stream(PARTS)
    fake.reply = Reply(events=frames)

    with http.stream("POST", "/v1/chat/completions", json={**STREAM_BODY, "stream_options": {"include_usage": True}},
                     headers={"x-gateway-ttft-timeout-ms": "5000"}) as response:
        assert sse_payloads(response) == [*delivered(frames[:-1]), "[DONE]"]


# --- the request deadline (x-gateway-request-timeout) ----------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", ""], ids=["word", "zero", "negative", "fraction", "empty"])
def test_malformed_request_timeout_header_is_400(http: httpx.Client, fake: FakeUpstream, value: str) -> None:
    response = http.post("/v1/chat/completions", json=BODY, headers={"x-gateway-request-timeout": value})

    assert error_of(response, 400) == error(
        "x-gateway-request-timeout must be a positive whole number of milliseconds.", "invalid_request_error",
        "invalid_header", "x-gateway-request-timeout")
    assert fake.requests == []


def test_request_timeout_exceeded_is_504(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.reply = Reply(json=openai_completion(), delay=1.0)

    started = time.monotonic()
    response = http.post("/v1/chat/completions", json=BODY, headers={"x-gateway-request-timeout": "150"})

    assert time.monotonic() - started < 0.9
    assert error_of(response, 504) == error("The request was not answered within 150 ms (x-gateway-request-timeout).",
                                            "timeout_error", "request_timeout")


def test_request_timeout_during_a_stream_is_a_final_error_event(http: httpx.Client, fake: FakeUpstream) -> None:
    frames = openai_stream(PARTS)
    fake.reply = Reply(events=frames, event_delay=0.2)

    with http.stream("POST", "/v1/chat/completions", json=STREAM_BODY,
                     headers={"x-gateway-request-timeout": "500"}) as response:
        payloads = sse_payloads(response)

    assert 1 <= len(payloads) - 1 < len(frames) - 1
    assert payloads[:-1] == delivered(frames[:len(payloads) - 1])
    assert json.loads(payloads[-1]) == {"error": error(
        "The request was not answered within 500 ms (x-gateway-request-timeout).", "timeout_error", "request_timeout")}


def test_request_ids_are_unique(http: httpx.Client) -> None:
    ids = {http.get("/v1/nothing").headers["x-gateway-request-id"] for _ in range(3)}
    ids.add(http.get("/healthz").headers["x-gateway-request-id"])
    assert len(ids) == 4


# --- Anthropic's errors and stream events -------------------------------------------------------------

CLAUDE_BODY = {"model": "claude/claude-sonnet-4-5", "messages": MESSAGES}


def anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_text_events(parts: list[str]) -> list[bytes]:
    """message_start, one text block of ``parts``; no content_block_stop, message_delta or message_stop."""
    return anthropic_text_stream(parts)[:-3]


def content_of(payloads: list[str]) -> str:
    return "".join(json.loads(p)["choices"][0]["delta"].get("content", "") for p in payloads)


@pytest.mark.parametrize(("upstream_status", "body", "status", "expected"), [
    pytest.param(400, anthropic_error("invalid_request_error", "messages: text content blocks must be non-empty"),
                 400, error("claude: messages: text content blocks must be non-empty", "invalid_request_error",
                            "upstream_400"), id="400-kept"),
    pytest.param(401, anthropic_error("authentication_error", "invalid x-api-key sk-ant-api03-canary-abcdef"),
                 502, error("claude: invalid x-api-key [REDACTED]", "upstream_error",
                            "upstream_authentication_failed"), id="401-becomes-502"),
    pytest.param(429, anthropic_error("rate_limit_error", "Number of request tokens has exceeded your limit"),
                 429, error("claude: Number of request tokens has exceeded your limit", "rate_limit_error",
                            "upstream_429"), id="429-kept"),
    pytest.param(529, anthropic_error("overloaded_error", "Overloaded"),
                 502, error("claude: Overloaded", "upstream_error", "upstream_529"), id="529-becomes-502"),
])
def test_anthropic_error_status(http: httpx.Client, fake: FakeUpstream, upstream_status: int,
                                body: dict[str, Any], status: int, expected: dict[str, Any]) -> None:
    fake.reply = Reply(status=upstream_status, json=body)

    response = http.post("/v1/chat/completions", json=CLAUDE_BODY)

    assert error_of(response, status) == expected
    assert "canary" not in response.text


@pytest.mark.parametrize(("frames", "message"), [
    pytest.param([*anthropic_text_events(["one ", "two"]),
                  sse(anthropic_error("overloaded_error", "Overloaded"), "error")],
                 "the upstream failed mid-stream: Overloaded", id="error-event"),
    pytest.param(anthropic_text_events(["one ", "two"]),
                 "the upstream ended the stream before it was complete", id="no-message-stop"),
])
def test_anthropic_stream_failing_after_start(http: httpx.Client, fake: FakeUpstream, frames: list[bytes],
                                              message: str) -> None:
    fake.reply = Reply(events=frames)

    with http.stream("POST", "/v1/chat/completions", json={**CLAUDE_BODY, "stream": True}) as response:
        *chunks, last = sse_payloads(response)

    assert content_of(chunks) == "one two"
    stream_error(last, message)


def test_anthropic_stream_cut_mid_way(http: httpx.Client, fake: FakeUpstream) -> None:
    # frames: message_start, ping, content_block_start, "one ", then the cut
    fake.reply = Reply(events=anthropic_text_events(["one ", "two ", "three"]), cut_after=4)

    with http.stream("POST", "/v1/chat/completions", json={**CLAUDE_BODY, "stream": True}) as response:
        *chunks, last = sse_payloads(response)

    assert content_of(chunks) == "one "
    (error_body,) = json.loads(last).values()
    assert error_body["message"].startswith("the upstream connection was cut mid-stream: ")
    assert error_body["code"] == "upstream_stream_error"


# --- the mock provider failing on purpose ---------------------------------------------------------------

ECHO_BODY = {"model": "demo/echo", "messages": [{"role": "user", "content": "one two three four"}], "stream": True}


def test_mock_cut_stream_ends_with_an_error_event(http: httpx.Client) -> None:
    with http.stream("POST", "/v1/chat/completions", json=ECHO_BODY,
                     headers={"x-mock-stream-chunks": "4", "x-mock-fail-after-chunks": "2"}) as response:
        *chunks, last = sse_payloads(response)

    assert content_of(chunks) == "one two th"  # two chunks of five characters
    stream_error(last, "the upstream connection was cut mid-stream: mock provider cut the stream on purpose")


@pytest.mark.parametrize(("mock_status", "status", "expected"), [
    pytest.param("429", 429, error("demo: mock provider failing on purpose with status 429", "rate_limit_error",
                                   "upstream_429"), id="429-kept"),
    pytest.param("500", 502, error("demo: mock provider failing on purpose with status 500", "upstream_error",
                                   "upstream_500"), id="500-becomes-502"),
    pytest.param("abc", 400, error("x-mock-status must be a whole number from 400 to 599.", "invalid_request_error",
                                   "invalid_header", "x-mock-status"), id="bad-mock-header"),
])
def test_mock_failing_status(http: httpx.Client, mock_status: str, status: int, expected: dict[str, Any]) -> None:
    response = http.post("/v1/chat/completions", json=ECHO_BODY, headers={"x-mock-status": mock_status})

    assert error_of(response, status) == expected


def test_mock_slower_than_ttft_is_408(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=ECHO_BODY,
                         headers={"x-mock-delay-ms": "2000", "x-gateway-ttft-timeout-ms": "50"})

    assert error_of(response, 408) == error("no streamed chunk arrived within 50 ms (x-gateway-ttft-timeout-ms)",
                                            "timeout_error", "ttft_timeout")



def test_upstream_retry_after_reaches_the_client(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.reply = Reply(status=429, json=upstream_error("Rate limit reached for gpt-4o", "rate_limit_error"),
                       headers={"retry-after": "7"})
    response = http.post("/v1/chat/completions", json={"model": "oai/gpt-4o", "messages": [{"role": "user",
                                                                                          "content": "hi"}]})
    assert error_of(response, 429) == error("oai: Rate limit reached for gpt-4o", "rate_limit_error", "upstream_429")
    assert response.headers["retry-after"] == "7"
