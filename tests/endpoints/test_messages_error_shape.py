"""``/v1/messages`` answers errors in Anthropic's shape, whichever layer refuses the request, so that
the real ``anthropic`` SDK raises its own class for each, carrying the gateway's message; chat keeps
OpenAI's shape. The shape chosen per status is also checked for every status the gateway answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fakes import FakeUpstream, Reply
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text
from otel_gateway.errors import (
    ErrorShape,
    GatewayError,
    HeadersTooLargeError,
    InvalidRequestError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from otel_gateway.http._asgi import error_shape_for
from otel_gateway.http._protocol import http_protocol

KEY = "client-key-0123456789"
LIMIT = 4096
MESSAGES = [{"role": "user", "content": "Hi"}]


def config(url: str) -> str:
    return f"""
type: gateway-providers-config
providers:
  - name: claude
    type: anthropic
    base_url: {url}
    api_key: sk-ant-test-key-0123456789
    models: {{sonnet: claude-sonnet-4-5-20250929}}
  - name: oai
    type: openai
    base_url: {url}/v1
    api_key: sk-test-openai-0123456789
    models: [gpt-4o]
---
type: gateway-auth-config
keys:
  - {{name: alice, key: {KEY}, subject: "user:alice", tenant: acme}}
---
type: gateway-server-config
max_request_body_bytes: {LIMIT}
max_header_bytes: 8192
"""


@dataclass(frozen=True)
class Served:
    fake: FakeUpstream
    upstream_url: str
    url: str
    """The gateway's, served with the HTTP front's limits."""


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    fake = FakeUpstream()
    with serve(fake.app) as upstream_url:
        gateway_config = load_config_text(config(upstream_url))
        app = create_app(gateway_config, capture_content=False)
        with serve(app, http=http_protocol(gateway_config.server)) as url:
            yield Served(fake, upstream_url, url)


@pytest.fixture
def fake(served: Served) -> FakeUpstream:
    return served.fake.reset()


@pytest.fixture
def url(served: Served, fake: FakeUpstream) -> str:
    return served.url


def client(url: str, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=10,
                               default_headers={"authorization": f"Bearer {key}"})


def anthropic_error(kind: str, message: str, **extension: str) -> dict[str, Any]:
    """Anthropic's error shape; ``extension``: the gateway's ``param``, when it has one."""
    return {"type": "error", "error": {"type": kind, "message": message, **extension}}


def raised(url: str, exc_type: type[anthropic.APIStatusError], *, key: str = KEY,
           **body: Any) -> anthropic.APIStatusError:
    with client(url, key) as sdk, pytest.raises(exc_type) as info:
        sdk.messages.create(**{"model": "claude/sonnet", "max_tokens": 10, "messages": MESSAGES, **body})
    assert type(info.value) is exc_type
    return info.value


def assert_anthropic(error: anthropic.APIStatusError, status: int, kind: str, message: str,
                     **extension: str) -> None:
    assert error.status_code == status
    assert error.body == anthropic_error(kind, message, **extension)
    assert (error.type, error.api_message) == (kind, message)
    assert len(error.response.headers["x-gateway-request-id"]) == 32


# --- through the anthropic SDK ---------------------------------------------------------------------


def test_a_bad_body_is_a_bad_request(url: str) -> None:
    error = raised(url, anthropic.BadRequestError, messages=[])
    assert_anthropic(error, 400, "invalid_request_error",
                     "You must provide messages: a non-empty array of message objects.",
                     param="messages")


def test_an_unknown_model_is_not_found(url: str, fake: FakeUpstream) -> None:
    error = raised(url, anthropic.NotFoundError, model="claude/nope")
    assert_anthropic(error, 404, "not_found_error",
                     "The model 'claude/nope' does not exist or you do not have access to it. "
                     "Address models as 'provider-account/model'; GET /v1/models lists them.",
                     param="model")
    assert fake.requests == []


def test_a_bad_key_is_an_authentication_error(url: str, fake: FakeUpstream) -> None:
    error = raised(url, anthropic.AuthenticationError, key="wrong-key")
    assert_anthropic(error, 401, "authentication_error", "Invalid gateway key.")
    assert fake.requests == []


def test_a_body_over_the_limit_is_request_too_large(url: str, fake: FakeUpstream) -> None:
    error = raised(url, anthropic.ContentTooLargeError, system="x" * LIMIT)
    assert_anthropic(error, 413, "request_too_large",
                     f"The request body is larger than the gateway's limit of {LIMIT} bytes.")
    assert fake.requests == []


def test_an_upstream_429_is_a_rate_limit_error_with_its_retry_after(url: str, fake: FakeUpstream) -> None:
    fake.reply = Reply(status=429, json=anthropic_error("rate_limit_error", "Too many tokens"),
                       headers={"retry-after": "7"})
    error = raised(url, anthropic.RateLimitError)
    assert_anthropic(error, 429, "rate_limit_error", "claude: Too many tokens")
    assert error.response.headers["retry-after"] == "7"


def test_an_upstream_500_is_an_internal_server_error(url: str, fake: FakeUpstream) -> None:
    fake.reply = Reply(status=500, json=anthropic_error("api_error", "Internal server error"))
    error = raised(url, anthropic.InternalServerError)
    assert_anthropic(error, 502, "api_error", "claude: Internal server error")


def test_an_upstream_503_is_overloaded(url: str, fake: FakeUpstream) -> None:
    fake.reply = Reply(status=503, json=anthropic_error("overloaded_error", "Overloaded"))
    error = raised(url, anthropic.ServiceUnavailableError)
    assert_anthropic(error, 503, "overloaded_error", "claude: Overloaded")


def test_headers_too_large_from_the_http_front(url: str) -> None:
    """Refused by the HTTP front before the app sees the request: still Anthropic's shape."""
    error = raised(url, anthropic.RequestHeaderFieldsTooLargeError, extra_headers={"x-big": "y" * 9000})
    assert error.status_code == 431
    assert error.body == anthropic_error(
        "invalid_request_error", "The request line and headers are limited to 8192 bytes and 256 header fields.")


