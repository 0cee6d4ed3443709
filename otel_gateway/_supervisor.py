"""``otel-gateway serve --workers N``: uvicorn's supervisor of worker processes, with the gateway's
shutdown: the first SIGTERM or SIGINT closes the listening socket (new connections are refused, not
left waiting in its backlog) and asks every worker to drain; a second one is relayed to the
workers, which then write the records of their requests in flight and exit at once (see
:mod:`otel_gateway._shutdown`). A worker ignores SIGINT itself: Ctrl-C reaches every process of the
terminal's group, and the supervisor relays it, so that one Ctrl-C is one signal to a worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

logger = logging.getLogger("otel_gateway.shutdown")


class Supervisor(Multiprocess):
    def __init__(self, config: uvicorn.Config, sockets: list[Any]) -> None:
        super().__init__(config, sockets)
        self._stops = 0

    def handle_int(self) -> None:
        self._stop("SIGINT")

    def handle_term(self) -> None:
        self._stop("SIGTERM")

    def _stop(self, name: str) -> None:
        self._stops += 1
        if self._stops == 1:
            logger.info("%s: draining the workers", name)
            self.should_exit.set()
            return
        logger.warning("%s again: the workers write the records of their requests in flight and exit", name)
        for process in self.processes:
            if process.exitcode is None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def init_processes(self) -> None:
        with _sigint_ignored_by_children():
            super().init_processes()

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()

    def join_all(self) -> None:
        """Waits for the workers, relaying a second signal meanwhile."""
        for process in self.processes:
            while process.exitcode is None:
                process.process.join(0.1)
                self.handle_signals()


@contextlib.contextmanager
def _sigint_ignored_by_children() -> Iterator[None]:
    """Workers started meanwhile ignore SIGINT from their first instruction (an ignored signal stays
    ignored across exec), so a Ctrl-C while one still imports cannot kill it (and have it replaced
    on the socket): the supervisor relays it. Only around the first spawn, which waits for nothing:
    a Ctrl-C in those few milliseconds is lost. A worker replaced later (one that died) takes SIGINT
    until its app is loaded: ignoring it around that replacement would mean ignoring it in the
    supervisor while it waits on its workers' health checks."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_workers(app: str, workers: int, **options: Any) -> None:
    """Serves the app factory ``app`` (``module:function``) in ``workers`` processes."""
    config = uvicorn.Config(app, factory=True, workers=workers, **options)
    sock = config.bind_socket()
    Supervisor(config, sockets=[sock]).run()


def ignore_sigint_in_worker() -> None:
    """Called in a worker process (by its app factory, once uvicorn has set its own handlers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
