"""Every other ``/v1/...`` path: a transparent proxy to the provider account named by
``x-gateway-provider``, bodies streamed both ways, logged with metadata only."""

from __future__ import annotations

import socket
import time

import httpx
import orjson
import pytest
from fakes import Reply, openai_stream
from opentelemetry.trace import SpanKind

from .endpoint_fakes import ProxyUpstream, RawReply
from .harness import ANTHROPIC_KEY, OPENAI_KEY, Gateway

OAI = {"x-gateway-provider": "oai"}
RESPONSE = {"id": "resp_1", "object": "response", "status": "completed", "output": []}


def test_a_json_request_is_passed_through_and_logged_by_metadata(
    gateway: Gateway, http: httpx.Client, upstream: ProxyUpstream
) -> None:
    raw = orjson.dumps(RESPONSE)
    upstream.reply = RawReply(status=201, body=raw, headers={"x-request-id": "req_7"})
    body = {"model": "gpt-4o", "input": "secret prompt"}

    response = http.post("/v1/responses", json=body, params={"include": "usage"}, headers=OAI)

    assert (response.status_code, response.content, response.headers["x-request-id"]) == (201, raw, "req_7")
    (request,) = upstream.requests
    assert (request.method, request.path, request.query, request.body) == (
        "POST", "/v1/responses", "include=usage", body)
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    exchange = gateway.log.next()
    assert (exchange.endpoint, exchange.query, exchange.model, exchange.status, exchange.http_status) == (
        "/v1/responses", "include=usage", None, "success", 201)
    assert exchange.request == {"content_type": "application/json", "size": len(orjson.dumps(body))}
    assert exchange.response == {"content_type": "application/json", "size": len(raw)}
    assert exchange.outcome.provider_request_id == "req_7"


