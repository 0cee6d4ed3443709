"""``GET /v1/models``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..providers import ProviderRegistry


def models_endpoint(registry: ProviderRegistry) -> Callable[[Request], Response]:
    listing = {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": 0, "owned_by": registry.owner(model_id)}
            for model_id in registry.model_ids()
        ],
    }

    async def list_models(request: Request) -> Response:
        return JSONResponse(listing)

    return list_models


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    return JSONResponse({"status": "ready"})
