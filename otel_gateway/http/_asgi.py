"""Small ASGI helpers for the hot path: body reading with a limit, JSON answers, request ids."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    ErrorShape,
    GatewayError,
    MalformedJSONError,
    NotFoundError,
    PayloadTooLargeError,
    internal_error,
)

REQUEST_ID = "otel_gateway.request_id"
ANTHROPIC_PATH = "/v1/messages"
"""Anthropic's Messages API: this path and those under it (``/v1/messages/count_tokens``, ...)
answer errors in Anthropic's shape, whichever layer refuses the request; every other path OpenAI's."""
_JSON = (b"content-type", b"application/json")


def new_request_id() -> str:
    """32 hex digits: the time in ms, then 80 random bits. Ids sort by arrival, so the log store's
    id index grows at its end (as with UUIDv7); no syscall, since ids must be unique, not secret."""
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


class ClientGone(Exception):
    """The client disconnected before its request was read; there is no one to answer."""


class RequestIdMiddleware:
    """Gives every request an id (``x-gateway-request-id`` on the response, the log record's id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope[REQUEST_ID] = new_request_id()
        header = (b"x-gateway-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class cancelled_on_disconnect:
    """``async with``: runs the body until done, or until the client disconnects: then the body is
    cancelled at once (closing whatever upstream call it waits on) and the cancellation ends here.

    Watching takes a task of its own. ``after`` seconds delay its start: a request answered
    sooner never pays for one, and a client that leaves is noticed at most that late."""

    __slots__ = ("_after", "_receive", "_task", "_timer", "_watcher", "gone")

    def __init__(self, receive: Receive, *, after: float = 0.0) -> None:
        self._receive = receive
        self._after = after
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.gone = False

    async def __aenter__(self) -> cancelled_on_disconnect:
        self._task = asyncio.current_task()
        if self._after > 0:
            self._timer = asyncio.get_running_loop().call_later(self._after, self._watch)
        else:
            self._watch()
        return self

    def _watch(self) -> None:
        self._timer = None
        self._watcher = asyncio.ensure_future(self._wait_for_disconnect())

    async def _wait_for_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        assert self._task is not None
        self._task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if exc_type is asyncio.CancelledError and self.gone:
            assert self._task is not None
            self._task.uncancel()
            return True
        return False


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, or 413 past ``limit`` bytes: at once when the ``content-length`` says so
    (compared by length first, so a header of thousands of digits is never handed to ``int``),
    else once that many bytes have arrived. A malformed length is the server's to refuse."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and _exceeds(value.lstrip(b"0"), limit):
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise MalformedJSONError("The request body is empty; send a JSON object.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSONError(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedJSONError("The request body must be a JSON object.")
    return data


async def send_json(send: Send, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
    body = orjson.dumps(payload)
    raw_headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if headers:
        raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def headers_of(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def error_shape_for(path: str) -> ErrorShape:
    """The shape of the errors answered on ``path``: the one place that decides it, for the
    endpoints and for every layer that refuses a request before one is reached."""
    if path.startswith(ANTHROPIC_PATH) and path[len(ANTHROPIC_PATH):len(ANTHROPIC_PATH) + 1] in ("", "/"):
        return ErrorShape.ANTHROPIC
    return ErrorShape.OPENAI


def error_response(error: GatewayError, shape: ErrorShape = ErrorShape.OPENAI) -> Response:
    return Response(orjson.dumps(error.shaped(shape)), status_code=error.status, headers=error.headers,
                    media_type="application/json")


async def gateway_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc, error_shape_for(request.url.path))


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: GatewayError = NotFoundError(f"Unknown path: {request.method} {request.url.path}", code="unknown_path")
    else:
        error = GatewayError(str(exc.detail), code=f"http_{exc.status_code}")
        error.status = exc.status_code
        error.type = "invalid_request_error" if exc.status_code < 500 else "internal_error"
    return error_response(error, error_shape_for(request.url.path))


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    return error_response(internal_error(), error_shape_for(request.url.path))


def _exceeds(digits: bytes, limit: int) -> bool:
    bound = str(limit).encode()
    return len(digits) > len(bound) or (len(digits) == len(bound) and digits > bound)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body is larger than the gateway's limit of {limit} bytes.")
