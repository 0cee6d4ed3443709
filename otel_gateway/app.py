"""``create_app(config)``: builds every component of the gateway from its configuration."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport
from opentelemetry.trace import TracerProvider
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from ._version import __version__
from .chat import ProviderSend, Scrubber
from .config import GatewayConfig
from .errors import GatewayError
from .http._asgi import RequestIdMiddleware, gateway_error_handler, http_error_handler, internal_error_handler
from .http.chat import ChatCompletionsEndpoint
from .http.info import healthz, models_endpoint, readyz
from .providers import ProviderRegistry
from .telemetry import ServerSpanMiddleware
from .telemetry import capture_content as capture_content_from_env
from .transport import AiohttpTransport


def create_app(
    config: GatewayConfig,
    *,
    tracer_provider: TracerProvider | None = None,
    capture_content: bool | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The gateway as an ASGI app. Tracing is on when a ``tracer_provider`` is given; the
    global provider is never read or set here. ``transport`` replaces the upstream pool."""
    tracer = tracer_provider.get_tracer("otel_gateway", __version__) if tracer_provider else None

    def client_for(own: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        base = own or transport or AiohttpTransport()
        if tracer_provider is not None:
            base = AsyncOpenTelemetryTransport(base, tracer_provider=tracer_provider)
        return httpx.AsyncClient(transport=base)

    registry = ProviderRegistry(config, client_for)
    send = ProviderSend(
        registry,
        tracer=tracer,
        capture_content=capture_content_from_env() if capture_content is None else capture_content,
        scrub=Scrubber(config.secrets()),
    )
    # Routing layers (rate limit, load balance, fallback, retry) wrap ``send`` here.
    routes = [
        Route("/v1/chat/completions", ChatCompletionsEndpoint(send, max_body_bytes=config.server.max_request_body_bytes),
              methods=["POST"]),
        Route("/v1/models", models_endpoint(registry), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    middleware = [Middleware(ServerSpanMiddleware, tracer=tracer)] if tracer is not None else []
    middleware.append(Middleware(RequestIdMiddleware))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await registry.aclose()

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
    app.state.config = config
    return app
