"""An httpx transport over aiohttp's connection pool.

httpx's own pool serialises badly under concurrency; aiohttp's holds up. Callers keep httpx's
API (``AsyncClient``, ``Request``, streaming responses, timeouts) and swap only the transport.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx
import yarl

__all__ = ["AiohttpTransport"]

_NO_AUTO_HEADERS = ("Accept-Encoding",)


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        max_connections: int = 1000,
        keepalive_expiry: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None, float | None], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use: aiohttp binds the session to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ssl=self._ssl if self._ssl is not None else True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        data = _request_content(request)
        headers: list[tuple[str, str]] = []
        # aiohttp would ask for gzip by itself; answers are relayed and parsed as they come.
        skip_auto_headers: tuple[str, ...] | None = _NO_AUTO_HEADERS
        for raw_name, raw_value in request.headers.raw:
            name = raw_name.decode("latin-1")
            lowered = name.lower()
            if lowered == "accept-encoding":
                skip_auto_headers = None  # aiohttp's slow path, only for requests without one
            if lowered != "transfer-encoding":
                headers.append((name, raw_value.decode("latin-1")))
        try:
            response = await self._get_session().request(
                request.method,
                # Sent as built: yarl would otherwise unescape what it deems safe (%3A, %40...).
                yarl.URL(str(request.url), encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                skip_auto_headers=skip_auto_headers,
                timeout=self._timeout(request.extensions.get("timeout")),
            )
        except Exception as exc:
            raise _map_error(exc, request, connecting=True) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    def _timeout(self, timeout: dict[str, float | None] | None) -> aiohttp.ClientTimeout:
        """aiohttp's timeout for httpx's, made once per distinct setting (one per provider)."""
        timeout = timeout or {}
        key = (timeout.get("pool"), timeout.get("connect"), timeout.get("read"))
        found = self._timeouts.get(key)
        if found is None:
            if len(self._timeouts) >= 256:
                self._timeouts.clear()
            found = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, connect=key[0], sock_connect=key[1], sock_read=key[2]
            )
        return found

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            raise _map_error(exc, self._request, connecting=False) from exc

    async def aclose(self) -> None:
        # A body read to its end frees the connection for reuse; one left unread is cut, so an
        # abandoned stream stops the upstream at once instead of draining it.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _request_content(request: httpx.Request) -> bytes | AsyncIterator[bytes] | None:
    """The body to send: bytes when httpx holds it read, else a stream."""
    try:
        return request.content or None
    except httpx.RequestNotRead:
        return _request_body(request)


async def _request_body(request: httpx.Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream:  # type: ignore[union-attr]
        yield chunk


def _map_error(exc: Exception, request: httpx.Request, *, connecting: bool) -> Exception:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError) or (connecting and isinstance(exc, OSError)):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return httpx.ReadError(message, request=request)
    return exc
