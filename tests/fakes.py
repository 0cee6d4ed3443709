"""A scripted fake provider served over real HTTP: it records what the gateway sent and answers
with whatever the test set, including slow, cut and failing streams."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    events: list[bytes] | None = None
    """Raw SSE frames: a streamed answer."""
    delay: float = 0.0
    """Seconds before the response starts."""
    event_delay: float = 0.0
    """Seconds between frames."""
    cut_after: int | None = None
    """Drop the connection after this many frames."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeUpstream:
    reply: Reply = field(default_factory=Reply)
    requests: list[Recorded] = field(default_factory=list)
    stream_abandoned: threading.Event = field(default_factory=threading.Event)
    """Set when the gateway closed a stream before its last frame."""

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "DELETE"])])

    def reset(self, reply: Reply | None = None) -> FakeUpstream:
        self.reply = reply or Reply()
        self.requests.clear()
        self.stream_abandoned.clear()
        return self

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        self.requests.append(Recorded(
            request.method, request.url.path, request.url.query, dict(request.headers),
            orjson.loads(raw) if raw else None,
        ))
        reply = self.reply
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.events is None:
            return Response(orjson.dumps(reply.json), status_code=reply.status, media_type="application/json",
                            headers=reply.headers)
        return StreamingResponse(self._frames(reply), status_code=reply.status, media_type="text/event-stream")

    async def _frames(self, reply: Reply) -> AsyncIterator[bytes]:
        assert reply.events is not None
        sent = 0
        try:
            for frame in reply.events:
                if reply.cut_after is not None and sent >= reply.cut_after:
                    raise ConnectionAbortedError("fake upstream cuts the stream")
                if sent and reply.event_delay:
                    await asyncio.sleep(reply.event_delay)
                yield frame
                sent += 1
        finally:
            if sent < len(reply.events) and reply.cut_after is None:
                self.stream_abandoned.set()


def sse(payload: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return head + b"data: " + data + b"\n\n"


def openai_completion(content: str | None = "Hello there", *, model: str = "gpt-4o-2024-08-06",
                      tool_calls: list[dict[str, Any]] | None = None, finish_reason: str = "stop") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-fake1", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def openai_stream(parts: list[str], *, model: str = "gpt-4o-2024-08-06", usage: bool = True,
                  done: bool = True) -> list[bytes]:
    head = {"id": "chatcmpl-fake2", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
    first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    frames = [sse({**head, "choices": [first]})]
    frames += [sse({**head, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}) for p in parts]
    frames.append(sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if usage:
        frames.append(sse({**head, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": len(parts),
                                                            "total_tokens": 12 + len(parts)}}))
    if done:
        frames.append(b"data: [DONE]\n\n")
    return frames


def anthropic_message(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_fake1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": content, "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }


def anthropic_events(blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]], stop_reason: str) -> list[bytes]:
    """``blocks``: (content_block_start block, its deltas) in order."""
    message = {**anthropic_message([], stop_reason), "stop_reason": None,
               "usage": {"input_tokens": 12, "output_tokens": 1}}
    frames = [sse({"type": "message_start", "message": message}, "message_start"), sse({"type": "ping"}, "ping")]
    for index, (block, deltas) in enumerate(blocks):
        frames.append(sse({"type": "content_block_start", "index": index, "content_block": block},
                          "content_block_start"))
        frames += [sse({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta")
                   for d in deltas]
        frames.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    frames.append(sse({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                       "usage": {"output_tokens": 3}}, "message_delta"))
    frames.append(sse({"type": "message_stop"}, "message_stop"))
    return frames


def anthropic_text_stream(parts: list[str]) -> list[bytes]:
    deltas = [{"type": "text_delta", "text": part} for part in parts]
    return anthropic_events([({"type": "text", "text": ""}, deltas)], "end_turn")
