"""``POST /v1/chat/completions``: parse once, send down the chain, answer or stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from ..chat import ChatCall, ChunkStream, Completion, RequestContext
from ..chat import Send as ChatSend
from ..errors import GatewayError, InvalidRequestError, UpstreamTimeoutError
from ..runtime import Gateway
from ..sse import DONE
from ..warehouse import Exchange
from ._asgi import headers_of, parse_json_object, read_body, send_json
from ._logged import end_cancelled_stream, logged, record_error, start_exchange, watching_disconnect
from ._params import CHAT, check_body

logger = logging.getLogger("otel_gateway.chat")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ChatCompletionsEndpoint:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self._gateway.current
        headers = headers_of(scope)
        exchange = start_exchange(scope, headers, "/v1/chat/completions")
        with logged(self._gateway, exchange):
            body = parse_json_object(await read_body(scope, receive, runtime.config.server.max_request_body_bytes))
            exchange.request = body
            exchange.model = body["model"] if isinstance(body.get("model"), str) else None
            exchange.stream = body.get("stream") is True
            _validate(body)
            deadline = _deadline(headers)
            context = RequestContext(
                request_id=exchange.request_id,
                headers=headers,
                ttft_timeout=_milliseconds(headers, "x-gateway-ttft-timeout-ms"),
                identity=exchange.identity,
                metadata=exchange.metadata,
                deadline=deadline,
                outcome=exchange.outcome,
            )
            call = ChatCall(body=body, model=body["model"], context=context)
            async with watching_disconnect(receive, exchange, stream=exchange.stream):
                result = await _send_within_deadline(runtime.send, call)
                if isinstance(result, Completion):
                    exchange.response = result.data
                    await send_json(send, 200, result.data, {**context.response_headers, **result.headers})
                else:
                    await stream_to_client(result, send, context, exchange)


async def _send_within_deadline(chat_send: ChatSend, call: ChatCall) -> Completion | ChunkStream:
    deadline = call.context.deadline
    if deadline is None:
        return await chat_send(call)
    try:
        async with asyncio.timeout_at(deadline):
            return await chat_send(call)
    except TimeoutError:
        raise _request_timeout(call.context.headers) from None


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
            raise _request_timeout(context.headers) from None
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


MAX_TIMEOUT_MS = 86_400_000
"""The longest ``x-gateway-request-timeout`` / ``x-gateway-ttft-timeout-ms`` taken (24 h); more is a 400."""


def _milliseconds(headers: Mapping[str, str], name: str) -> float | None:
    """A header of whole milliseconds, 1 to :data:`MAX_TIMEOUT_MS`, in seconds. ASCII digits only
    (``str.isdigit`` also takes ``²``), and never more of them than the maximum has, so ``int()``
    is neither refused nor slow, however long the value."""
    value = headers.get(name)
    if value is None:
        return None
    digits = value.lstrip("0")
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidRequestError(f"{name} must be a positive whole number of milliseconds.",
                                  param=name, code="invalid_header")
    if len(digits) > len(str(MAX_TIMEOUT_MS)) or int(digits) > MAX_TIMEOUT_MS:
        raise InvalidRequestError(f"{name} must be at most {MAX_TIMEOUT_MS} milliseconds (24 hours).",
                                  param=name, code="invalid_header")
    return int(digits) / 1000


def _deadline(headers: Mapping[str, str]) -> float | None:
    timeout = _milliseconds(headers, "x-gateway-request-timeout")
    return None if timeout is None else asyncio.get_running_loop().time() + timeout


def _request_timeout(headers: Mapping[str, str]) -> UpstreamTimeoutError:
    ms = headers.get("x-gateway-request-timeout")
    return UpstreamTimeoutError(f"The request was not answered within {ms} ms (x-gateway-request-timeout).",
                                code="request_timeout")
