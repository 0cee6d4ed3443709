"""The identity middleware: every API request's caller and metadata, from its headers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import GatewayError
from ..identity import IDENTITY, METADATA, parse_metadata
from ._asgi import error_response, error_shape_for, headers_of
from ._logged import record_error, start_exchange

if TYPE_CHECKING:
    from ..runtime import Gateway


class IdentityMiddleware:
    """Plain ASGI: identifies the caller of every API path and parses its metadata header,
    answering 401 or 400 itself. Health probes pass without a key."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ("/healthz", "/readyz"):
            await self.app(scope, receive, send)
            return
        authorization = metadata = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-gateway-metadata":
                metadata = value.decode("utf-8", "replace")
        try:
            scope[IDENTITY] = self.gateway.current.authenticator.identify(authorization)
            scope[METADATA] = parse_metadata(metadata)
        except GatewayError as exc:
            await self._refuse(scope, receive, send, exc)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: GatewayError) -> None:
        """Answers ``error`` and logs the request: its body unread, its caller anonymous unless
        the key was good (a bad metadata header)."""
        exchange = start_exchange(scope, headers_of(scope))
        record_error(exchange, error)
        try:
            await error_response(error, error_shape_for(scope["path"]))(scope, receive, send)
        finally:
            self.gateway.request_log.submit(exchange)
