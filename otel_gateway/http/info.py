"""``GET /v1/models``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..runtime import Gateway


def models_endpoint(gateway: Gateway) -> Callable[[Request], Awaitable[Response]]:
    async def list_models(request: Request) -> Response:
        runtime = gateway.current
        registry = runtime.registry
        data = [
            {"id": model_id, "object": "model", "created": 0, "owned_by": registry.owner(model_id)}
            for model_id in registry.model_ids()
        ]
        virtual = {name for rule in (runtime.config.load_balancing.rules if runtime.config.load_balancing else ())
                   for name in rule.when.models or ()}
        data += [{"id": name, "object": "model", "created": 0, "owned_by": "otel-gateway"}
                 for name in sorted(virtual - set(registry.model_ids()))]
        return JSONResponse({"object": "list", "data": data})

    return list_models


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def readyz_endpoint(gateway: Gateway) -> Callable[[Request], Awaitable[Response]]:
    """Ready when a config is loaded (always, once the app exists) and the log store answers. The
    body also says how the request log fares (``request_log``): records dropped or spooled are
    reported there and do not make the replica unready; only a store that does not answer does."""

    async def readyz(request: Request) -> Response:
        pipeline = gateway.request_log
        store = pipeline.store
        if store is not None and not await store.ping():
            return JSONResponse({"status": "not_ready", "store": "unreachable",
                                 "request_log": await pipeline.health()}, status_code=503)
        return JSONResponse({"status": "ready", "request_log": await pipeline.health()})

    return readyz
