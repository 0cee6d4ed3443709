"""Sending a request built by an adapter and passing its answer back: error mapping, header
filtering and byte-for-byte relaying, for the pass-through proxy; and a body sent as it came."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from starlette.types import Send

from ..providers import ProviderAdapter
from ..redaction import Redactor
from ..upstream import close, request_id_of, status_error, transport_error
from ..warehouse import Exchange

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade",
})
_CLIENT_CREDENTIALS = frozenset({"authorization", "api-key", "x-api-key"})
"""The client's credentials are for the gateway; the provider gets the gateway's own."""
_NOT_FORWARDED = HOP_BY_HOP | _CLIENT_CREDENTIALS | {"host", "expect"}
_NOT_RELAYED = HOP_BY_HOP | {"date", "server"}
"""The ASGI server writes its own ``date`` and ``server``."""


async def open_upstream(
    adapter: ProviderAdapter, request: httpx.Request, redact: Redactor, exchange: Exchange
) -> httpx.Response:
    """Sends ``request`` and returns the answer with its body unread, if its status is a success;
    an error status or a transport failure raises the ``GatewayError`` the client gets."""
    response: httpx.Response | None = None
    try:
        response = await adapter.transport.handle_async_request(request)
        exchange.outcome.provider_request_id = request_id_of(response)
        if response.status_code >= 400:
            raise await status_error(adapter, response, redact)
        return response
    except httpx.HTTPError as exc:
        await close(response)
        raise transport_error(adapter, exc, redact) from exc
    except BaseException:
        await close(response)
        raise


async def send_bytes(
    send: Send, status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None
) -> None:
    headers = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(body)).encode())]
    if extra:
        headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def forwarded_headers(headers: Mapping[str, str], *, keep_encoding: bool) -> dict[str, str]:
    """The client's headers a passed-through request carries: neither its credentials, nor
    hop-by-hop headers (also those its ``connection`` header names), nor the gateway's own
    ``x-gateway-*``. Without ``keep_encoding`` the answer is asked for uncompressed."""
    named = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    return {
        name: value for name, value in headers.items()
        if name not in _NOT_FORWARDED and name not in named and not name.startswith("x-gateway-")
        and (keep_encoding or name != "accept-encoding")
    }


def relayed_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The upstream's answer headers the client gets, hop-by-hop ones left out."""
    named = {token.strip().lower() for token in response.headers.get("connection", "").split(",")}
    out = []
    for name, value in response.headers.raw:
        lowered = name.lower()
        if lowered.decode("latin-1") not in _NOT_RELAYED and lowered.decode("latin-1") not in named:
            out.append((lowered, value))
    return out
