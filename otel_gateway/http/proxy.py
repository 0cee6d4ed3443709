"""``/v1/files``, ``/v1/batches`` and every other ``/v1/...`` path without a route of its own:
passed through to the provider account named by ``x-gateway-provider``.

Bodies stream both ways: the client's request body goes upstream chunk by chunk as it arrives
(an upload of any size costs the gateway a few buffers, never the whole file), the answer comes
back the same way. The provider's credentials replace the client's; hop-by-hop headers stay on
their hop. Files and batches are logged with their small JSON bodies (and of an upload only its
size, type and file names); other paths with metadata only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote_plus

import httpx
import orjson
from starlette.types import Receive, Scope, Send

from .._urls import passthrough_path
from ..config import GatewayConfig
from ..errors import InvalidRequestError, MethodNotAllowedError, NotFoundError, UpstreamStreamError
from ..providers import ProviderAdapter
from ..runtime import Gateway
from ..upstream import note_attempt
from ..warehouse import Exchange
from ._asgi import ClientGone, headers_of
from ._bodies import LOGGED_JSON_LIMIT, StreamedBody, has_body, logged_body
from ._logged import end_cancelled_stream, logged, record_error, start_exchange, watching_disconnect
from ._relay import forwarded_headers, open_upstream, relayed_headers

PROVIDER_HEADER = "x-gateway-provider"


class ProxyEndpoint:
    """``log_bodies``: log small JSON bodies and upload metadata (files, batches), or only the
    type and size of bodies (every other path). Without ``x-gateway-provider``, a path that is
    passed through only on request answers as an unknown path would (404, or 405 on one of the
    gateway's ``own_paths``); files and batches insist on the header (400)."""

    def __init__(self, gateway: Gateway, *, log_bodies: bool, own_paths: frozenset[str] = frozenset()) -> None:
        self._gateway = gateway
        self._log_bodies = log_bodies
        self._own_paths = own_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self._gateway.current
        headers = headers_of(scope)
        exchange = start_exchange(scope, headers)
        with logged(self._gateway, exchange):
            adapter = runtime.registry.provider(self._provider_name(scope, headers))
            note_attempt(exchange.outcome, adapter)
            keep = LOGGED_JSON_LIMIT if self._log_bodies else 0
            body = StreamedBody(receive, keep=keep) if has_body(headers) else None
            forwarded = forwarded_headers(headers, keep_encoding=not self._log_bodies)
            query = without_client_credentials(exchange.query, _client_credentials(headers, runtime.config))
            request = adapter.build_proxy_request(scope["method"], self._path(scope), query, forwarded, body)
            try:
                async with watching_disconnect(body.receive_after_body if body else receive, exchange):
                    try:
                        response = await open_upstream(adapter, request, runtime.redactor, exchange)
                    except Exception:
                        if body is not None and body.client_gone:
                            raise ClientGone from None
                        raise
                    await self._relay(response, send, exchange, adapter)
            finally:
                if body is not None:
                    exchange.request = logged_body(headers.get("content-type", ""), body.size, body.head,
                                                   whole=self._log_bodies)
                    if isinstance(exchange.request, dict) and isinstance(exchange.request.get("model"), str):
                        exchange.model = exchange.request["model"]

    async def _relay(self, response: httpx.Response, send: Send, exchange: Exchange, adapter: ProviderAdapter) -> None:
        """The answer, chunk by chunk. A failure after the start ends an event stream with a
        final error event (so does the server's cancellation at the end of a graceful shutdown);
        any other body is cut (the connection closes), so that the client cannot take a truncated
        body for a whole one."""
        content_type = response.headers.get("content-type", "")
        exchange.http_status = response.status_code
        exchange.stream = content_type.startswith("text/event-stream")
        keep = self._log_bodies and "content-encoding" not in response.headers
        head = bytearray()
        size = 0
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": relayed_headers(response)})
            try:
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if keep and len(head) < LOGGED_JSON_LIMIT:
                        head += chunk[: LOGGED_JSON_LIMIT - len(head)]
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as exc:
                error = UpstreamStreamError(f"{adapter.name}: the upstream answer broke off: {type(exc).__name__}",
                                            provider=adapter.name)
                record_error(exchange, error, http_status=response.status_code)
                if not exchange.stream:
                    raise _AnswerCut(error.message) from exc
                event = b"data: " + orjson.dumps(error.body()) + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not exchange.stream:
                raise
            await end_cancelled_stream(send, exchange)
        finally:
            await response.aclose()
            exchange.response = logged_body(content_type, size, bytes(head), whole=keep)

    @staticmethod
    def _path(scope: Scope) -> str:
        """The path as the client sent it (``raw_path``: still percent-encoded, never decoded here),
        if each of its segments stays one segment (400 ``invalid_path`` if not: see ``passthrough_path``)."""
        raw = scope.get("raw_path")
        return passthrough_path(raw.decode("latin-1") if raw else quote(scope["path"], safe="/!$&'()*+,;=:"))

    def _provider_name(self, scope: Scope, headers: Mapping[str, str]) -> str:
        name = headers.get(PROVIDER_HEADER, "").strip()
        if name:
            return name
        if self._log_bodies:
            raise InvalidRequestError(
                f"Name the provider account to pass this request to in the {PROVIDER_HEADER} header.",
                param=PROVIDER_HEADER, code="missing_provider",
            )
        if scope["path"] in self._own_paths:
            raise MethodNotAllowedError("Method Not Allowed")
        raise NotFoundError(
            f"Unknown path: {scope['method']} {scope['path']}. To pass it through to a provider, name the "
            f"provider account in the {PROVIDER_HEADER} header.", code="unknown_path",
        )


def _client_credentials(headers: Mapping[str, str], config: GatewayConfig) -> list[str]:
    """What the client authenticates to the gateway with: the keys it presented, and every gateway key."""
    presented = [headers.get("authorization", "").partition(" ")[2].strip(), headers.get("x-api-key", ""),
                 headers.get("api-key", "")]
    configured = [k.key.get_secret_value() for k in config.auth.keys if k.key is not None] if config.auth else []
    return [secret for secret in (*presented, *configured) if len(secret) >= 4]


def without_client_credentials(query: str, credentials: Iterable[str]) -> str:
    """The query string without the parameters that carry one of the client's ``credentials``: like
    its credential headers, they are for the gateway, never for the provider (nor the spans and logs
    of the upstream call, which show its URL)."""
    secrets = tuple(credentials)
    if not query or not secrets:
        return query
    kept = [part for part in query.split("&")
            if not any(secret in unquote_plus(part.partition("=")[2]) for secret in secrets)]
    return "&".join(kept)


class _AnswerCut(Exception):
    """Raised after the answer started: the server closes the connection mid-body."""
