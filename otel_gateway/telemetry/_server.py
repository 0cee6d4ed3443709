"""The SERVER span of every HTTP request, continuing the caller's ``traceparent``."""

from __future__ import annotations

from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_PROPAGATION_HEADERS = (b"traceparent", b"tracestate", b"baggage")


class ServerSpanMiddleware:
    """Plain ASGI: one span per HTTP request, named ``{method} {route}`` once routing is known,
    ended when the response (a whole stream included) is finished."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        attributes: dict[str, Any] = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        for name, value in scope["headers"]:
            if name in _PROPAGATION_HEADERS:
                carrier[name.decode()] = value.decode("latin-1")
            elif name == b"user-agent":
                attributes["user_agent.original"] = value.decode("latin-1")
        server = scope.get("server")
        if server:
            attributes["server.address"] = server[0]
            if server[1] is not None:  # None on a Unix socket
                attributes["server.port"] = server[1]
        if scope.get("client"):
            attributes["client.address"] = scope["client"][0]
        span = self.tracer.start_span(
            scope["method"], context=propagate.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        )

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_attribute("error.type", str(status))
                    span.set_status(Status(StatusCode.ERROR))
            await send(message)

        try:
            with trace.use_span(span, end_on_exit=False, record_exception=True, set_status_on_exception=True):
                await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None)
            if path:
                span.update_name(f"{scope['method']} {path}")
                span.set_attribute("http.route", path)
            span.end()
