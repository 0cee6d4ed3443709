"""The small parts behind the endpoints, without a server: where each provider type sends a
passed-through path, what the log keeps of a body, which headers are forwarded."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from otel_gateway.config import load_config_text
from otel_gateway.errors import InvalidRequestError
from otel_gateway.http._bodies import logged_body
from otel_gateway.http._relay import forwarded_headers
from otel_gateway.providers import ProviderAdapter, ProviderRegistry

CONFIG = """
type: gateway-providers-config
providers:
  - {name: oai, type: openai, api_key: sk-a, models: [m]}
  - {name: compat, type: openai-compatible, base_url: "http://local:8000/v1/", models: [m]}
  - {name: az, type: azure-openai, base_url: "https://az.example", api_key: k, api_version: "2024-10-21", models: [m]}
  - {name: claude, type: anthropic, api_key: sk-ant-a, models: [m]}
  - {name: demo, type: mock, models: [m]}
"""


@pytest.fixture(scope="module")
def registry() -> ProviderRegistry:
    return ProviderRegistry(load_config_text(CONFIG), lambda provider, own: own or httpx.AsyncHTTPTransport())


def adapter(registry: ProviderRegistry, name: str) -> ProviderAdapter:
    return registry.provider(name)


@pytest.mark.parametrize(("provider", "path", "query", "url"), [
    pytest.param("oai", "/v1/files/f1/content", "", "https://api.openai.com/v1/files/f1/content", id="openai"),
    pytest.param("compat", "/v1/models", "a=1", "http://local:8000/v1/models?a=1", id="openai-compatible"),
    pytest.param("az", "/v1/batches", "limit=1", "https://az.example/openai/batches?limit=1&api-version=2024-10-21",
                 id="azure"),
    pytest.param("az", "/v1/files", "api-version=2025-01-01", "https://az.example/openai/files?api-version=2025-01-01",
                 id="azure-client-version"),
    pytest.param("claude", "/v1/messages/batches", "", "https://api.anthropic.com/v1/messages/batches",
                 id="anthropic"),
])
def test_where_a_passed_through_path_goes(registry: ProviderRegistry, provider: str, path: str, query: str,
                                          url: str) -> None:
    request = adapter(registry, provider).build_proxy_request("GET", path, query, {"x-custom": "1"}, None)

    assert str(request.url) == url
    assert request.headers["x-custom"] == "1"


@pytest.mark.parametrize(("provider", "credentials"), [
    pytest.param("oai", {"authorization": "Bearer sk-a"}, id="openai"),
    pytest.param("az", {"api-key": "k"}, id="azure"),
    pytest.param("claude", {"x-api-key": "sk-ant-a", "anthropic-version": "2023-06-01"}, id="anthropic"),
])
def test_the_provider_credentials_win(registry: ProviderRegistry, provider: str, credentials: dict[str, str]) -> None:
    request = adapter(registry, provider).build_proxy_request(
        "POST", "/v1/x", "", {"authorization": "Bearer client", "api-key": "client", "x-api-key": "client"}, b"{}")

    for name, value in credentials.items():
        assert request.headers[name] == value


def test_a_provider_without_a_name_is_not_found(registry: ProviderRegistry) -> None:
    with pytest.raises(Exception, match="The provider account 'nope' does not exist"):
        registry.provider("nope")


@pytest.mark.parametrize(("provider", "operation", "url"), [
    pytest.param("oai", "embeddings", "https://api.openai.com/v1/embeddings", id="openai-embeddings"),
    pytest.param("oai", "moderations", "https://api.openai.com/v1/moderations", id="openai-moderations"),
    pytest.param("az", "embeddings", "https://az.example/openai/deployments/m/embeddings?api-version=2024-10-21",
                 id="azure-embeddings"),
    pytest.param("demo", "embeddings", "http://mock.invalid/embeddings", id="mock-embeddings"),
])
def test_operation_requests(registry: ProviderRegistry, provider: str, operation: str, url: str) -> None:
    request = adapter(registry, provider).build_operation_request(operation, {"model": "demo/m", "input": "x"}, "m",
                                                                  {"x-mock-status": "500"})

    assert str(request.url) == url
    assert request.content == b'{"model":"m","input":"x"}'
    assert ("x-mock-status" in request.headers) is (provider == "demo")


@pytest.mark.parametrize(("provider", "operation"), [("az", "moderations"), ("claude", "embeddings"),
                                                     ("claude", "moderations")])
def test_operations_a_provider_lacks(registry: ProviderRegistry, provider: str, operation: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        adapter(registry, provider).build_operation_request(operation, {}, "m", {})

    assert (raised.value.code, raised.value.param) == ("unsupported_endpoint", "model")


@pytest.mark.parametrize(("body", "message"), [
    pytest.param({"input": []}, "input must be a string, a list of strings, or token ids, and not empty", id="empty"),
    pytest.param({"input": "x", "encoding_format": "int8"}, "encoding_format must be 'float' or 'base64'",
                 id="encoding"),
    pytest.param({"input": "x", "dimensions": 0}, "dimensions must be a whole number from 1 to 4096", id="dimensions"),
])
async def test_the_mock_refuses_bad_embeddings_requests(registry: ProviderRegistry, body: dict[str, Any],
                                                        message: str) -> None:
    mock = adapter(registry, "demo")
    response = await mock.transport.handle_async_request(mock.build_operation_request("embeddings", body, "m", {}))

    assert response.status_code == 400
    assert response.json()["error"]["message"] == message


async def test_the_mock_embeds_token_ids(registry: ProviderRegistry) -> None:
    mock = adapter(registry, "demo")
    request = mock.build_operation_request("embeddings", {"input": [[1, 2, 3], [4]]}, "m", {})

    answer = (await mock.transport.handle_async_request(request)).json()

    assert [len(item["embedding"]) for item in answer["data"]] == [8, 8]
    assert answer["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


# --- what the log keeps of a body ------------------------------------------------------------------


def multipart(*parts: bytes) -> bytes:
    return b"".join(b"--B\r\n" + part + b"\r\n" for part in parts) + b"--B--\r\n"


@pytest.mark.parametrize(("content_type", "body", "logged"), [
    pytest.param("application/json", b'{"a": 1}', {"a": 1}, id="json"),
    pytest.param("application/json; charset=utf-8", b"{not json", {"content_type": "application/json", "size": 9},
                 id="not-json"),
    pytest.param("text/plain", b"hello", {"content_type": "text/plain", "size": 5}, id="text"),
    pytest.param("multipart/form-data; boundary=B", multipart(
        b'Content-Disposition: form-data; name="file"; filename="r\xc3\xa9sum\xc3\xa9.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\nSECRET FILE BYTES",
        b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch',
    ), {"content_type": "multipart/form-data", "size": 200, "fields": {"purpose": "batch"},
        "files": [{"field": "file", "filename": "résumé.jsonl", "content_type": "application/jsonl"}]},
        id="multipart"),
])
def test_what_the_log_keeps_of_a_body(content_type: str, body: bytes, logged: Any) -> None:
    assert logged_body(content_type, len(body), body, whole=True) == logged
    assert "SECRET" not in repr(logged_body(content_type, len(body), body, whole=True))


def test_a_body_larger_than_its_head_is_logged_by_size() -> None:
    body = b'{"a": "' + b"x" * 100 + b'"}'

    assert logged_body("application/json", len(body), body[:50], whole=True) == {
        "content_type": "application/json", "size": len(body)}
    assert logged_body("application/json", len(body), body, whole=False) == {
        "content_type": "application/json", "size": len(body)}


def test_a_multipart_field_cut_by_the_head_is_left_out() -> None:
    body = multipart(b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch')

    assert logged_body("multipart/form-data; boundary=B", 1000, body[:60], whole=True) == {
        "content_type": "multipart/form-data", "size": 1000, "fields": {}, "files": []}


def test_forwarded_headers() -> None:
    headers = {
        "connection": "keep-alive, X-Hop", "x-hop": "1", "upgrade": "h2c", "host": "gw", "expect": "100-continue",
        "authorization": "Bearer gw", "x-gateway-metadata": "{}", "accept-encoding": "gzip", "x-keep": "1",
        "content-type": "application/json", "content-length": "2",
    }

    assert forwarded_headers(headers, keep_encoding=True) == {
        "accept-encoding": "gzip", "x-keep": "1", "content-type": "application/json", "content-length": "2"}
    assert "accept-encoding" not in forwarded_headers(headers, keep_encoding=False)
