"""A second SIGTERM or SIGINT: the serving process exits at once, having written its records.

On the first signal uvicorn drains: it stops accepting, waits up to its graceful timeout
(``--graceful-timeout``) for the requests in flight, cancels those left (a stream ends with a
``shutting_down`` event), and the app's shutdown writes every record. On a second signal uvicorn
would skip the app's shutdown (SIGINT) or do nothing at all (SIGTERM). :class:`SecondSignalExit`,
installed by the app's lifespan in the serving process, hands the first signal on to the handler
it replaces (uvicorn's) and turns the second into
:meth:`~otel_gateway.warehouse.RequestLogPipeline.write_now` (every request in flight recorded as
``cancelled``, to the store within a second, else to the spool), then an exit by that signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from .warehouse import RequestLogPipeline

logger = logging.getLogger("otel_gateway.shutdown")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
BACKSTOP_SECONDS = 5.0
"""After a second signal the process is gone this soon, whatever its loop is doing."""

Handler = Callable[[int, FrameType | None], Any] | int | None


class SecondSignalExit:
    """Install from the event loop's thread, the main one (elsewhere :meth:`install` does nothing).
    A signal whose handler is ``SIG_IGN`` (a worker leaves SIGINT to its supervisor) stays ignored."""

    def __init__(self, request_log: RequestLogPipeline, *, backstop: float = BACKSTOP_SECONDS) -> None:
        self._request_log = request_log
        self._backstop = backstop
        self._previous: dict[int, Handler] = {}
        self._received = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue
            self._previous[sig] = previous
            signal.signal(sig, self._handle)
        return True

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        self._received += 1
        if self._received == 1:
            previous = self._previous.get(sig)
            if callable(previous):
                previous(sig, frame)
            return
        if self._received > 2 or self._loop is None:
            _exit_by(sig)  # a third: no more waiting
        logger.warning("%s again: writing the records of the requests in flight, then exiting",
                       signal.Signals(sig).name)
        backstop = threading.Timer(self._backstop, _exit_by, (sig,))
        backstop.daemon = True
        backstop.start()
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._write_and_exit(sig)))  # type: ignore[union-attr]

    async def _write_and_exit(self, sig: int) -> None:
        try:
            count = await self._request_log.write_now()
            logger.warning("wrote %d request log record(s) at exit", count)
        except BaseException:
            logger.exception("writing the request log at exit failed")
        finally:
            _exit_by(sig)


def _exit_by(sig: int) -> None:
    """Ends the process as that signal's default action would, log handlers flushed first."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # nothing to report it to on the way out
            handler.flush()
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # not reached where the signal's default action ends the process
