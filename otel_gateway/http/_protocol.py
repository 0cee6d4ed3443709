"""The gateway's HTTP/1.1 front: uvicorn's httptools protocol with bounds on what a client may send
before the app sees its request.

httptools (llhttp) keeps no limit of its own: a request line or header field accumulates in
memory until it ends, and any number of fields is accepted. Here

- the request line and headers of one request are bounded in bytes (``max_header_bytes``) and
  fields (``max_header_count``): beyond either, 431 ``request_header_fields_too_large``;
- the headers must all arrive within ``header_timeout_ms`` of the connection's start or of the
  first byte of the request (keep-alive): else 408 ``header_timeout`` (a connection that sent
  nothing is closed without an answer);
- while the app waits for the body, a pause of more than ``body_idle_timeout_ms`` between two of
  its pieces is answered 408 ``body_timeout`` (or, once the answer started, the connection is cut).

Every refusal closes the connection, and none reaches the app: such a request has no span and
no record. The limits are read from ``gateway-server-config`` when the server starts; a reload
does not change them. The common request (its head in one read) pays for no timer.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ..config import ServerDocument
from ..errors import GatewayError, HeadersTooLargeError, RequestTimeoutError
from ._asgi import error_shape_for

__all__ = ["FrontLimits", "GatewayHttpProtocol", "http_protocol"]

logger = logging.getLogger("otel_gateway.http")


@dataclass(frozen=True, slots=True)
class FrontLimits:
    max_header_bytes: int = 64 * 1024
    max_header_count: int = 256
    header_timeout: float = 10.0
    """Seconds."""
    body_idle_timeout: float = 30.0
    """Seconds."""

    @classmethod
    def of(cls, server: ServerDocument) -> FrontLimits:
        return cls(server.max_header_bytes, server.max_header_count,
                   server.header_timeout_ms / 1000, server.body_idle_timeout_ms / 1000)


def http_protocol(server: ServerDocument) -> type[asyncio.Protocol]:
    """What ``uvicorn.run(http=...)`` takes: :class:`GatewayHttpProtocol` with the limits of
    ``server``. A partial, not a class made on the fly, so that it pickles into worker processes."""
    return cast(type[asyncio.Protocol], functools.partial(GatewayHttpProtocol, limits=FrontLimits.of(server)))


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request the gateway will not take."""


class GatewayHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: FrontLimits | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits or FrontLimits()
        self._in_head = False
        self._in_body = False
        self._raw_head = 0
        """Bytes read while no head was complete: bounds a line that has not ended yet."""
        self._refusal: GatewayError | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self._limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        if self._in_body:
            self._body_at = self.loop.time()
        else:
            room = self._limits.max_header_bytes - self._raw_head
            self._raw_head += len(data)
            if len(data) > room:  # the head may end within the room; what is past it is fed only then
                if not self._feed(data[:room]):
                    return
                if not self._in_body:
                    self._refuse(self._too_large())
                    return
                data = data[room:]
        if not self._feed(data):
            return
        if self._in_head:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._limits.header_timeout, self._head_timed_out)
        elif self._in_body and self._body_timer is None:
            self._body_at = self.loop.time()
            self._body_timer = self.loop.call_later(self._limits.body_idle_timeout, self._body_idle)

    def _feed(self, data: bytes) -> bool:
        """Parses ``data`` as uvicorn's protocol does; ``False`` when the connection is done."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._refusal is None:
                raise
            self._refuse(self._refusal)
            return False
        except httptools.HttpParserError:
            logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's own, with the count bounded: a copy, for it runs for every header of every request.
        headers = self.headers
        if len(headers) >= self._limits.max_header_count:
            self._refusal = self._too_large()
            raise _Refused
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace, which is not part of the value
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        self._raw_head = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # Refusals

    def _too_large(self) -> HeadersTooLargeError:
        limits = self._limits
        return HeadersTooLargeError(
            f"The request line and headers are limited to {limits.max_header_bytes} bytes and "
            f"{limits.max_header_count} header fields.")

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._in_head and self._raw_head == 0:
            self.transport.close()  # nothing of a request arrived: no one to answer
            return
        self._refuse(RequestTimeoutError(
            f"The request headers did not arrive within {self._limits.header_timeout:g} s.", code="header_timeout"))

    def _body_idle(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        now = self.loop.time()
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            self._body_at = now  # the gateway is not reading: the client is not the one waiting
        idle = now - self._body_at
        if idle < self._limits.body_idle_timeout:
            self._body_timer = self.loop.call_later(self._limits.body_idle_timeout - idle, self._body_idle)
            return
        self._refuse(RequestTimeoutError(
            f"The request body paused for more than {self._limits.body_idle_timeout:g} s.", code="body_timeout"))

    def _refuse(self, error: GatewayError) -> None:
        """Answers ``error``, unless another answer is under way on this connection, and closes.
        A request whose head was refused has no cycle yet; the one whose body stalled is the
        current cycle, and its app, waiting for the body, sees the client gone."""
        self._refusal = error
        self._stop_timers()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        logger.warning("%s - refused: %s", client, error.message)
        cycle = self.cycle
        if self._in_body and cycle is not None:
            if not cycle.response_started and not self.pipeline:
                self.transport.write(self._answer(error))
            cycle.disconnected = True
            cycle.message_event.set()
        elif cycle is None or cycle.response_complete:
            self.transport.write(self._answer(error))
        self.transport.close()

    def _answer(self, error: GatewayError) -> bytes:
        """The refusal, in the error shape of the path the request named (as far as it arrived)."""
        path = getattr(self, "url", b"").partition(b"?")[0].decode("latin-1")
        body = orjson.dumps(error.shaped(error_shape_for(path)))
        lines = [f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}\r\n".encode()]
        lines += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        lines += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                  b"connection: close\r\n\r\n", body]
        return b"".join(lines)

    def _stop_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
