"""The request log's side of an endpoint: an :class:`Exchange` started from the ASGI scope, filled
while the request is served, and handed to the request log however the request ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import format_span_id, format_trace_id
from starlette.types import Receive, Scope, Send

from ..errors import GatewayError, ServiceUnavailableError, internal_error
from ..identity import ANONYMOUS, IDENTITY, METADATA
from ..warehouse import Exchange
from ._asgi import REQUEST_ID, ClientGone, cancelled_on_disconnect

if TYPE_CHECKING:
    from ..runtime import Gateway


def start_exchange(scope: Scope, headers: Mapping[str, str], endpoint: str | None = None) -> Exchange:
    """The exchange of the request in ``scope``, joined to its trace; ``endpoint`` defaults to the path."""
    exchange = Exchange(
        request_id=scope[REQUEST_ID],
        endpoint=endpoint or scope["path"],
        method=scope["method"],
        identity=scope.get(IDENTITY, ANONYMOUS),
        metadata=scope.get(METADATA) or {},
        request_headers=headers,
        query=scope.get("query_string", b"").decode("latin-1"),
    )
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        exchange.trace_id, exchange.span_id = format_trace_id(context.trace_id), format_span_id(context.span_id)
    return exchange


@contextlib.contextmanager
def logged(gateway: Gateway, exchange: Exchange) -> Iterator[Exchange]:
    """Records how the block ended in ``exchange`` and submits it. A client gone before its request
    was read ends the block quietly (there is no one to answer); every other error goes on. Until
    then the request log counts the request as in flight, to record it if the process exits first."""
    gateway.request_log.begin(exchange)
    try:
        yield exchange
    except ClientGone:
        exchange.status = "cancelled"
    except asyncio.CancelledError:
        exchange.status = "cancelled"
        raise
    except GatewayError as exc:
        record_error(exchange, exc)
        raise
    except Exception:
        if exchange.error is None:  # else the endpoint recorded the failure and cuts its started answer
            record_error(exchange, internal_error())
        raise
    finally:
        exchange.finish()
        gateway.request_log.submit(exchange)


def record_error(exchange: Exchange, error: GatewayError, *, http_status: int | None = None) -> None:
    """``http_status``: what the client got, when the error came after the answer had started."""
    exchange.status = "rate_limited" if error.status == 429 else "error"
    exchange.http_status = error.status if http_status is None else http_status
    exchange.error = error.body()


FINAL_EVENT_SECONDS = 0.5
"""How long the last event of a stream ended by shutdown may wait for a client that does not read."""


def shutting_down() -> ServiceUnavailableError:
    return ServiceUnavailableError("The gateway is shutting down; this stream was ended before it finished.",
                                   code="shutting_down")


async def end_cancelled_stream(send: Send, exchange: Exchange | None, event: bytes | None = None) -> None:
    """Ends an event stream whose task was cancelled after the answer started: by the server at
    the end of its graceful shutdown (then the client gets a last ``shutting_down`` error event and
    a complete answer), or because its client left (then sending is a no-op). The record says
    ``cancelled``; the cancellation ends here, so that the server sees a finished answer.
    ``event``: that last event in the stream's own format (default: OpenAI's, a ``data:`` line)."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    if exchange is not None:
        exchange.status = "cancelled"
    if event is None:
        event = b"data: " + orjson.dumps(shutting_down().body()) + b"\n\n"
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(FINAL_EVENT_SECONDS):
            await send({"type": "http.response.body", "body": event})


QUIET_START = 0.05
"""Seconds a non-streamed request runs before its client is watched for a disconnect."""


class watching_disconnect(cancelled_on_disconnect):
    """:class:`cancelled_on_disconnect`, noting a cancellation in ``exchange``. A stream is
    watched from its start; other answers after :data:`QUIET_START`."""

    __slots__ = ("_exchange",)

    def __init__(self, receive: Receive, exchange: Exchange, *, stream: bool = True) -> None:
        super().__init__(receive, after=0.0 if stream else QUIET_START)
        self._exchange = exchange

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is asyncio.CancelledError:
            self._exchange.status = "cancelled"
        return await super().__aexit__(exc_type, exc, tb)
