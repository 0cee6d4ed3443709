"""The gateway's ASGI stack: its own middleware outermost, its busiest endpoints reached directly.

Starlette's error middleware, exception middleware and router cost about as much per request as
the rest of a chat completion's own work, so the plain ASGI endpoints on exact paths (chat,
embeddings, moderations, messages) are dispatched by one dict lookup in :class:`HotRoutes`,
which answers their errors as Starlette's handlers would (in the shape of the path:
``error_shape_for``). Everything else goes through Starlette.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import GatewayError, internal_error
from ._asgi import error_response, error_shape_for

logger = logging.getLogger("otel_gateway.http")


class GatewayApp(Starlette):
    """Starlette, with ``front`` middleware around everything (first outermost) and the ``hot``
    routes answered before Starlette's own stack. ``hot`` routes stay in ``routes`` too."""

    def __init__(self, *, front: Sequence[Middleware], hot: Sequence[Route], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._front = tuple(front)
        self._hot = tuple(hot)

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = HotRoutes(super().build_middleware_stack(), self._hot)
        for cls, args, kwargs in reversed(self._front):
            app = cls(app, *args, **kwargs)
        return app


class HotRoutes:
    """Plain ASGI: a request for one of ``routes`` (exact path, a method it takes) goes straight to
    its endpoint; any other scope to ``app``."""

    def __init__(self, app: ASGIApp, routes: Iterable[Route]) -> None:
        self.app = app
        self._routes = {(method, route.path): route for route in routes for method in route.methods or ()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, {}
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await route.app(scope, receive, send_noting_start)
        except GatewayError as exc:
            if started:
                raise
            await error_response(exc, error_shape_for(scope["path"]))(scope, receive, send)
        except Exception:
            logger.exception("%s %s failed", scope["method"], scope["path"])
            if started:
                raise
            await error_response(internal_error(), error_shape_for(scope["path"]))(scope, receive, send)
