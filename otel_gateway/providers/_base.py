"""The interface every provider adapter implements.

An adapter translates one OpenAI chat request into its provider's wire format, and the
provider's answer, stream events and errors back. It also builds the upstream requests of the
other endpoints: embeddings and moderations, Anthropic's Messages API, and the paths passed
through as they are (files, batches, anything else under ``/v1``). It never sends anything
itself: the attempt layer (``chat._upstream``) and the endpoints own the HTTP exchange and the
span, and map errors through ``otel_gateway.upstream``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import urlsplit

import httpx
import orjson

from .._urls import Upstream, passthrough_path, path_segment
from ..config import ProviderConfig
from ..errors import InvalidRequestError
from ..sse import ServerSentEvent

if TYPE_CHECKING:
    from ..calls import ChatCall


class StreamTranslator(Protocol):
    """Turns the provider's stream events into OpenAI ``chat.completion.chunk`` dicts."""

    finished: bool
    """True once the provider signalled a complete end of stream."""

    def translate(self, event: ServerSentEvent) -> list[dict[str, Any]]:
        """Chunks for one event (often one, sometimes none). Raises ``UpstreamStreamError``
        when the provider reports an error inside the stream."""
        ...


class ProviderAdapter(ABC):
    gen_ai_provider: ClassVar[str]
    """The ``gen_ai.provider.name`` of this provider type."""
    operations: ClassVar[frozenset[str]] = frozenset()
    """The endpoints besides chat this provider type serves (``embeddings``, ``moderations``, ``messages``)."""

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> None:
        self.config = config
        self.upstream = Upstream(config.url, config.name)
        """The provider's origin: every upstream URL is built from it and checked against it."""
        self.transport: httpx.AsyncBaseTransport = OriginGuard(transport, self.upstream)
        """Where requests go. The attempt layer calls it directly: no client-side cookies,
        redirects or auth hooks, which a gateway must not apply and should not pay for."""
        self._extensions = {"timeout": httpx.Timeout(config.timeout_ms / 1000).as_dict()}
        self._urls: dict[tuple[tuple[str, ...], str], httpx.URL] = {}
        """The URLs of fixed endpoints (a few per provider, names from config): building one costs
        more than building the request."""
        url = urlsplit(config.url)
        self.server_address = url.hostname or ""
        self.server_port = url.port or (443 if url.scheme == "https" else 80)

    @property
    def name(self) -> str:
        return self.config.name

    @classmethod
    def own_transport(cls, config: ProviderConfig) -> httpx.AsyncBaseTransport | None:
        """A transport of this adapter's own instead of the shared pool (the mock has one)."""
        return None

    @abstractmethod
    def build_request(self, call: ChatCall, upstream_model: str) -> httpx.Request:
        """The upstream request for ``call``; a streamed call must ask for usage upstream."""

    @abstractmethod
    def translate_response(self, data: dict[str, Any], call: ChatCall) -> dict[str, Any]:
        """The provider's JSON answer as an OpenAI ``chat.completion``."""

    @abstractmethod
    def stream_translator(self, call: ChatCall) -> StreamTranslator:
        """A fresh translator for one streamed answer."""

    def error_message(self, status: int, body: bytes) -> str:
        """The human part of an error answer; the caller scrubs credentials from it."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            text = body.decode("utf-8", "replace").strip()
            return text[:500] or f"HTTP {status}"
        if isinstance(data, dict):
            error = data.get("error", data)
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return str(error["message"])
            if isinstance(error, str):
                return error
        return f"HTTP {status}"

    def auth_headers(self) -> dict[str, str]:
        """The provider's credentials, sent with every request."""
        return {}

    def build_operation_request(
        self, operation: str, body: Mapping[str, Any], upstream_model: str, client_headers: Mapping[str, str]
    ) -> httpx.Request:
        """The upstream request for ``POST /v1/{operation}`` (``embeddings``, ``moderations``): the
        client's ``body`` with only ``model`` replaced. Raises ``unsupported_endpoint`` where the
        provider has no such endpoint."""
        if operation not in self.operations:
            raise self.unsupported(f"/v1/{operation}")
        return self._post(self.operation_url(operation, upstream_model), {**body, "model": upstream_model},
                          self.auth_headers())

    def operation_url(self, operation: str, upstream_model: str) -> httpx.URL:
        return self.endpoint_url(*operation.split("/"))

    def endpoint_url(self, *segments: str, query: str = "") -> httpx.URL:
        """The URL of ``segments`` (names, each quoted whole into one path segment) after the base
        path, with ``query``; built once per endpoint."""
        key = (segments, query)
        url = self._urls.get(key)
        if url is None:
            url = self._urls[key] = self.upstream.url("".join("/" + path_segment(s) for s in segments), query)
        return url

    def build_messages_request(
        self, body: Mapping[str, Any], upstream_model: str, client_headers: Mapping[str, str]
    ) -> httpx.Request:
        """The upstream request for Anthropic's Messages API (``POST /v1/messages``), which only
        Anthropic providers speak natively."""
        raise self.unsupported("/v1/messages")

    def build_proxy_request(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        content: bytes | AsyncIterable[bytes] | None,
    ) -> httpx.Request:
        """A request passed through as it is to ``path`` (as the client sent it: ``/v1/...``,
        percent-encoded; refused with ``invalid_path`` unless each segment stays one, see
        ``passthrough_path``), with this provider's credentials. ``headers`` are the client's,
        already rid of its credentials and of hop-by-hop headers; ``content`` may be an async byte
        stream, sent as it arrives."""
        url = self.proxy_url(passthrough_path(path), query)
        headers = {**self.proxy_default_headers(), **headers, **self.auth_headers(), **self.config.headers}
        return self._request(method, url, headers, content=content)

    def proxy_url(self, path: str, query: str) -> httpx.URL:
        """Where a passed-through (and checked) ``/v1/...`` path goes, with the client's query."""
        return self.upstream.url(self.proxy_path(path), self.proxy_query(query))

    def proxy_path(self, path: str) -> str:
        """The path under the base URL for a ``/v1/...`` path: OpenAI-style base URLs end in the version."""
        return path.removeprefix("/v1")

    def proxy_query(self, query: str) -> str:
        return query

    def proxy_default_headers(self) -> dict[str, str]:
        """Headers a passed-through request gets unless the client sent its own."""
        return {}

    def unsupported(self, path: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"The provider '{self.name}' (type {self.config.type}) has no {path} endpoint.",
            param="model", code="unsupported_endpoint",
        )

    def _post(self, url: httpx.URL, body: dict[str, Any], headers: dict[str, str]) -> httpx.Request:
        """A ``POST`` of ``body`` as JSON (read already), its headers given whole (``Host`` and
        ``Content-Length`` included), so httpx has no defaults to merge in: the cheap way to a
        request. Asks for an uncompressed answer: it passes through without a decoder."""
        content = orjson.dumps(body)
        headers = {**_JSON_HEADERS, **headers, **self.config.headers}
        raw = [(b"host", url.netloc), *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
               (b"content-length", str(len(content)).encode())]
        request = self._request("POST", url, raw, stream=httpx.ByteStream(content))
        request.read()
        return request

    def _request(self, method: str, url: httpx.URL, headers: Mapping[str, str] | list[tuple[bytes, bytes]], *,
                 content: bytes | AsyncIterable[bytes] | None = None,
                 stream: httpx.AsyncByteStream | None = None) -> httpx.Request:
        """Every upstream request is made here, for a URL ``self.upstream`` built (and checked);
        ``self.transport`` checks it again before sending."""
        return httpx.Request(method, url, headers=headers, content=content, stream=stream, extensions=self._extensions)


_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json", "accept-encoding": "identity"}


class OriginGuard(httpx.AsyncBaseTransport):
    """An adapter's transport: the last check every upstream request passes, whoever built it.
    A request whose URL left the provider's origin raises (500 ``upstream_origin_mismatch``) and
    is never handed to the transport below."""

    __slots__ = ("_transport", "_upstream")

    def __init__(self, transport: httpx.AsyncBaseTransport, upstream: Upstream) -> None:
        self._transport = transport
        self._upstream = upstream

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._upstream.check(request.url)
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        """Closes nothing: the transport below is its maker's to close."""
