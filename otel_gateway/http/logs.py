"""``GET /api/logs``: the request warehouse as JSON, newest first, a page at a time.

Query parameters are the CLI's filters: ``since``, ``until``, ``model``, ``user``, ``project``,
``status``, ``metadata.<key>=<value>`` (any number), ``limit`` (1-1000, default 50) and
``cursor`` (the previous page's ``next_cursor``). The answer is
``{"object": "list", "data": [records...], "has_more": bool, "next_cursor": str | null}``.
When an auth document is configured only admin keys may read it (403 otherwise); a bad filter
is a 400 naming it; an unreachable store a 503. Both stores answer alike: ``since`` and ``until``
beyond years 1-9999 UTC are clamped to them, and a NUL character in a filter is a 400.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import InvalidRequestError, NotFoundError, PermissionDeniedError, ServiceUnavailableError
from ..identity import ANONYMOUS, IDENTITY
from ..runtime import Gateway
from ..warehouse import FilterError, Store, StoreUnavailable, filters_from_query

StoreSource = Callable[[], Store | None]
"""The store to read (the request log pipeline's), looked up per request; ``None``: no store."""


def logs_endpoint(gateway: Gateway, store_source: StoreSource) -> Callable[[Request], Awaitable[Response]]:
    async def list_logs(request: Request) -> Response:
        if gateway.current.authenticator.enabled and not request.scope.get(IDENTITY, ANONYMOUS).admin:
            raise PermissionDeniedError("Reading the request logs needs an admin key.", code="admin_required")
        try:
            filters = filters_from_query(request.query_params.multi_items())
        except FilterError as exc:
            raise InvalidRequestError(f"Invalid filter {exc.param!r}: {exc.message}", param=exc.param,
                                      code="invalid_filter") from None
        store = store_source()
        if store is None:
            raise NotFoundError("Request logging is not configured on this gateway.", code="logging_disabled")
        try:
            page = await store.query(filters)
        except StoreUnavailable as exc:
            raise ServiceUnavailableError(f"The request log store is unavailable: {exc}",
                                          code="log_store_unavailable") from None
        body = {"object": "list", "data": page.records, "has_more": page.next_cursor is not None,
                "next_cursor": page.next_cursor}
        return Response(orjson.dumps(body), media_type="application/json")

    return list_logs

