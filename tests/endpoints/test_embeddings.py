"""``POST /v1/embeddings`` and ``POST /v1/moderations`` through the real ``openai`` SDK: every
provider type, the mock's deterministic answers, errors, spans, the request log, a client leaving."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes import Reply
from opentelemetry.trace import SpanKind, StatusCode

from .endpoint_fakes import ProxyUpstream, RawReply
from .harness import AZURE_KEY, CLIENT_KEY, OPENAI_KEY, Gateway

EMBEDDINGS = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]},
             {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 3, "total_tokens": 3},
}
CATEGORIES = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
              "violence/graphic"]
MODERATION = {
    "id": "modr-123",
    "model": "omni-moderation-2024-09-26",
    "results": [{
        "flagged": True,
        "categories": {name: name == "violence" for name in CATEGORIES},
        "category_scores": {name: 0.9 if name == "violence" else 0.01 for name in CATEGORIES},
        "category_applied_input_types": {name: ["text"] for name in CATEGORIES},
    }],
}


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10) as sdk:
        yield sdk


def only_request(upstream: ProxyUpstream) -> Any:
    (request,) = upstream.requests
    return request


# --- each provider type ---------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "path", "query", "auth"), [
    pytest.param("oai/text-embedding-3-small", "/v1/embeddings", "", {"authorization": f"Bearer {OPENAI_KEY}"},
                 id="openai"),
    pytest.param("compat/embed", "/compat/v1/embeddings", "", {}, id="openai-compatible"),
    pytest.param("az/embed", "/openai/deployments/my-embedding-deployment/embeddings", "api-version=2024-10-21",
                 {"api-key": AZURE_KEY}, id="azure-openai"),
])
def test_embeddings_reach_each_provider_and_come_back(
    client: openai.OpenAI, upstream: ProxyUpstream, model: str, path: str, query: str, auth: dict[str, str]
) -> None:
    upstream.reply = Reply(json=EMBEDDINGS)

    answer = client.embeddings.create(model=model, input=["hello world", "bye"], encoding_format="float")

    assert [item.embedding for item in answer.data] == [[0.25, -0.5], [1.0, 0.0]]
    assert (answer.model, answer.usage.prompt_tokens, answer.usage.total_tokens) == ("text-embedding-3-small", 3, 3)
    request = only_request(upstream)
    assert (request.method, request.path, request.query) == ("POST", path, query)
    upstream_model = {"oai/text-embedding-3-small": "text-embedding-3-small", "compat/embed": "nomic-embed-text",
                      "az/embed": "my-embedding-deployment"}[model]
    assert request.body == {"input": ["hello world", "bye"], "model": upstream_model, "encoding_format": "float"}
    assert {name: request.headers.get(name) for name in auth} == auth
    for name in ("authorization", "api-key"):
        if name not in auth:
            assert name not in request.headers
    assert CLIENT_KEY not in str(request.headers)


def test_moderations_reach_openai_and_come_back(client: openai.OpenAI, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json=MODERATION)

    answer = client.moderations.create(model="oai/omni-moderation-latest", input="I will hurt you")

    (result,) = answer.results
    assert (answer.id, answer.model, result.flagged, result.categories.violence) == (
        "modr-123", "omni-moderation-2024-09-26", True, True)
    assert result.category_scores.violence == 0.9
    request = only_request(upstream)
    assert (request.path, request.body) == ("/v1/moderations", {"input": "I will hurt you",
                                                                 "model": "omni-moderation-latest"})
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_the_upstream_answer_is_passed_back_byte_for_byte(http: httpx.Client, upstream: ProxyUpstream) -> None:
    raw = b'{"object":"list","data":[],"model":"m","usage":{"prompt_tokens":1,"total_tokens":1},"extra":{"x":1}}'
    upstream.reply = RawReply(body=raw)

    response = http.post("/v1/embeddings", json={"model": "oai/text-embedding-3-small", "input": "x"})

    assert (response.status_code, response.content) == (200, raw)
    assert response.headers["content-type"] == "application/json"
    assert len(response.headers["x-gateway-request-id"]) == 32


# --- the mock: deterministic, no network -----------------------------------------------------------


def test_mock_embeddings_are_deterministic_unit_vectors(client: openai.OpenAI) -> None:
    first = client.embeddings.create(model="demo/embed", input=["hello world", "other"])  # the SDK asks for base64
    again = client.embeddings.create(model="demo/embed", input="hello world", encoding_format="float")
    wide = client.embeddings.create(model="demo/embed", input="hello world", dimensions=16, encoding_format="float")

    hello, other = (item.embedding for item in first.data)
    assert (len(hello), len(other), len(wide.data[0].embedding)) == (8, 8, 16)
    assert hello != other
    assert hello == pytest.approx(again.data[0].embedding, rel=1e-6)
    assert math.fsum(v * v for v in again.data[0].embedding) == pytest.approx(1.0)
    assert math.fsum(v * v for v in wide.data[0].embedding) == pytest.approx(1.0)
    assert (first.model, first.usage.prompt_tokens, first.usage.total_tokens) == ("embed", 3, 3)


def test_mock_moderations_flag_the_categories_named(client: openai.OpenAI) -> None:
    answer = client.moderations.create(model="demo/moderation", input=["a story of violence and hate", "a kitten"])

    flagged, clean = answer.results
    assert answer.id.startswith("modr-mock-")
    assert (flagged.flagged, flagged.categories.violence, flagged.categories.hate, flagged.categories.sexual) == (
        True, True, True, False)
    assert (flagged.category_scores.violence, flagged.category_scores.sexual) == (0.99, 0.0001)
    assert clean.flagged is False
    assert not any(clean.categories.model_dump().values())


def test_the_mock_can_fail_on_purpose(http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", json={"model": "demo/embed", "input": "x"}, headers={"x-mock-status": "503"})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_503"


# --- what cannot be done ---------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "model", "message"), [
    pytest.param("/v1/embeddings", "claude/sonnet",
                 "The provider 'claude' (type anthropic) has no /v1/embeddings endpoint.", id="anthropic-embeddings"),
    pytest.param("/v1/moderations", "claude/sonnet",
                 "The provider 'claude' (type anthropic) has no /v1/moderations endpoint.", id="anthropic-moderations"),
    pytest.param("/v1/moderations", "az/embed",
                 "The provider 'az' (type azure-openai) has no /v1/moderations endpoint.", id="azure-moderations"),
])
def test_an_endpoint_the_provider_lacks_is_a_clear_400(
    http: httpx.Client, upstream: ProxyUpstream, path: str, model: str, message: str
) -> None:
    response = http.post(path, json={"model": model, "input": "x"})

    assert response.status_code == 400
    assert response.json() == {"error": {"message": message, "type": "invalid_request_error",
                                         "code": "unsupported_endpoint", "param": "model"}}
    assert upstream.requests == []


@pytest.mark.parametrize(("content", "status", "code", "param"), [
    pytest.param(b"{not json", 400, "invalid_json", None, id="malformed"),
    pytest.param(b"", 400, "invalid_json", None, id="empty"),
    pytest.param(b"[1, 2]", 400, "invalid_json", None, id="not-an-object"),
    pytest.param(b'{"input": "x"}', 400, "missing_required_parameter", "model", id="no-model"),
    pytest.param(b'{"model": "", "input": "x"}', 400, "missing_required_parameter", "model", id="empty-model"),
    pytest.param(b'{"model": "oai/text-embedding-3-small"}', 400, "missing_required_parameter", "input",
                 id="no-input"),
    pytest.param(b'{"model": "nope/x", "input": "x"}', 404, "model_not_found", "model", id="unknown-model"),
    pytest.param(b'{"model": "oai/x", "input": "' + b"x" * 70_000 + b'"}', 413, "request_too_large", None,
                 id="too-large"),
])
@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/moderations"])
def test_bad_requests(
    http: httpx.Client, upstream: ProxyUpstream, path: str, content: bytes, status: int, code: str, param: str | None
) -> None:
    response = http.post(path, content=content, headers={"content-type": "application/json"})

    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert upstream.requests == []


# --- upstream failures ------------------------------------------------------------------------------


@pytest.mark.parametrize(("upstream_status", "status", "code", "kind"), [
    pytest.param(400, 400, "upstream_400", "invalid_request_error", id="400"),
    pytest.param(401, 502, "upstream_authentication_failed", "upstream_error", id="401"),
    pytest.param(429, 429, "upstream_429", "rate_limit_error", id="429"),
    pytest.param(500, 502, "upstream_500", "upstream_error", id="500"),
    pytest.param(503, 503, "upstream_503", "upstream_error", id="503"),
])
def test_upstream_error_status(
    http: httpx.Client, upstream: ProxyUpstream, upstream_status: int, status: int, code: str, kind: str
) -> None:
    message = f"Incorrect API key provided: {OPENAI_KEY}"
    upstream.reply = Reply(status=upstream_status, json={"error": {"message": message, "type": "x"}},
                           headers={"retry-after": "7"})

    response = http.post("/v1/embeddings", json={"model": "oai/text-embedding-3-small", "input": "x"})

    assert response.status_code == status
    assert response.json() == {"error": {"message": "oai: Incorrect API key provided: [REDACTED]", "type": kind,
                                         "code": code, "param": None}}
    assert response.headers["retry-after"] == "7"
    assert OPENAI_KEY not in response.text


def test_an_upstream_body_that_is_not_json_is_502(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = RawReply(body=b"<html>oops</html>", content_type="text/html")

    response = http.post("/v1/embeddings", json={"model": "oai/text-embedding-3-small", "input": "x"})

    assert response.status_code == 502
    assert response.json()["error"]["message"] == "oai: the upstream answered with a body that is not JSON"


def test_an_upstream_timeout_is_504(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json=EMBEDDINGS, delay=2)

    response = http.post("/v1/embeddings", json={"model": "slow/text-embedding-3-small", "input": "x"})

    assert response.status_code == 504
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("timeout_error", "upstream_timeout")
    assert error["message"].startswith("slow: the upstream did not answer in time (0.3 s)")


def test_a_refused_connection_is_502(http: httpx.Client) -> None:
    response = http.post("/v1/moderations", json={"model": "dead/text-embedding-3-small", "input": "x"})

    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_connection_error")
    assert error["message"].startswith("dead: could not reach the upstream: ")
    assert "sk-dead-provider-key-0123" not in response.text


# --- a client that leaves ----------------------------------------------------------------------------


def test_a_client_that_leaves_closes_the_upstream_call(gateway: Gateway, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json=EMBEDDINGS, delay=5)

    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=gateway.url, timeout=0.3) as http:
        http.post("/v1/embeddings", json={"model": "oai/text-embedding-3-small", "input": "x"})

    assert upstream.gateway_left.wait(3), "the gateway kept waiting for the upstream after the client left"
    exchange = gateway.log.next()
    assert (exchange.status, exchange.response) == ("cancelled", None)
    (span,) = gateway.spans("embeddings")
    assert span.attributes is not None and span.attributes["error.type"] == "cancelled"


# --- spans and the request log ---------------------------------------------------------------------


def test_an_embeddings_span_parents_the_upstream_call(gateway: Gateway, client: openai.OpenAI,
                                                      upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json=EMBEDDINGS)

    client.embeddings.create(model="oai/text-embedding-3-small", input=["hello world", "bye"], encoding_format="float")

    gateway.log.next()  # the request is over
    (span,) = gateway.spans("embeddings")
    assert span.kind == SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "oai/text-embedding-3-small",
        "gen_ai.request.encoding_formats": ("float",),
        "server.address": "127.0.0.1",
        "server.port": gateway.upstream_port,
        "gen_ai.response.model": "text-embedding-3-small",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.embeddings.dimension.count": 2,
    }
    (http_span,) = gateway.spans("POST")
    assert http_span.kind == SpanKind.CLIENT
    assert http_span.parent is not None and http_span.parent.span_id == span.context.span_id
    (server,) = [s for s in gateway.exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert (server.name, span.parent is not None and span.parent.span_id) == (
        "POST /v1/embeddings", server.context.span_id)


def test_a_failed_call_marks_its_span(gateway: Gateway, http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(status=500, json={"error": {"message": "boom"}})

    http.post("/v1/moderations", json={"model": "oai/omni-moderation-latest", "input": "x"})

    gateway.log.next()
    (span,) = gateway.spans("moderations")
    assert span.attributes is not None
    assert (span.attributes["gen_ai.operation.name"], span.attributes["error.type"]) == ("moderations", "500")
    assert span.status.status_code == StatusCode.ERROR


def test_an_embeddings_request_is_logged(gateway: Gateway, client: openai.OpenAI, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json=EMBEDDINGS, headers={"x-request-id": "req_upstream_1"})

    answer = client.embeddings.with_raw_response.create(
        model="oai/text-embedding-3-small", input=["hello world", "bye"], encoding_format="float",
        extra_headers={"x-gateway-metadata": '{"project_id": "p1"}'},
    )

    exchange = gateway.log.next()
    assert exchange.request_id == answer.headers["x-gateway-request-id"]
    assert (exchange.endpoint, exchange.method, exchange.model, exchange.stream) == (
        "/v1/embeddings", "POST", "oai/text-embedding-3-small", False)
    assert exchange.request == {"model": "oai/text-embedding-3-small", "input": ["hello world", "bye"],
                                "encoding_format": "float"}
    assert (exchange.response, exchange.usage) == (EMBEDDINGS, {"prompt_tokens": 3, "total_tokens": 3})
    assert (exchange.status, exchange.http_status, exchange.error) == ("success", 200, None)
    outcome = exchange.outcome
    assert (outcome.provider, outcome.provider_type, outcome.upstream_model, outcome.provider_request_id,
            outcome.attempts) == ("oai", "openai", "text-embedding-3-small", "req_upstream_1", 1)
    assert dict(exchange.metadata) == {"project_id": "p1"}
    assert exchange.request_headers["authorization"] == f"Bearer {CLIENT_KEY}"  # redacted when the record is built
    (server,) = [s for s in gateway.exporter.get_finished_spans() if s.name == "POST /v1/embeddings"]
    assert exchange.trace_id == format(server.context.trace_id, "032x")
    assert exchange.finished_monotonic is not None


def test_a_failed_request_is_logged(gateway: Gateway, http: httpx.Client) -> None:
    http.post("/v1/embeddings", json={"model": "nope/x", "input": "x"})

    exchange = gateway.log.next()
    assert (exchange.status, exchange.http_status, exchange.model) == ("error", 404, "nope/x")
    assert exchange.error is not None and exchange.error["error"]["code"] == "model_not_found"
