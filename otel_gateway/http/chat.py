"""``POST /v1/chat/completions``: its entry of the shared endpoint (``_endpoint``), and its stream to the client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.types import Send

from ..calls import ChunkStream, RequestContext
from ..errors import GatewayError
from ..runtime import Gateway
from ..sse import DONE
from ..warehouse import Exchange
from ._endpoint import Endpoint, ModelEndpoint, request_timeout
from ._logged import end_cancelled_stream, record_error
from ._params import CHAT, check_body

logger = logging.getLogger("otel_gateway.chat")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def ChatCompletionsEndpoint(gateway: Gateway) -> ModelEndpoint:
    return ModelEndpoint(gateway, CHAT_ENDPOINT)


async def stream_to_client(
    stream: ChunkStream, send: Send, context: RequestContext, exchange: Exchange | None = None
) -> None:
    """Passes chunks on as they arrive. A failure after the start becomes a final error event, and
    so does the server's cancellation at the end of a graceful shutdown (``shutting_down``); the
    stream is closed however the pump ends (a client that leaves cancels it). ``exchange``
    keeps a reference to every chunk sent, and the usage the stream saw."""
    headers = _SSE_HEADERS + [(k.encode(), v.encode()) for k, v in context.response_headers.items()]
    sent: list[dict[str, Any]] | None = None
    if exchange is not None:
        sent = exchange.streamed_data = []
    started = False
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        started = True
        try:
            async with asyncio.timeout_at(context.deadline):
                async for chunk in stream:
                    body = b"data: " + orjson.dumps(chunk) + b"\n\n"
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    if sent is not None:
                        sent.append(chunk)
        except TimeoutError:
            raise request_timeout(context.headers) from None
        await send({"type": "http.response.body", "body": DONE})
    except GatewayError as exc:
        logger.warning("stream failed after it started: %s", exc.message)
        if exchange is not None:
            record_error(exchange, exc, http_status=200)
        await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(exc.body()) + b"\n\n"})
    except asyncio.CancelledError:
        if not started:
            raise
        await end_cancelled_stream(send, exchange)
    finally:
        await stream.aclose()
        if exchange is not None:
            exchange.usage = _stream_usage(stream)


def _stream_usage(stream: ChunkStream) -> Mapping[str, Any] | None:
    """The usage the upstream reported, also when the client did not ask for it (held back)."""
    usage = getattr(getattr(stream, "assembler", None), "usage", None)
    return usage if isinstance(usage, Mapping) else None


def _validate(body: Mapping[str, Any]) -> None:
    check_body(body, CHAT)


async def _write(stream: ChunkStream, send: Send, context: RequestContext, exchange: Exchange) -> None:
    await stream_to_client(stream, send, context, exchange)


CHAT_ENDPOINT = Endpoint("chat", _validate, _write)