def test_a_stream_request_fails_the_same_way(url: str) -> None:
    with client(url) as sdk, pytest.raises(anthropic.NotFoundError) as info:
        sdk.messages.create(model="claude/nope", max_tokens=10, messages=MESSAGES, stream=True)
    assert info.value.body == anthropic_error(
        "not_found_error", "The model 'claude/nope' does not exist or you do not have access to it. "
        "Address models as 'provider-account/model'; GET /v1/models lists them.",
        param="model")


# --- other paths keep OpenAI's shape ---------------------------------------------------------------


def test_chat_keeps_openai_shape(url: str) -> None:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="wrong-key", max_retries=0, timeout=10) as sdk, \
            pytest.raises(openai.AuthenticationError) as info:
        sdk.chat.completions.create(model="oai/gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.body == {"message": "Invalid gateway key.", "type": "authentication_error",
                               "code": "invalid_api_key", "param": None}


def test_a_path_under_messages_is_anthropic_shaped_and_a_lookalike_is_not(url: str) -> None:
    headers = {"authorization": "Bearer wrong-key"}
    with httpx.Client(base_url=url, timeout=10, headers=headers) as http:
        under = http.post("/v1/messages/count_tokens", json={})
        lookalike = http.post("/v1/messagesx", json={})
    assert (under.status_code, under.json()) == (401, anthropic_error(
        "authentication_error", "Invalid gateway key."))
    assert (lookalike.status_code, lookalike.json()["error"]["type"]) == (401, "authentication_error")
    assert "type" not in lookalike.json()


