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

from ..config import ProviderConfig
from ..errors import InvalidRequestError
from ..sse import ServerSentEvent

if TYPE_CHECKING:
    from ..chat._types import ChatCall


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
    """The JSON endpoints besides chat this provider type serves (``embeddings``, ``moderations``)."""

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> None:
        self.config = config
        self.transport = transport
        """Where requests go. The attempt layer calls it directly: no client-side cookies,
        redirects or auth hooks, which a gateway must not apply and should not pay for."""
        self._extensions = {"timeout": httpx.Timeout(config.timeout_ms / 1000).as_dict()}
        self._urls: dict[str, httpx.URL] = {}
        """Parsed upstream URLs (a few per provider): parsing one costs more than building the request."""
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

    def operation_url(self, operation: str, upstream_model: str) -> str:
        return f"{self.config.url}/{operation}"

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
        """A request passed through as it is to ``path`` (as the client sent it: ``/v1/...``), with
        this provider's credentials. ``headers`` are the client's, already rid of its credentials
        and of hop-by-hop headers; ``content`` may be an async byte stream, sent as it arrives."""
        headers = {**self.proxy_default_headers(), **headers, **self.auth_headers(), **self.config.headers}
        return httpx.Request(method, self.proxy_url(path, query), headers=headers, content=content,
                             extensions=self._extensions)

    def proxy_url(self, path: str, query: str) -> str:
        """Where a passed-through ``/v1/...`` path goes: OpenAI-style base URLs end in the version."""
        url = self.config.url + path.removeprefix("/v1")
        return f"{url}?{query}" if query else url

    def proxy_default_headers(self) -> dict[str, str]:
        """Headers a passed-through request gets unless the client sent its own."""
        return {}

    def unsupported(self, path: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"The provider '{self.name}' (type {self.config.type}) has no {path} endpoint.",
            param="model", code="unsupported_endpoint",
        )

    def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Request:
        # Asks for an uncompressed answer: it passes through without a decoder.
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        return json_request(parsed, orjson.dumps(body), {**_JSON_HEADERS, **headers, **self.config.headers},
                            self._extensions)


_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json", "accept-encoding": "identity"}


def json_request(url: httpx.URL, content: bytes, headers: Mapping[str, str],
                 extensions: dict[str, Any]) -> httpx.Request:
    """A ``POST`` of ``content`` (read already), its headers given whole (``Host`` and
    ``Content-Length`` included), so httpx has no defaults to merge in: the cheap way to a request."""
    raw = [(b"host", url.netloc), *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
           (b"content-length", str(len(content)).encode())]
    request = httpx.Request("POST", url, headers=raw, stream=httpx.ByteStream(content), extensions=extensions)
    request.read()
    return request