def test_the_clients_key_in_the_query_is_not_passed_on(gateway: Gateway, http: httpx.Client,
                                                       upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json={"ok": True})

    response = http.get("/v1/vector_stores", params={"key": "sk-client-own-key-0123", "limit": "2", "k": "client-key"},
                        headers={**OAI, "authorization": "Bearer sk-client-own-key-0123", "x-api-key": "client-key"})

    assert response.status_code == 200
    (request,) = upstream.requests
    assert request.query == "limit=2"
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    (client_span,) = [s for s in gateway.exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert "client" not in client_span.to_json()
    assert gateway.log.next().query == "key=sk-client-own-key-0123&limit=2&k=client-key"  # as sent; the record redacts


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT", "PATCH", "OPTIONS"])
def test_every_method_and_path_is_kept(http: httpx.Client, upstream: ProxyUpstream, method: str) -> None:
    upstream.reply = Reply(json={"ok": True})

    response = http.request(method, "/v1/vector_stores/vs%3A1/files", params={"a": "1", "b": "x y"}, headers=OAI,
                            content=b'{"x": 1}' if method in ("PUT", "PATCH") else None)

    assert (response.status_code, response.json()) == (200, {"ok": True})
    (request,) = upstream.requests
    assert (request.method, request.path, request.query) == (method, "/v1/vector_stores/vs:1/files", "a=1&b=x+y")
    assert request.body == (b'{"x": 1}' if method in ("PUT", "PATCH") else b"")


def test_a_percent_encoded_path_goes_upstream_as_sent(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json={})

    http.get("/v1/models/ft%3Agpt-4o%3Aacme", headers=OAI)

    assert upstream.requests[0].path == "/v1/models/ft:gpt-4o:acme"  # as decoded by the upstream server


def test_a_method_the_chat_route_does_not_take_is_passed_through(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json={"object": "list", "data": []})

    response = http.get("/v1/chat/completions", params={"limit": "5"}, headers=OAI)

    assert response.status_code == 200
    assert (upstream.requests[0].path, upstream.requests[0].query) == ("/v1/chat/completions", "limit=5")


def test_anthropic_paths_get_its_key_and_version(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json={"input_tokens": 12})

    http.post("/v1/messages/count_tokens", json={"model": "claude-sonnet-4-5", "messages": []},
              headers={"x-gateway-provider": "claude", "x-api-key": "client-key"})
    http.get("/v1/models", headers={"x-gateway-provider": "claude"})  # the gateway's own route wins
    http.get("/v1/models/claude-sonnet-4-5", headers={"x-gateway-provider": "claude",
                                                       "anthropic-version": "2099-01-01"})

    count, model = upstream.requests
    assert (count.path, count.headers["x-api-key"], count.headers["anthropic-version"]) == (
        "/v1/messages/count_tokens", ANTHROPIC_KEY, "2023-06-01")
    assert (model.path, model.headers["anthropic-version"]) == ("/v1/models/claude-sonnet-4-5", "2099-01-01")


def test_the_answer_encoding_is_left_to_the_client(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = RawReply(body=b"\x1f\x8b compressed", content_type="application/json",
                              headers={"content-encoding": "gzip"})

    with http.stream("GET", "/v1/responses/resp_1", headers={**OAI, "accept-encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())

    assert raw == b"\x1f\x8b compressed"
    assert upstream.requests[0].headers["accept-encoding"] == "gzip"


def test_a_streamed_request_body_goes_upstream_whole(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json={})
    parts = [b"a" * 100_000, b"b" * 100_000, b"c" * 7]

    http.post("/v1/uploads/up_1/parts", content=iter(parts),
              headers={**OAI, "content-type": "application/octet-stream"})

    (request,) = upstream.requests
    assert request.body == b"".join(parts)
    assert request.headers["transfer-encoding"] == "chunked"


def test_an_event_stream_is_relayed_as_it_arrives(gateway: Gateway, http: httpx.Client,
                                                  upstream: ProxyUpstream) -> None:
    frames = openai_stream(["a", "b", "c", "d"])
    upstream.reply = Reply(events=frames, event_delay=0.1)

    started = time.monotonic()
    with http.stream("POST", "/v1/responses", json={"stream": True}, headers=OAI) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        first_after = time.monotonic() - started
        rest = b"".join(chunks)

    assert first_after < 0.1 * (len(frames) - 1) / 2
    assert first + rest == b"".join(frames)
    exchange = gateway.log.next()
    assert (exchange.stream, exchange.response) == (True, {"content_type": "text/event-stream",
                                                           "size": len(b"".join(frames))})


def test_an_event_stream_cut_upstream_ends_with_an_error_event(gateway: Gateway, http: httpx.Client,
                                                               upstream: ProxyUpstream) -> None:
    frames = openai_stream(["a", "b", "c", "d"])
    upstream.reply = Reply(events=frames, cut_after=2)

    response = http.post("/v1/responses", json={"stream": True}, headers=OAI)

    assert response.status_code == 200
    assert response.content == b"".join(frames[:2]) + b"data: " + orjson.dumps({"error": {
        "message": "oai: the upstream answer broke off: RemoteProtocolError", "type": "upstream_error",
        "code": "upstream_stream_error", "param": None}}) + b"\n\n"
    exchange = gateway.log.next()
    assert (exchange.status, exchange.http_status) == ("error", 200)


def test_any_other_body_cut_upstream_is_cut_for_the_client(gateway: Gateway, http: httpx.Client,
                                                           upstream: ProxyUpstream) -> None:
    upstream.reply = RawReply(chunks=[b"part one, ", b"part two, ", b"part three"], cut_after=2,
                              content_type="application/octet-stream")

    with pytest.raises(httpx.RemoteProtocolError):
        http.get("/v1/containers/c_1/files/f_1/content", headers=OAI)

    exchange = gateway.log.next()
    assert exchange.status == "error"
    assert exchange.error is not None and exchange.error["error"]["code"] == "upstream_stream_error"
    assert http.get("/healthz").status_code == 200


def test_leaving_mid_stream_closes_the_upstream(gateway: Gateway, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(events=openai_stream([f"w{i}" for i in range(200)]), event_delay=0.05)

    with httpx.Client(base_url=gateway.url, timeout=5) as http, http.stream(
        "POST", "/v1/responses", json={"stream": True}, headers=OAI
    ) as response:
        next(response.iter_raw())

    assert upstream.stream_abandoned.wait(5), "the gateway kept reading the upstream after the client left"
    assert gateway.log.next().status == "cancelled"


def test_leaving_while_the_upstream_thinks_closes_it(gateway: Gateway, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json={}, delay=5)

    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=gateway.url, timeout=0.3) as http:
        http.get("/v1/responses/resp_1", headers=OAI)

    assert upstream.gateway_left.wait(3), "the gateway kept waiting for the upstream after the client left"
    assert gateway.log.next().status == "cancelled"


@pytest.mark.parametrize(("method", "path", "status", "message"), [
    pytest.param("POST", "/v1/responses", 404, "Unknown path: POST /v1/responses. To pass it through to a provider, "
                 "name the provider account in the x-gateway-provider header.", id="unknown-path"),
    pytest.param("GET", "/v1/chat/completions", 405, "Method Not Allowed", id="a-gateway-path"),
])
def test_without_a_provider_only_the_gateway_answers(http: httpx.Client, upstream: ProxyUpstream, method: str,
                                                     path: str, status: int, message: str) -> None:
    response = http.request(method, path, headers={"x-gateway-provider": ""})

    assert response.status_code == status
    assert response.json()["error"]["message"] == message
    assert upstream.requests == []


@pytest.mark.parametrize(("headers", "status", "code"), [
    pytest.param({"x-gateway-provider": "nope"}, 404, "provider_not_found", id="unknown-provider"),
    pytest.param({"x-gateway-provider": "dead"}, 502, "upstream_connection_error", id="refused"),
    pytest.param({"x-gateway-provider": "demo"}, 404, "upstream_404", id="the-mock"),
])
def test_errors(http: httpx.Client, headers: dict[str, str], status: int, code: str) -> None:
    response = http.post("/v1/responses", json={"model": "x"}, headers=headers)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert "x-gateway-request-id" in response.headers


def test_an_upstream_timeout_is_504(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json={}, delay=2)

    response = http.get("/v1/responses/resp_1", headers={"x-gateway-provider": "slow"})

    assert (response.status_code, response.json()["error"]["code"]) == (504, "upstream_timeout")


def test_paths_outside_v1_are_still_unknown(http: httpx.Client) -> None:
    response = http.get("/v2/anything", headers=OAI)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_path"


def test_a_path_cannot_climb_out_of_v1(gateway: Gateway, upstream: ProxyUpstream) -> None:
    url = httpx.URL(gateway.url)
    with socket.create_connection((url.host, url.port)) as sock:  # raw: clients resolve dot segments themselves
        sock.sendall(b"GET /v1/%2e%2e/dashboard HTTP/1.1\r\nhost: x\r\nx-gateway-provider: oai\r\n"
                     b"connection: close\r\n\r\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b""))

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"code":"invalid_path"' in answer
    assert upstream.requests == []
