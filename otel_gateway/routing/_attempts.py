"""What the routing layers share about upstream attempts: how a failure is classified, the
request deadline, running the next layer inside a span, and streams that report their end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from ..calls import ChatCall, ChunkStream, Completion, Send
from ..errors import GatewayError, RequestTimeoutError, UpstreamError, UpstreamStatusError, UpstreamTimeoutError

CHAT_PATH = "/v1/chat/completions"
"""The gateway path every routed call arrived on (``load_balance.http.url``, ``fallback.http.url``)."""
CHAT_METHOD = "POST"


def status_of(error: BaseException) -> int | None:
    """The status an upstream failure stands for: the upstream's own, or 408 for the
    time-to-first-token timeout. ``None`` for failures without a status (timeouts, resets)."""
    if isinstance(error, UpstreamStatusError):
        return error.upstream_status
    if isinstance(error, RequestTimeoutError):
        return 408
    return None


def is_transport_failure(error: BaseException) -> bool:
    """The upstream gave no usable answer: timeout, connection refused or reset, a stream that
    ended before its first chunk, a body that is not JSON."""
    return isinstance(error, UpstreamError) and not isinstance(error, (UpstreamStatusError, OutOfTime))


def is_target_failure(error: BaseException) -> bool:
    """Counts against a target's health: no answer, 5xx, 429, 408. Other 4xx blame the request."""
    if is_transport_failure(error):
        return True
    status = status_of(error)
    return status is not None and (status >= 500 or status in (408, 429))


def time_left(call: ChatCall) -> float | None:
    """Seconds until ``call.context.deadline`` (event-loop time), or ``None`` without one."""
    deadline = call.context.deadline
    return None if deadline is None else deadline - asyncio.get_running_loop().time()


class OutOfTime(UpstreamTimeoutError):
    """The request deadline left no time for another attempt (504). Not the upstream's failure:
    nothing retries or falls back on it."""


def out_of_time(last: GatewayError) -> OutOfTime:
    """The request deadline leaves no time for another attempt: 504, naming what failed last."""
    return OutOfTime(
        f"x-gateway-request-timeout leaves no time for another attempt; the last one failed: {last.message}",
        code="request_timeout",
    )


async def send_in_span(span: Span, send: Send, call: ChatCall) -> Completion | ChunkStream:
    """Calls ``send`` with ``span`` current, so the next layers' spans nest under it. The span ends
    with the call, or with the stream when the result is one."""
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            result = await send(call)
    except BaseException as exc:
        end_span(span, exc)
        raise
    if isinstance(result, Completion):
        span.end()
        return result
    return FinishingStream(result, lambda error, completed: end_span(span, error))


def end_span(span: Span, error: BaseException | None) -> None:
    if error is not None and span.is_recording():
        message = error.message if isinstance(error, GatewayError) else type(error).__name__
        span.set_status(Status(StatusCode.ERROR, message))
    span.end()


class FinishingStream:
    """A ``ChunkStream`` that calls ``on_finish(error, completed)`` once: at its end
    (``None, True``), on its first failure (``error, False``), or when closed early (``None, False``).
    Other attributes (the upstream stream's ``assembler``) are those of the wrapped stream."""

    def __init__(self, stream: ChunkStream, on_finish: Callable[[BaseException | None, bool], None]) -> None:
        self._stream = stream
        self._iterator: AsyncIterator[dict[str, Any]] | None = None
        self._on_finish: Callable[[BaseException | None, bool], None] | None = on_finish

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._iterator is None:
            self._iterator = self._stream.__aiter__()
        try:
            return await anext(self._iterator)
        except StopAsyncIteration:
            self._finish(None, True)
            raise
        except BaseException as exc:
            self._finish(exc, False)
            raise

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._finish(None, False)

    def _finish(self, error: BaseException | None, completed: bool) -> None:
        on_finish, self._on_finish = self._on_finish, None
        if on_finish is not None:
            on_finish(error, completed)
