"""Every upstream failure the contract names, for every provider type, through the real ``openai``
SDK: upstream 4xx/5xx, a refused key never echoed, a timeout, a refused connection, a stream cut or
stalled after it started (a final SSE error event the SDK raises on), and a client that leaves
mid-stream (the upstream is closed at once). The request's own errors come first: they are the same
whatever the provider."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from fakes import FakeUpstream, Reply, anthropic_text_stream, openai_completion, openai_stream
from servers import served_sdk

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text

LIMIT = 4096
MESSAGES = [{"role": "user", "content": "Hi"}]
PARTS = ["one ", "two ", "three ", "four"]
WORDS = [f"w{i} " for i in range(200)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def openai_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "bad"}}


def anthropic_error(message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


@dataclass(frozen=True)
class Flavour:
    id: str
    account: str
    key: str
    error_body: Callable[[str], dict[str, Any]]
    completion: Callable[[str], dict[str, Any]]
    stream: Callable[[list[str]], list[bytes]]
    frames_for_two_parts: int
    """Frames of ``stream(PARTS)`` up to and including the second text part."""

    def model(self, account: str | None = None) -> str:
        return f"{account or self.account}/m"


def _anthropic_completion(text: str) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1}}


FLAVOURS = [pytest.param(f, id=f.id) for f in (
    # openai_stream: role chunk, then one frame per part
    Flavour("openai", "oai", "sk-oai-canary-0123456789", openai_error, openai_completion, openai_stream, 3),
    Flavour("openai-compatible", "compat", "sk-compat-canary-0123456789", openai_error, openai_completion,
            openai_stream, 3),
    Flavour("azure-openai", "az", "azure-canary-key-0123456789", openai_error, openai_completion, openai_stream, 3),
    # anthropic_text_stream: message_start, ping, content_block_start, then one delta per part
    Flavour("anthropic", "claude", "sk-ant-api03-canary-0123456789", anthropic_error, _anthropic_completion,
            anthropic_text_stream, 5),
)]


def _accounts(flavour_type: str, name: str, key: str, base_url: str) -> str:
    extra = "\n    api_version: '2024-10-21'" if flavour_type == "azure-openai" else ""
    dead = base_url.replace(base_url.split("://")[1].split("/")[0], f"127.0.0.1:{closed_port()}")
    return "".join(f"""
  - name: {account}
    type: {flavour_type}
    base_url: {url}
    api_key: {key}{extra}
    models: [m]{timeout}""" for account, url, timeout in (
        (name, base_url, ""),
        (f"{name}-slow", base_url, "\n    timeout_ms: 150"),
        (f"{name}-dead", dead, ""),
    ))


@pytest.fixture(scope="module")
def client(served_fake: tuple[FakeUpstream, str]) -> Iterator[openai.OpenAI]:
    url = served_fake[1]
    config = load_config_text(f"""
type: gateway-providers-config
providers:{_accounts("openai", "oai", "sk-oai-canary-0123456789", f"{url}/v1")}\
{_accounts("openai-compatible", "compat", "sk-compat-canary-0123456789", f"{url}/compat/v1")}\
{_accounts("azure-openai", "az", "azure-canary-key-0123456789", url)}\
{_accounts("anthropic", "claude", "sk-ant-api03-canary-0123456789", url)}
  - name: demo
    type: mock
    models: [echo]
  - name: demo-slow
    type: mock
    timeout_ms: 150
    models: [echo]
---
type: gateway-server-config
max_request_body_bytes: {LIMIT}
---
type: gateway-logging-config
store: none
""", environ={})
    with served_sdk(create_app(config)) as sdk:
        yield sdk


def error(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": type_, "code": code, "param": param}


def chat(client: openai.OpenAI, model: str, *, stream: bool = False, **kwargs: Any) -> Any:
    answer = client.chat.completions.create(model=model, messages=MESSAGES, stream=stream, **kwargs)  # type: ignore[call-overload]
    return list(answer) if stream else answer


def streamed_text_then_error(client: openai.OpenAI, model: str, **kwargs: Any) -> tuple[str, openai.APIError]:
    """The text the SDK yielded before the stream's final error event, and the error it raised."""
    text = ""
    with pytest.raises(openai.APIError) as raised:
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **kwargs):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert not isinstance(raised.value, openai.APIStatusError), "the stream must have started"
    return text, raised.value


# --- the request itself is wrong: no provider is asked -------------------------------------------------


