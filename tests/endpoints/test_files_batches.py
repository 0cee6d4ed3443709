"""``/v1/files`` and ``/v1/batches`` through the real ``openai`` SDK, passed through to the provider
account named by ``x-gateway-provider``: uploads streamed, the provider's credentials in place of
the client's, query strings kept, logged with small JSON bodies and upload metadata only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from fakes import Reply

from .endpoint_fakes import ProxyUpstream, RawReply
from .harness import AZURE_KEY, CLIENT_KEY, OPENAI_KEY, Gateway

OAI = {"x-gateway-provider": "oai"}
JSONL = b'{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n' * 3
FILE = {"id": "file-abc", "object": "file", "bytes": len(JSONL), "created_at": 1700000000,
        "filename": "batch.jsonl", "purpose": "batch", "status": "processed"}
BATCH = {"id": "batch_abc", "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
         "input_file_id": "file-abc", "completion_window": "24h", "status": "validating", "created_at": 1700000000}


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10) as sdk:
        yield sdk


def only_request(upstream: ProxyUpstream) -> Any:
    (request,) = upstream.requests
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "x-gateway-provider" not in request.headers
    assert CLIENT_KEY not in str(request.headers)
    return request


# --- files -----------------------------------------------------------------------------------------


def test_an_upload_is_passed_through_and_logged_without_its_bytes(
    gateway: Gateway, client: openai.OpenAI, upstream: ProxyUpstream
) -> None:
    upstream.reply = Reply(json=FILE)

    created = client.files.create(file=("batch.jsonl", JSONL, "application/jsonl"), purpose="batch",
                                  extra_headers=OAI)

    assert (created.id, created.bytes, created.filename) == ("file-abc", len(JSONL), "batch.jsonl")
    request = only_request(upstream)
    assert (request.method, request.path, request.query) == ("POST", "/v1/files", "")
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.partition("boundary=")[2].encode()
    assert JSONL in request.body
    assert request.body.count(b"--" + boundary) == 3
    assert int(request.headers["content-length"]) == len(request.body)
    assert "transfer-encoding" not in request.headers
    exchange = gateway.log.next()
    assert (exchange.endpoint, exchange.method, exchange.model, exchange.status, exchange.http_status) == (
        "/v1/files", "POST", None, "success", 200)
    assert exchange.request == {
        "content_type": "multipart/form-data", "size": len(request.body), "fields": {"purpose": "batch"},
        "files": [{"field": "file", "filename": "batch.jsonl", "content_type": "application/jsonl"}],
    }
    assert exchange.response == FILE
    assert (exchange.outcome.provider, exchange.outcome.provider_type) == ("oai", "openai")


def test_files_are_listed_retrieved_read_and_deleted(client: openai.OpenAI, upstream: ProxyUpstream) -> None:
    upstream.replies.update({
        "/v1/files": Reply(json={"object": "list", "data": [FILE], "has_more": False}),
        "/v1/files/file-abc": Reply(json=FILE),
        "/v1/files/file-abc/content": RawReply(body=JSONL, content_type="application/octet-stream"),
    })

    listed = client.files.list(purpose="batch", limit=2, extra_headers=OAI)
    retrieved = client.files.retrieve("file-abc", extra_headers=OAI)
    content = client.files.content("file-abc", extra_headers=OAI)
    upstream.replies["/v1/files/file-abc"] = Reply(json={"id": "file-abc", "object": "file", "deleted": True})
    deleted = client.files.delete("file-abc", extra_headers=OAI)

    assert [f.id for f in listed.data] == ["file-abc"]
    assert retrieved.filename == "batch.jsonl"
    assert content.read() == JSONL
    assert deleted.deleted is True
    assert [(r.method, r.path, r.query) for r in upstream.requests] == [
        ("GET", "/v1/files", "limit=2&purpose=batch"),
        ("GET", "/v1/files/file-abc", ""),
        ("GET", "/v1/files/file-abc/content", ""),
        ("DELETE", "/v1/files/file-abc", ""),
    ]


def test_azure_files_get_its_paths_version_and_key(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json={"object": "list", "data": []})

    response = http.get("/v1/files", params={"purpose": "batch"}, headers={"x-gateway-provider": "az"})

    assert response.status_code == 200
    (request,) = upstream.requests
    assert (request.path, request.query) == ("/openai/files", "purpose=batch&api-version=2024-10-21")
    assert request.headers["api-key"] == AZURE_KEY
    assert "authorization" not in request.headers


# --- batches ---------------------------------------------------------------------------------------


def test_a_batch_is_created_retrieved_listed_and_cancelled(
    gateway: Gateway, client: openai.OpenAI, upstream: ProxyUpstream
) -> None:
    upstream.replies.update({
        "/v1/batches": Reply(json=BATCH),
        "/v1/batches/batch_abc": Reply(json=BATCH),
        "/v1/batches/batch_abc/cancel": Reply(json={**BATCH, "status": "cancelling"}),
    })

    created = client.batches.create(input_file_id="file-abc", endpoint="/v1/chat/completions",
                                    completion_window="24h", metadata={"job": "nightly"}, extra_headers=OAI)
    retrieved = client.batches.retrieve("batch_abc", extra_headers=OAI)
    cancelled = client.batches.cancel("batch_abc", extra_headers=OAI)

    assert (created.id, retrieved.status, cancelled.status) == ("batch_abc", "validating", "cancelling")
    sent = {"input_file_id": "file-abc", "endpoint": "/v1/chat/completions", "completion_window": "24h",
            "metadata": {"job": "nightly"}}
    create, retrieve, cancel = upstream.requests
    assert (create.method, create.path, create.body) == ("POST", "/v1/batches", sent)
    assert (retrieve.method, retrieve.path, retrieve.body) == ("GET", "/v1/batches/batch_abc", b"")
    assert (cancel.method, cancel.path) == ("POST", "/v1/batches/batch_abc/cancel")
    logged = [gateway.log.next() for _ in range(3)]
    assert [(e.endpoint, e.method, e.http_status) for e in logged] == [
        ("/v1/batches", "POST", 200), ("/v1/batches/batch_abc", "GET", 200),
        ("/v1/batches/batch_abc/cancel", "POST", 200)]
    assert (logged[0].request, logged[0].response) == (sent, BATCH)
    assert (logged[1].request, logged[1].response) == (None, BATCH)


def test_batches_are_listed_with_the_query_kept(client: openai.OpenAI, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json={"object": "list", "data": [BATCH], "has_more": False})

    page = client.batches.list(limit=1, after="batch_000", extra_headers=OAI)

    assert [b.id for b in page.data] == ["batch_abc"]
    assert (upstream.requests[0].path, upstream.requests[0].query) == ("/v1/batches", "after=batch_000&limit=1")


def test_a_large_json_answer_is_logged_by_size_only(gateway: Gateway, client: openai.OpenAI,
                                                    upstream: ProxyUpstream) -> None:
    many = {"object": "list", "data": [BATCH] * 400, "has_more": False}
    upstream.reply = Reply(json=many)

    assert len(client.batches.list(extra_headers=OAI).data) == 400

    exchange = gateway.log.next()
    assert exchange.response == {"content_type": "application/json", "size": len(orjson.dumps(many))}


# --- headers ---------------------------------------------------------------------------------------


def test_hop_by_hop_headers_stay_on_their_hop(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = RawReply(body=b"{}", headers={"keep-alive": "timeout=5", "x-upstream": "1",
                                                   "x-request-id": "req_9"})

    response = http.get("/v1/files", headers={
        **OAI, "connection": "keep-alive, x-hop", "x-hop": "1", "keep-alive": "timeout=5", "te": "trailers",
        "x-custom": "kept", "authorization": f"Bearer {CLIENT_KEY}", "x-api-key": "client-secret",
        "x-gateway-metadata": '{"a": "b"}', "accept-encoding": "gzip",
    })

    (request,) = upstream.requests
    for name in ("x-hop", "keep-alive", "te", "x-api-key", "x-gateway-metadata", "accept-encoding"):
        assert name not in request.headers
    assert (request.headers["x-custom"], request.headers["authorization"]) == ("kept", f"Bearer {OPENAI_KEY}")
    assert (response.headers["x-upstream"], response.headers["x-request-id"]) == ("1", "req_9")
    assert "keep-alive" not in response.headers
    assert len(response.headers.get_list("date")) == 1


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "status", "body"), [
    pytest.param({}, 400, {"error": {
        "message": "Name the provider account to pass this request to in the x-gateway-provider header.",
        "type": "invalid_request_error", "code": "missing_provider", "param": "x-gateway-provider"}}, id="missing"),
    pytest.param({"x-gateway-provider": "nope"}, 404, {"error": {
        "message": "The provider account 'nope' does not exist. Name one of: oai, compat, az, claude, claude-slow, "
                   "claude-dead, demo, slow, dead.",
        "type": "not_found_error", "code": "provider_not_found", "param": "x-gateway-provider"}}, id="unknown"),
])
def test_the_provider_header(gateway: Gateway, client: openai.OpenAI, upstream: ProxyUpstream,
                             headers: dict[str, str], status: int, body: dict[str, Any]) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        client.files.create(file=("batch.jsonl", JSONL), purpose="batch", extra_headers=headers)

    assert (raised.value.status_code, raised.value.body) == (status, body["error"])
    assert upstream.requests == []
    assert gateway.log.next().status == "error"


@pytest.mark.parametrize(("reply", "status", "code"), [
    pytest.param(Reply(status=404, json={"error": {"message": "No such File object: file-x"}}), 404, "upstream_404",
                 id="404"),
    pytest.param(Reply(status=500, json={"error": {"message": f"broken {OPENAI_KEY}"}}), 502, "upstream_500",
                 id="500"),
])
def test_upstream_error_status(http: httpx.Client, upstream: ProxyUpstream, reply: Reply, status: int,
                               code: str) -> None:
    upstream.reply = reply

    response = http.get("/v1/files/file-x", headers=OAI)

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] in ("oai: No such File object: file-x", "oai: broken [REDACTED]")


def test_an_upstream_timeout_is_504(http: httpx.Client, upstream: ProxyUpstream) -> None:
    upstream.reply = Reply(json=BATCH, delay=2)

    response = http.get("/v1/batches/batch_abc", headers={"x-gateway-provider": "slow"})

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_a_refused_connection_is_502(http: httpx.Client) -> None:
    response = http.post("/v1/files", files={"file": ("a.jsonl", JSONL)}, data={"purpose": "batch"},
                         headers={"x-gateway-provider": "dead"})

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_connection_error"


def test_the_mock_has_no_files(http: httpx.Client) -> None:
    response = http.post("/v1/files", files={"file": ("a.jsonl", JSONL)}, data={"purpose": "batch"},
                         headers={"x-gateway-provider": "demo"})

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "demo: the mock provider has no POST /files"


# --- a client that leaves ----------------------------------------------------------------------------


def test_leaving_mid_upload_stops_the_upstream_request(gateway: Gateway, upstream: ProxyUpstream,
                                                       client: openai.OpenAI) -> None:
    upstream.reply = Reply(json=FILE)

    def body() -> Iterator[bytes]:
        yield b"x" * 65536
        yield b"x" * 65536
        raise ConnectionResetError("the client gives up")

    with pytest.raises(ConnectionResetError), httpx.Client(base_url=gateway.url, timeout=5) as http:
        http.post("/v1/files", content=body(), headers={**OAI, "content-length": str(10 * 65536),
                                                        "content-type": "application/octet-stream"})

    exchange = gateway.log.next()
    assert exchange.status == "cancelled"
    assert exchange.request == {"content_type": "application/octet-stream", "size": 2 * 65536}
    assert upstream.received_bytes <= 2 * 65536
    upstream.reset(Reply(json=FILE))
    assert client.files.retrieve("file-abc", extra_headers=OAI).id == "file-abc"


def test_leaving_mid_download_closes_the_upstream(gateway: Gateway, upstream: ProxyUpstream) -> None:
    chunks = [b"line %d\n" % i * 1000 for i in range(100)]
    upstream.reply = RawReply(chunks=chunks, event_delay=0.05, content_type="application/octet-stream")

    with httpx.Client(base_url=gateway.url, timeout=5) as http, http.stream(
        "GET", "/v1/files/file-abc/content", headers=OAI
    ) as response:
        first = next(response.iter_raw())

    assert first == chunks[0]
    assert upstream.stream_abandoned.wait(5), "the gateway kept reading the upstream after the client left"
    exchange = gateway.log.next()
    assert exchange.status == "cancelled"
