"""The gateway's cap on requests in flight, which bounds the memory they hold, and the memory given
back once a burst of them is over.

Outermost in the stack: a request over ``max_requests_in_flight`` (``gateway-server-config``) is
answered 503 ``overloaded`` with ``Retry-After`` before anything else runs, its body unread, and
leaves no span and no record. The health probes never count and are never turned away.

After a burst (at least :data:`BURST` requests at once), once nothing has been in flight for
:data:`QUIET` seconds, the process collects its cyclic garbage and hands the C heap's free pages
back to the system (:func:`reclaim`). Without it a process stayed at its peak: the collector runs
its full pass rarely (``cli._tune_gc``), so a burst's reference cycles (exceptions and their
tracebacks) waited there, and glibc keeps what is freed for reuse.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import OverloadedError
from ._asgi import error_shape_for, send_json

if TYPE_CHECKING:
    from ..runtime import Gateway

__all__ = ["InFlightLimit"]

RETRY_AFTER = 1
"""Seconds a client turned away is asked to wait."""
PROBES = frozenset({"/healthz", "/readyz"})
BURST = 256
"""Requests at once that make a burst worth reclaiming after."""
QUIET = 1.0
"""Seconds with nothing in flight before the reclaim runs."""


def _malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)``: free pages of every arena back to the system; elsewhere nothing."""
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is None:
        return lambda: None
    return lambda: trim(0)


def reclaim(trim: Callable[[], object]) -> None:
    """A full collection, then the C heap trimmed (tens of ms after a burst of thousands)."""
    gc.collect()
    trim()


class InFlightLimit:
    def __init__(self, app: ASGIApp, *, gateway: Gateway) -> None:
        self.app = app
        self._gateway = gateway
        self.in_flight = 0
        self.peak = 0
        """The most in flight at once since the last reclaim."""
        self.reclaims = 0
        self._trim = _malloc_trim()
        self._quiet: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        limit = self._gateway.current.config.server.max_requests_in_flight
        if self.in_flight >= limit:
            error = OverloadedError(
                f"The gateway is serving {limit} requests, its max_requests_in_flight; "
                f"retry after {RETRY_AFTER} s.", retry_after=RETRY_AFTER,
            )
            await send_json(send, error.status, error.shaped(error_shape_for(scope["path"])), error.headers)
            return
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self.peak >= BURST and self._quiet is None:
                self._quiet = asyncio.get_running_loop().call_later(QUIET, self._reclaim)

    def _reclaim(self) -> None:
        self._quiet = None
        if self.in_flight:
            return  # busy again: the next quiet moment reclaims
        self.peak = 0
        self.reclaims += 1
        reclaim(self._trim)