@pytest.mark.parametrize(("kwargs", "sdk_error", "expected"), [
    pytest.param({"model": "", "messages": MESSAGES}, openai.BadRequestError,
                 error("You must provide a model parameter (a non-empty string).", "invalid_request_error",
                       "missing_required_parameter", "model"), id="missing-model"),
    pytest.param({"model": "oai/m", "messages": []}, openai.BadRequestError,
                 error("You must provide messages: a non-empty array of message objects.",
                       "invalid_request_error", "missing_required_parameter", "messages"), id="missing-messages"),
    pytest.param({"model": "nobody/m", "messages": MESSAGES}, openai.NotFoundError,
                 error("The model 'nobody/m' does not exist or you do not have access to it. "
                       "Address models as 'provider-account/model'; GET /v1/models lists them.",
                       "not_found_error", "model_not_found", "model"), id="unknown-model"),
    pytest.param({"model": "oai/m", "messages": [{"role": "user", "content": "x" * LIMIT}]},
                 openai.APIStatusError,
                 error(f"The request body is larger than the gateway's limit of {LIMIT} bytes.",
                       "invalid_request_error", "request_too_large"), id="body-over-the-limit"),
])
@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_request_errors_through_the_sdk(client: openai.OpenAI, fake: FakeUpstream, kwargs: dict[str, Any],
                                        sdk_error: type[openai.APIStatusError], expected: dict[str, Any],
                                        stream: bool) -> None:
    with pytest.raises(sdk_error) as raised:
        client.chat.completions.create(**kwargs, stream=stream)

    assert raised.value.status_code == {"model_not_found": 404, "request_too_large": 413}.get(expected["code"], 400)
    assert raised.value.body == expected
    assert raised.value.response.headers["content-type"] == "application/json"
    assert fake.requests == []


