"""Every upstream URL stays on its provider's origin, whatever the client's path and query and
whatever the configured names: built from parts, checked before it is made and before it is sent."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_gateway._urls import Upstream, encoded_query, passthrough_path
from otel_gateway.config import ProviderConfig, load_config_text
from otel_gateway.errors import GatewayError, InvalidRequestError
from otel_gateway.providers import ADAPTERS, ProviderAdapter
from otel_gateway.providers.azure import AzureOpenAIAdapter

CONFIG = """
type: gateway-providers-config
providers:
  - {name: oai, type: openai, api_key: sk-a, models: [m]}
  - {name: oai-local, type: openai, base_url: "http://127.0.0.1:9302", api_key: sk-a, models: [m]}
  - {name: compat, type: openai-compatible, base_url: "http://127.0.0.1:9302", headers: {authorization: Bearer s},
     models: [m]}
  - {name: compat-path, type: openai-compatible, base_url: "http://local:8000/compat/v1/", models: [m]}
  - {name: az, type: azure-openai, base_url: "https://az.example", api_key: k, models: {m: dep}}
  - {name: az-path, type: azure-openai, base_url: "https://az.example:8443/azure", api_key: k, models: {m: dep}}
  - {name: claude, type: anthropic, api_key: sk-ant-a, models: [m]}
  - {name: claude-path, type: anthropic, base_url: "http://[::1]:9000/anthropic", api_key: sk-ant-a, models: [m]}
  - {name: demo, type: mock, models: [m]}
"""
PREFIXES = {"oai": "/v1", "oai-local": "", "compat": "", "compat-path": "/compat/v1", "az": "/openai",
            "az-path": "/azure/openai", "claude": "/v1", "claude-path": "/anthropic/v1", "demo": ""}
"""What each provider's base path and type put before the part of a passed-through path after ``/v1``."""
ORIGINS = {
    "oai": ("https", "api.openai.com", 443), "oai-local": ("http", "127.0.0.1", 9302),
    "compat": ("http", "127.0.0.1", 9302), "compat-path": ("http", "local", 8000),
    "az": ("https", "az.example", 443), "az-path": ("https", "az.example", 8443),
    "claude": ("https", "api.anthropic.com", 443), "claude-path": ("http", "::1", 9000),
    "demo": ("http", "mock.invalid", 80),
}

# Characters that matter to URL parsers, escapes that hide them, and anything else.
_TRICKY = st.sampled_from(["/", "\\", "@", ":", ".", "..", "%", "%2F", "%2f", "%5C", "%40", "%25", "%2E", "%2e",
                           "%23", "%3F", "%00", "%0A", "%7F", "%20", "%C3%A9", "#", "?", "[", "]", " ", "\t",
                           "127.0.0.1:9301", "v1", "files", "é", "\x00", ";", "=", "&", "+", "~", "%%", "%2"])
PATHS = st.lists(st.one_of(_TRICKY, st.text(max_size=4)), max_size=12).map(lambda parts: "/v1/" + "".join(parts))
_SEGMENT = st.lists(
    st.one_of(st.sampled_from([*"-._~!$&'()*+,;=:", "%23", "%3F", "%3a", "%C3%A9", "%20", "%41", "%2D"]),
              st.text("abcXYZ019", min_size=1, max_size=3)),
    min_size=1, max_size=4).map("".join).filter(lambda segment: segment not in (".", ".."))
SAFE_PATHS = st.lists(_SEGMENT, max_size=5).map(lambda segments: "/v1/" + "/".join(segments))
"""Paths of segments made of what a segment may hold: each is passed on as sent."""
_BMP = st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",))
QUERIES = st.lists(st.one_of(_TRICKY, st.text(st.characters(max_codepoint=255), max_size=4)), max_size=8).map("".join)


