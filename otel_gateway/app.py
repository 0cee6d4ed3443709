"""``create_app(config)``: builds every component of the gateway from its configuration."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import httpx
from opentelemetry.trace import TracerProvider
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from .config import GatewayConfig
from .errors import GatewayError
from .http._asgi import RequestIdMiddleware, gateway_error_handler, http_error_handler, internal_error_handler
from .http.admin import reload_endpoint
from .http.chat import ChatCompletionsEndpoint
from .http.info import healthz, models_endpoint, readyz
from .identity import IdentityMiddleware
from .runtime import Gateway
from .telemetry import ServerSpanMiddleware
from .telemetry import capture_content as capture_content_from_env


def create_app(
    config: GatewayConfig,
    *,
    tracer_provider: TracerProvider | None = None,
    capture_content: bool | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    reload_on_sighup: bool = False,
) -> Starlette:
    """The gateway as an ASGI app. Tracing is on when a ``tracer_provider`` is given; the
    global provider is never read or set here. ``transport`` replaces the upstream pool."""
    gateway = Gateway(
        config,
        tracer_provider=tracer_provider,
        capture_content=capture_content_from_env() if capture_content is None else capture_content,
        transport=transport,
    )
    routes = [
        Route("/v1/chat/completions", ChatCompletionsEndpoint(gateway), methods=["POST"]),
        Route("/v1/models", models_endpoint(gateway), methods=["GET"]),
        Route("/admin/reload", reload_endpoint(gateway), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    tracer = gateway.services.tracer
    middleware = [Middleware(ServerSpanMiddleware, tracer=tracer)] if tracer is not None else []
    middleware += [Middleware(RequestIdMiddleware), Middleware(IdentityMiddleware, gateway=gateway)]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if reload_on_sighup:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(gateway.reload_logged()))
        try:
            yield
        finally:
            if reload_on_sighup:
                loop.remove_signal_handler(signal.SIGHUP)
            await gateway.aclose()

    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            GatewayError: gateway_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
