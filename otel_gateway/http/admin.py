"""``POST /admin/reload``: re-read the configuration (admin keys only)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..config import ConfigError
from ..errors import InvalidRequestError, PermissionDeniedError
from ..identity import ANONYMOUS, IDENTITY
from ..runtime import Gateway

logger = logging.getLogger("otel_gateway.admin")


def reload_endpoint(gateway: Gateway) -> Callable[[Request], Awaitable[Response]]:
    async def reload(request: Request) -> Response:
        if not request.scope.get(IDENTITY, ANONYMOUS).admin:
            raise PermissionDeniedError("Reloading the configuration needs an admin key.", code="admin_required")
        try:
            config = await gateway.reload()
        except ConfigError as exc:
            logger.error("configuration reload refused; keeping the current one:\n%s", exc)
            raise InvalidRequestError(
                "The new configuration was refused; the current one stays. " + "; ".join(map(str, exc.issues)),
                code="invalid_config",
            ) from None
        return JSONResponse({"status": "reloaded", "sources": list(config.sources),
                             "providers": [p.name for p in config.providers]})

    return reload