def test_malformed_json_through_the_sdk(client: openai.OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.post("/chat/completions", content=b'{"model": "oai/m", "messages": [', cast_to=object)

    assert isinstance(raised.value.body, dict)
    assert raised.value.body["message"].startswith("The request body is not valid JSON: ")
    assert (raised.value.body["type"], raised.value.body["code"]) == ("invalid_request_error", "invalid_json")
    assert fake.requests == []


# --- the upstream answers with an error --------------------------------------------------------------------


@pytest.mark.parametrize(("upstream_status", "status", "sdk_error", "type_"), [
    pytest.param(400, 400, openai.BadRequestError, "invalid_request_error", id="400-kept"),
    pytest.param(404, 404, openai.NotFoundError, "invalid_request_error", id="404-kept"),
    pytest.param(429, 429, openai.RateLimitError, "rate_limit_error", id="429-kept"),
    pytest.param(500, 502, openai.InternalServerError, "upstream_error", id="500-becomes-502"),
    pytest.param(503, 503, openai.InternalServerError, "upstream_error", id="503-kept"),
])
@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_upstream_error_status(client: openai.OpenAI, fake: FakeUpstream, flavour: Flavour, stream: bool,
                               upstream_status: int, status: int, sdk_error: type[openai.APIStatusError],
                               type_: str) -> None:
    fake.reply = Reply(status=upstream_status, json=flavour.error_body("max_tokens is too large"))

    with pytest.raises(sdk_error) as raised:
        chat(client, flavour.model(), stream=stream)

    assert raised.value.status_code == status
    assert raised.value.body == error(f"{flavour.account}: max_tokens is too large", type_,
                                      f"upstream_{upstream_status}")
    assert len(fake.requests) == 1


@pytest.mark.parametrize("upstream_status", [401, 403], ids=["401", "403"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_refused_key_is_502_and_never_echoed(client: openai.OpenAI, fake: FakeUpstream, flavour: Flavour,
                                             upstream_status: int) -> None:
    fake.reply = Reply(status=upstream_status, json=flavour.error_body(f"Incorrect API key provided: {flavour.key}."))

    with pytest.raises(openai.InternalServerError) as raised:
        chat(client, flavour.model())

    assert raised.value.status_code == 502
    assert raised.value.body == error(f"{flavour.account}: Incorrect API key provided: [REDACTED].",
                                      "upstream_error", "upstream_authentication_failed")
    assert "canary" not in raised.value.response.text
    assert not any("canary" in value for value in raised.value.response.headers.values())


# --- the upstream does not answer ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_upstream_timeout_is_504(client: openai.OpenAI, fake: FakeUpstream, flavour: Flavour, stream: bool) -> None:
    fake.reply = Reply(json=flavour.completion("too late"), delay=0.6)

    with pytest.raises(openai.InternalServerError) as raised:
        chat(client, flavour.model(f"{flavour.account}-slow"), stream=stream)

    assert raised.value.status_code == 504
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["message"].startswith(f"{flavour.account}-slow: the upstream did not answer in time (0.15 s): ")
    assert (body["type"], body["code"], body["param"]) == ("timeout_error", "upstream_timeout", None)


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_connection_refused_is_502(client: openai.OpenAI, flavour: Flavour, stream: bool) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        chat(client, flavour.model(f"{flavour.account}-dead"), stream=stream)

    assert raised.value.status_code == 502
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["message"].startswith(f"{flavour.account}-dead: could not reach the upstream: ")
    assert (body["type"], body["code"], body["param"]) == ("upstream_error", "upstream_connection_error", None)


# --- failures after the stream started: a final SSE error event -----------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_stream_cut_mid_way_ends_with_an_error_event(client: openai.OpenAI, fake: FakeUpstream,
                                                     flavour: Flavour) -> None:
    fake.reply = Reply(events=flavour.stream(PARTS), cut_after=flavour.frames_for_two_parts)

    text, raised = streamed_text_then_error(client, flavour.model())

    assert text == "one two "
    assert isinstance(raised.body, dict)
    assert raised.body["message"].startswith("the upstream connection was cut mid-stream: ")
    assert (raised.body["type"], raised.body["code"], raised.body["param"]) == (
        "upstream_error", "upstream_stream_error", None)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_stream_stalling_mid_way_ends_with_a_timeout_event(client: openai.OpenAI, fake: FakeUpstream,
                                                           flavour: Flavour) -> None:
    frames = flavour.stream(PARTS)
    # everything up to the first text part at once, then a pause longer than the account's 150 ms timeout
    fake.reply = Reply(events=[b"".join(frames[:flavour.frames_for_two_parts - 1]),
                               *frames[flavour.frames_for_two_parts - 1:]], event_delay=0.6)

    text, raised = streamed_text_then_error(client, flavour.model(f"{flavour.account}-slow"))

    assert text == "one "
    assert raised.body == error("the upstream stopped sending in the middle of the stream", "timeout_error",
                                "upstream_timeout")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_leaving_mid_stream_closes_the_upstream(client: openai.OpenAI, fake: FakeUpstream, flavour: Flavour) -> None:
    fake.reply = Reply(events=flavour.stream(WORDS), event_delay=0.05)

    stream = client.chat.completions.create(model=flavour.model(), messages=MESSAGES, stream=True)
    first, second = next(stream), next(stream)
    stream.close()

    assert [first.choices[0].delta.content, second.choices[0].delta.content] == ["", "w0 "]
    assert fake.stream_abandoned.wait(5), "the gateway kept reading the upstream after the client left"
    fake.reset(Reply(json=flavour.completion("still here")))
    assert chat(client, flavour.model()).choices[0].message.content == "still here"


# --- the mock provider, told to fail -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize(("mock_status", "status", "sdk_error", "type_"), [
    pytest.param("400", 400, openai.BadRequestError, "invalid_request_error", id="400-kept"),
    pytest.param("429", 429, openai.RateLimitError, "rate_limit_error", id="429-kept"),
    pytest.param("500", 502, openai.InternalServerError, "upstream_error", id="500-becomes-502"),
    pytest.param("503", 503, openai.InternalServerError, "upstream_error", id="503-kept"),
])
def test_mock_error_status(client: openai.OpenAI, stream: bool, mock_status: str, status: int,
                           sdk_error: type[openai.APIStatusError], type_: str) -> None:
    with pytest.raises(sdk_error) as raised:
        chat(client, "demo/echo", stream=stream, extra_headers={"x-mock-status": mock_status})

    assert raised.value.status_code == status
    assert raised.value.body == error(f"demo: mock provider failing on purpose with status {mock_status}", type_,
                                      f"upstream_{mock_status}")


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_mock_slower_than_its_timeout_is_504(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        chat(client, "demo-slow/echo", stream=stream, extra_headers={"x-mock-delay-ms": "600"})

    assert raised.value.status_code == 504
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["message"].startswith("demo-slow: the upstream did not answer in time (0.15 s): ")
    assert (body["type"], body["code"], body["param"]) == ("timeout_error", "upstream_timeout", None)


def test_mock_within_its_timeout_answers(client: openai.OpenAI) -> None:
    completion = chat(client, "demo-slow/echo", extra_headers={"x-mock-delay-ms": "50"})
    assert completion.choices[0].message.content == "Hi"


def test_mock_stalling_mid_stream_ends_with_a_timeout_event(client: openai.OpenAI) -> None:
    text, raised = streamed_text_then_error(client, "demo-slow/echo", extra_headers={
        "x-mock-stream-chunks": "2", "x-mock-chunk-delay-ms": "600"})

    assert text == "H"
    assert raised.body == error("the upstream stopped sending in the middle of the stream", "timeout_error",
                                "upstream_timeout")


def test_mock_cut_mid_stream_through_the_sdk(client: openai.OpenAI) -> None:
    text, raised = streamed_text_then_error(client, "demo/echo", extra_headers={
        "x-mock-stream-chunks": "2", "x-mock-fail-after-chunks": "1"})

    assert text == "H"
    assert raised.body == error("the upstream connection was cut mid-stream: mock provider cut the stream on purpose",
                                "upstream_error", "upstream_stream_error")
