"""``create_app(config)``: builds every component of the gateway from its configuration."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import AsyncIterator

import httpx
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.trace import TracerProvider
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from .config import GatewayConfig
from .errors import GatewayError
from .http import (
    GatewayApp,
    IdentityMiddleware,
    InFlightLimit,
    RequestIdMiddleware,
    gateway_error_handler,
    http_error_handler,
    internal_error_handler,
)
from .http.admin import reload_endpoint
from .http.chat import ChatCompletionsEndpoint
from .http.embeddings import OperationEndpoint
from .http.info import healthz, models_endpoint, readyz_endpoint
from .http.logs import logs_endpoint
from .http.messages import MessagesEndpoint
from .http.proxy import ProxyEndpoint
from .runtime import Gateway
from .telemetry import DEFAULT_SERVICE_NAME, ServerSpanMiddleware
from .warehouse import Store


def create_app(
    config: GatewayConfig,
    *,
    tracer_provider: TracerProvider | None = None,
    capture_content: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    reload_on_sighup: bool = False,
    logger_provider: LoggerProvider | None = None,
    log_store: Store | None = None,
    service_name: str = DEFAULT_SERVICE_NAME,
) -> GatewayApp:
    """The gateway as an ASGI app. Tracing is on when a ``tracer_provider`` is given; the
    global provider is never read or set here. ``transport`` replaces the upstream pool.
    Request log records also go to ``log_store`` instead of the logging document's store when
    given, and over OTLP to ``logger_provider`` when given. Nothing here reads the environment:
    the entry point (``cli.py``) passes in what it says (providers, content capture, service name)."""
    gateway = Gateway(
        config,
        tracer_provider=tracer_provider,
        capture_content=capture_content,
        transport=transport,
        logger_provider=logger_provider,
        log_store=log_store,
        service_name=service_name,
    )
    hot = [
        Route("/v1/chat/completions", ChatCompletionsEndpoint(gateway), methods=["POST"]),
        Route("/v1/embeddings", OperationEndpoint(gateway, "embeddings"), methods=["POST"]),
        Route("/v1/moderations", OperationEndpoint(gateway, "moderations"), methods=["POST"]),
        Route("/v1/messages", MessagesEndpoint(gateway), methods=["POST"]),
    ]
    routes = [
        *hot,
        Route("/v1/models", models_endpoint(gateway), methods=["GET"]),
        Route("/admin/reload", reload_endpoint(gateway), methods=["POST"]),
        Route("/api/logs", logs_endpoint(gateway, lambda: gateway.request_log.store), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz_endpoint(gateway), methods=["GET"]),
    ]
    routes += _proxy_routes(gateway, routes)
    tracer = gateway.services.tracer
    middleware = [Middleware(ServerSpanMiddleware, tracer=tracer)] if tracer is not None else []
    middleware += [Middleware(RequestIdMiddleware), Middleware(IdentityMiddleware, gateway=gateway)]
    middleware.insert(0, Middleware(InFlightLimit, gateway=gateway))

    app = GatewayApp(
        front=middleware,
        hot=hot,
        routes=routes,
        exception_handlers={
            GatewayError: gateway_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        lifespan=functools.partial(_lifespan, gateway, reload_on_sighup),
    )
    app.state.gateway = gateway
    return app


@contextlib.asynccontextmanager
async def _lifespan(gateway: Gateway, reload_on_sighup: bool, app: Starlette) -> AsyncIterator[None]:
    """Starts the request log; at shutdown flushes and closes. With ``reload_on_sighup`` (the app
    owns its process's signals: ``otel-gateway serve``) it reloads on SIGHUP, and a second SIGTERM
    or SIGINT exits at once, the records of the requests in flight written first."""
    from ._shutdown import SecondSignalExit

    loop = asyncio.get_running_loop()
    second_signal = SecondSignalExit(gateway.request_log)
    if reload_on_sighup:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(gateway.reload_logged()))
        second_signal.install()
    await gateway.start()
    try:
        yield
    finally:
        if reload_on_sighup:
            loop.remove_signal_handler(signal.SIGHUP)
        try:
            await gateway.aclose()
        finally:
            second_signal.uninstall()


_PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _proxy_routes(gateway: Gateway, routes: list[Route]) -> list[Route]:
    """Files and batches (logged with their JSON bodies), then every other ``/v1/...`` path: after
    the gateway's own ``routes``, which keep their paths (a method they do not take is passed through)."""
    logged = ProxyEndpoint(gateway, log_bodies=True)
    own = frozenset(route.path for route in routes if route.path.startswith("/v1/"))
    return [
        *(Route(path, logged, methods=_PROXY_METHODS)
          for path in ("/v1/files", "/v1/files/{rest:path}", "/v1/batches", "/v1/batches/{rest:path}")),
        Route("/v1/{rest:path}", ProxyEndpoint(gateway, log_bodies=False, own_paths=own), methods=_PROXY_METHODS),
    ]