class _Recording(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return httpx.Response(200, json={})


def adapters(config: str, transport: httpx.AsyncBaseTransport | None = None) -> dict[str, ProviderAdapter]:
    """The adapter of each provider account in ``config``, all sending through ``transport``."""
    return {provider.name: ADAPTERS[provider.type](provider, transport or _Recording())
            for provider in load_config_text(config).providers}


@pytest.fixture(scope="module")
def registry() -> dict[str, ProviderAdapter]:
    return adapters(CONFIG)


def origin_of(text: str) -> tuple[tuple[str, str, int | None, str], ...]:
    """The origin of the URL ``text`` as three parsers read it: httpx's, the standard library's and
    yarl's (which aiohttp sends with); userinfo must be empty for all."""
    parsed = httpx.URL(text)
    split = urlsplit(text)
    wire = yarl.URL(text)
    return (
        (parsed.scheme, parsed.host, parsed.port or {"http": 80, "https": 443}[parsed.scheme],
         parsed.userinfo.decode()),
        (split.scheme, split.hostname or "", split.port or {"http": 80, "https": 443}[split.scheme],
         split.username or ""),
        (wire.scheme, wire.host or "", wire.port, wire.user or ""),
    )


def wire_path(url: httpx.URL) -> str:
    """The path aiohttp puts in the request line for ``url`` (yarl unescapes some escapes, never a
    segment's bounds)."""
    return yarl.URL(str(url)).raw_path


@settings(max_examples=300, deadline=None)
@given(path=st.one_of(PATHS, SAFE_PATHS), query=QUERIES)
def test_for_any_path_and_query_the_url_keeps_the_providers_origin(
    registry: dict[str, ProviderAdapter], path: str, query: str
) -> None:
    for name, origin in ORIGINS.items():
        adapter = registry[name]
        try:
            request = adapter.build_proxy_request("GET", path, query, {}, None)
        except InvalidRequestError as exc:
            assert (exc.code, exc.param) == ("invalid_path", "path")
            continue
        text = str(request.url)
        assert origin_of(text) == ((*origin, ""),) * 3
        assert "#" not in text and not request.url.fragment
        sent = request.url.raw_path.decode().partition("?")[0]
        assert sent == (PREFIXES[name] + path.removeprefix("/v1") or "/")
        assert [unquote(s) for s in wire_path(request.url).split("/")] == [unquote(s) for s in sent.split("/")]
        for segment in path.split("/")[1:]:
            assert unquote(segment) not in (".", "..") and not re.search(r"[/\\@%\x00-\x1f\x7f]", unquote(segment))
            assert not re.search(r"[^A-Za-z0-9\-._~!$&'()*+,;=:%]", segment)


@settings(max_examples=100, deadline=None)
@given(path=SAFE_PATHS)
def test_any_path_of_plain_segments_is_passed_on_as_sent(registry: dict[str, ProviderAdapter], path: str) -> None:
    for name, adapter in registry.items():
        url = adapter.build_proxy_request("GET", path, "", {}, None).url
        assert url.raw_path.decode().partition("?")[0] == PREFIXES[name] + path.removeprefix("/v1")


@settings(max_examples=300, deadline=None)
@given(query=QUERIES)
def test_a_query_is_escaped_never_decoded(query: str) -> None:
    encoded = encoded_query(query)

    assert re.fullmatch(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:/?]|%[0-9A-Fa-f]{2})*", encoded)
    assert unquote(encoded, encoding="latin-1") == unquote(query, encoding="latin-1")
    assert encoded_query(encoded) == encoded


@settings(max_examples=200, deadline=None)
@given(deployment=st.text(_BMP, min_size=1, max_size=20).filter(lambda name: name not in (".", "..")),
       version=st.text(_BMP, min_size=1, max_size=12))
def test_any_deployment_and_api_version_stay_one_segment_and_one_parameter(deployment: str, version: str) -> None:
    config = ProviderConfig(name="az", type="azure-openai", base_url="https://az.example/base", api_key="k",
                            api_version=version, models={"m": deployment})
    adapter = AzureOpenAIAdapter(config, _Recording())

    for operation in ("chat/completions", "embeddings"):
        url = adapter.operation_url(operation, deployment)
        assert origin_of(str(url))[0] == ("https", "az.example", 443, "")
        _, base, openai, deployments, segment, *rest = url.raw_path.decode().partition("?")[0].split("/")
        assert (base, openai, deployments, unquote(segment), "/".join(rest)) == (
            "base", "openai", "deployments", deployment, operation)
        assert httpx.URL(str(url)).params.get_list("api-version") == [version]


