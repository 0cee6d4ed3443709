"""``POST /v1/messages``: Anthropic's Messages API, its entry of the shared endpoint (``_endpoint``).

The body goes down the one chain (rate limit, load balancing, fallback, retries) to an Anthropic
provider with only ``model`` replaced (``chat._specs``); a JSON answer comes back as it came, a
stream as Anthropic events re-serialised from the decoded ones (``event:`` names kept). A failure
after the stream started ends it with an ``event: error`` frame, unless the upstream sent its
own; so does the server's cancellation at the end of a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.types import Send

from ..calls import ChunkStream, RequestContext
from ..errors import GatewayError, InvalidRequestError
from ..warehouse import Exchange
from ._endpoint import Endpoint, request_timeout
from ._logged import end_cancelled_stream, record_error, shutting_down

__all__ = ["MESSAGES_ENDPOINT"]

logger = logging.getLogger("otel_gateway.messages")

_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _validate(body: Mapping[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("You must provide a model parameter (a non-empty string).", param="model",
                                  code="missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("You must provide messages: a non-empty array of message objects.",
                                  param="messages", code="missing_required_parameter")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequestError("stream must be a boolean.", param="stream", code="invalid_type")


def _frame(event: Mapping[str, Any]) -> bytes:
    name = event.get("type")
    head = b"event: " + name.encode() + b"\n" if isinstance(name, str) and name.isprintable() else b""
    return head + b"data: " + orjson.dumps(event) + b"\n\n"


def _error_frame(error: GatewayError) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(error.anthropic_body()) + b"\n\n"


async def _write_stream(stream: ChunkStream, send: Send, context: RequestContext, exchange: Exchange) -> None:
    headers = _STREAM_HEADERS + [(k.encode(), v.encode()) for k, v in context.response_headers.items()]
    started = upstream_error = False
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        started = True
        try:
            async with asyncio.timeout_at(context.deadline):
                async for event in stream:
                    upstream_error = upstream_error or event.get("type") == "error"
                    await send({"type": "http.response.body", "body": _frame(event), "more_body": True})
        except TimeoutError:
            raise request_timeout(context.headers) from None
        await send({"type": "http.response.body", "body": b""})
    except GatewayError as exc:
        logger.warning("stream failed after it started: %s", exc.message)
        record_error(exchange, exc, http_status=200)
        frame = b"" if upstream_error else _error_frame(exc)
        await send({"type": "http.response.body", "body": frame})
    except asyncio.CancelledError:
        if not started:
            raise
        await end_cancelled_stream(send, exchange, _error_frame(shutting_down()))
    finally:
        await stream.aclose()
        assembler: Any = getattr(stream, "assembler", None)
        if assembler is not None:
            exchange.response, exchange.streamed_data = assembler.message, assembler.events
            exchange.usage = assembler.usage


MESSAGES_ENDPOINT = Endpoint("messages", _validate, _write_stream)