def test_a_header_timeout_on_messages_is_anthropic_shaped() -> None:
    """The head of a request, its path sent, then nothing: the front's 408 names the path's shape."""
    gateway_config = load_config_text(config("http://127.0.0.1:1").replace(
        "max_header_bytes: 8192", "max_header_bytes: 8192\nheader_timeout_ms: 100"))
    with serve(create_app(gateway_config), http=http_protocol(gateway_config.server)) as short_url:
        host, port = short_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert httpx.Response(200, content=body).json() == anthropic_error(
        "invalid_request_error", "The request headers did not arrive within 0.1 s.")


# --- the type for each status ----------------------------------------------------------------------


@pytest.mark.parametrize(("error", "kind"), [
    pytest.param(InvalidRequestError("m"), "invalid_request_error", id="400"),
    pytest.param(PayloadTooLargeError("m"), "request_too_large", id="413"),
    pytest.param(HeadersTooLargeError("m"), "invalid_request_error", id="431"),
    pytest.param(RequestTimeoutError("m"), "invalid_request_error", id="408"),
    pytest.param(UpstreamStatusError("m", upstream_status=409), "invalid_request_error", id="409"),
    pytest.param(UpstreamStatusError("m", upstream_status=429), "rate_limit_error", id="429"),
    pytest.param(GatewayError("m"), "api_error", id="500"),
    pytest.param(UpstreamStatusError("m", upstream_status=401), "api_error", id="502"),
    pytest.param(OverloadedError("m"), "overloaded_error", id="503"),
    pytest.param(UpstreamTimeoutError("m"), "api_error", id="504"),
])
def test_anthropic_type_per_status(error: GatewayError, kind: str) -> None:
    """The type by status alone."""
    assert error.shaped(ErrorShape.ANTHROPIC) == {"type": "error", "error": {"type": kind, "message": "m"}}
    assert error.shaped(ErrorShape.OPENAI) == error.body()


@pytest.mark.parametrize(("path", "shape"), [
    ("/v1/messages", ErrorShape.ANTHROPIC),
    ("/v1/messages/count_tokens", ErrorShape.ANTHROPIC),
    ("/v1/messages/batches/x", ErrorShape.ANTHROPIC),
    ("/v1/messagesx", ErrorShape.OPENAI),
    ("/v1/chat/completions", ErrorShape.OPENAI),
    ("/v1", ErrorShape.OPENAI),
    ("", ErrorShape.OPENAI),
])
def test_error_shape_for(path: str, shape: ErrorShape) -> None:
    assert error_shape_for(path) is shape


# --- the gateway's own rate limit ------------------------------------------------------------------

RATE_LIMITED = """
---
type: gateway-rate-limiting-config
rules:
  - {id: "{user}-rpm", when: {models: [claude/sonnet]}, limit_to: 1, unit: requests_per_minute}
"""


def test_a_rate_limit_rule_on_the_model_is_a_rate_limit_error(served: Served, fake: FakeUpstream) -> None:
    """``/v1/messages`` goes through the rate limiter like chat (issue 10, item 1)."""
    fake.reply = Reply(json={"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
                             "stop_reason": "end_turn", "stop_sequence": None,
                             "usage": {"input_tokens": 1, "output_tokens": 1}})
    gateway_config = load_config_text(config(served.upstream_url) + RATE_LIMITED)
    with serve(create_app(gateway_config)) as url:
        with client(url) as sdk:
            sdk.messages.create(model="claude/sonnet", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
        error = raised(url, anthropic.RateLimitError)
    assert error.status_code == 429
    assert error.type == "rate_limit_error"
    assert error.body == anthropic_error("rate_limit_error", str(error.api_message))
    assert int(error.response.headers["retry-after"]) >= 1
    assert len(fake.requests) == 1



def test_a_param_extends_the_anthropic_error() -> None:
    error = InvalidRequestError("m", param="max_tokens")
    assert error.anthropic_body() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "m", "param": "max_tokens"}}
