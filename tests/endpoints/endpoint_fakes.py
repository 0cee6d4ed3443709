"""A fake upstream for passed-through paths: :class:`fakes.FakeUpstream` as a raw ASGI app that
takes any method, records bodies raw (multipart included) or only counts them, answers with raw
bytes too, and notices when the gateway leaves; and a request log that keeps what it is given."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from fakes import FakeUpstream, Recorded, Reply
from starlette.types import Message, Receive, Scope, Send

from otel_gateway.warehouse import Exchange, RequestLog


@dataclass
class RawReply(Reply):
    body: bytes | None = None
    """Raw answer bytes (instead of ``json``)."""
    content_type: str = "application/json"
    chunks: list[bytes] | None = None
    """Raw answer bytes sent in pieces, without a content-length."""


@dataclass
class ProxyUpstream(FakeUpstream):
    replies: dict[str, Reply] = field(default_factory=dict)
    """Answers by path; other paths get ``reply``."""
    count_only: bool = False
    """Count request bodies in ``received_bytes`` and drop them as they arrive."""
    received_bytes: int = 0
    gateway_left: threading.Event = field(default_factory=threading.Event)
    """Set when the gateway closed the connection before the answer was complete."""

    @property
    def app(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:  # a function: uvicorn sees ASGI 3
            await self._asgi(scope, receive, send)

        return app

    def reset(self, reply: Reply | None = None) -> ProxyUpstream:
        super().reset(reply)
        self.replies.clear()
        self.count_only = False
        self.received_bytes = 0
        self.gateway_left.clear()
        return self

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw = await self._body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body: Any = raw
        if raw and headers.get("content-type", "").startswith("application/json"):
            body = orjson.loads(raw)
        self.requests.append(Recorded(scope["method"], scope["path"], scope["query_string"].decode(), headers, body))
        reply = self.replies.get(scope["path"], self.reply)
        left = asyncio.Event()
        listener = asyncio.create_task(_wait_disconnect(receive, left))
        try:
            await self._answer(reply, send, left)
        finally:
            listener.cancel()

    async def _body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            self.received_bytes += len(chunk)
            if not self.count_only:
                chunks.append(chunk)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return b"".join(chunks)

    async def _answer(self, reply: Reply, send: Send, left: asyncio.Event) -> None:
        if reply.delay and await _left_within(left, reply.delay):
            self.gateway_left.set()
            return
        if reply.events is not None:
            await self._stream(reply, reply.events, send, left, "text/event-stream")
            return
        raw = isinstance(reply, RawReply)
        if raw and reply.chunks is not None:
            await self._stream(reply, reply.chunks, send, left, reply.content_type)
            return
        body = reply.body if raw and reply.body is not None else orjson.dumps(reply.json)
        content_type = reply.content_type if raw else "application/json"
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                   *((k.encode(), v.encode()) for k, v in reply.headers.items())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, reply: Reply, frames: list[bytes], send: Send, left: asyncio.Event, kind: str) -> None:
        headers = [(b"content-type", kind.encode()), *((k.encode(), v.encode()) for k, v in reply.headers.items())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        for sent, frame in enumerate(frames):
            if reply.cut_after is not None and sent >= reply.cut_after:
                raise ConnectionAbortedError("fake upstream cuts the answer")
            if sent and reply.event_delay and await _left_within(left, reply.event_delay):
                self.stream_abandoned.set()
                self.gateway_left.set()
                return
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _wait_disconnect(receive: Receive, left: asyncio.Event) -> None:
    message: Message = {}
    while message.get("type") != "http.disconnect":
        message = await receive()
    left.set()


async def _left_within(left: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(left.wait(), seconds)
    return left.is_set()


class RecordingLog:
    """Wraps the gateway's request log: keeps every exchange submitted, in order, and passes it on."""

    def __init__(self, inner: RequestLog) -> None:
        self._inner = inner
        self._queue: queue.Queue[Exchange] = queue.Queue()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def submit(self, exchange: Exchange) -> None:
        self._queue.put(exchange)
        self._inner.submit(exchange)

    def next(self, timeout: float = 5) -> Exchange:
        return self._queue.get(timeout=timeout)

    def drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