@pytest.mark.parametrize(("path", "message"), [
    pytest.param("/v1/files/file-abc/content", None, id="plain"),
    pytest.param("/v1/models/ft%3Agpt-4o%3Aacme", None, id="escaped-colon"),
    pytest.param("/v1/files/", None, id="trailing-slash"),
    pytest.param("/v1/a%23b%3Fc%C3%A9", None, id="escaped-hash-query-utf8"),
    pytest.param("/v1%2F@127.0.0.1:9301/pwn", "an encoded '/' (%2F)", id="reported"),
    pytest.param("/v2/files", "a first segment other than 'v1'", id="not-v1"),
    pytest.param("/%76%31/files", "a first segment other than 'v1'", id="encoded-v1"),
    pytest.param("v1/files", "a path not starting with '/'", id="relative"),
    pytest.param("/v1/a b", "the character ' ' unencoded", id="space"),
    pytest.param("/v1/é", "the character 'é' unencoded", id="non-ascii"),
    pytest.param("/v1/a#b", "a '#'", id="hash"),
    pytest.param("/v1/%", "a '%' that starts no escape", id="lone-percent"),
    pytest.param("/v1/%2", "a '%' that starts no escape", id="short-escape"),
    pytest.param("/v1/%1f", "an encoded control character (%1f)", id="unit-separator"),
    pytest.param("/v1/%2E", "a '.' or '..' segment", id="encoded-dot"),
])
def test_passthrough_paths(path: str, message: str | None) -> None:
    if message is None:
        assert passthrough_path(path) == path
        return
    with pytest.raises(InvalidRequestError) as raised:
        passthrough_path(path)
    assert raised.value.body() == {"error": {
        "message": f"The path may not hold {message}: each part of a passed-through path must stay one segment of "
                   "the provider's URL path.", "type": "invalid_request_error", "code": "invalid_path",
        "param": "path"}}


@pytest.mark.parametrize("url", [
    pytest.param("http://127.0.0.1:9301/v1/x", id="other-port"),
    pytest.param("http://127.0.0.2:9302/v1/x", id="other-host"),
    pytest.param("https://127.0.0.1:9302/v1/x", id="other-scheme"),
    pytest.param("http://u:p@127.0.0.1:9302/v1/x", id="userinfo"),
    pytest.param("http://127.0.0.1:9302/v1/x#f", id="fragment"),
    pytest.param("http://127.0.0.1:9302/v1/a\\b", id="backslash"),
    pytest.param("http://127.0.0.1:9302/v1/a@b", id="at-in-path"),
])
def test_the_guard_refuses_any_url_off_the_origin(url: str) -> None:
    upstream = Upstream("http://127.0.0.1:9302/v1", "compat")

    with pytest.raises(GatewayError) as raised:
        upstream.check(httpx.URL(url))

    assert (raised.value.status, raised.value.code) == (500, "upstream_origin_mismatch")
    assert raised.value.message == ("A request for the provider account 'compat' would have left the origin of its "
                                    "base URL; it was not sent.")


def test_the_guard_passes_the_origin() -> None:
    upstream = Upstream("http://127.0.0.1:9302/v1/", "compat")
    url = upstream.url("/files/f%2Dx", "a=1&b=#@")

    assert (upstream.check(url), str(url)) == (url, "http://127.0.0.1:9302/v1/files/f%2Dx?a=1&b=%23%40")


def _adapter(name: str, inner: httpx.AsyncBaseTransport) -> ProviderAdapter:
    return adapters(CONFIG, inner)[name]


async def test_a_request_whose_url_was_changed_after_building_is_never_sent() -> None:
    inner = _Recording()
    adapter = _adapter("compat", inner)
    request = adapter.build_proxy_request("GET", "/v1/files", "", {}, None)
    request.url = httpx.URL("http://127.0.0.1:9302%2F@127.0.0.1:9301/pwn")

    with pytest.raises(GatewayError) as raised:
        await adapter.transport.handle_async_request(request)

    assert (raised.value.code, inner.sent) == ("upstream_origin_mismatch", [])
    assert (await adapter.transport.handle_async_request(adapter.build_proxy_request("GET", "/v1/files", "", {}, None))
            ).status_code == 200
    assert [str(r.url) for r in inner.sent] == ["http://127.0.0.1:9302/files"]


async def test_an_adapter_that_builds_a_url_elsewhere_sends_nothing() -> None:
    inner = _Recording()
    adapter = _adapter("compat", inner)
    adapter.proxy_url = lambda path, query: httpx.URL("http://127.0.0.1:9301/pwn")  # type: ignore[method-assign]
    request = adapter.build_proxy_request("GET", "/v1/files", "", {}, None)

    with pytest.raises(GatewayError) as raised:
        await adapter.transport.handle_async_request(request)

    assert (raised.value.code, inner.sent) == ("upstream_origin_mismatch", [])
