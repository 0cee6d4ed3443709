"""Shared pieces of the rate-limit tests: calls, a settable clock, a scripted next layer, streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from otel_gateway.calls import ChatCall, ChunkStream, Completion, RequestContext
from otel_gateway.config import RateLimitDocument
from otel_gateway.identity import Identity

ALICE = Identity("user:alice", "acme")
BOB = Identity("user:bob", "acme")


def rules_doc(*rules: Mapping[str, Any], **options: Any) -> RateLimitDocument:
    return RateLimitDocument.model_validate({"type": "gateway-rate-limiting-config", "rules": list(rules), **options})


def chat_call(
    model: str = "demo/echo",
    *,
    identity: Identity = ALICE,
    metadata: Mapping[str, str] | None = None,
    content: str = "hi",
    **params: Any,
) -> ChatCall:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **params}
    context = RequestContext(request_id="req-1", identity=identity, metadata=dict(metadata or {}))
    return ChatCall(body=body, model=model, context=context)


class Clock:
    """Seconds, set by the test."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def completion(total_tokens: int = 10) -> Completion:
    usage = {"prompt_tokens": total_tokens // 2, "completion_tokens": total_tokens - total_tokens // 2,
             "total_tokens": total_tokens}
    return Completion({"id": "c1", "object": "chat.completion", "choices": [], "usage": usage})


class Stream:
    """A ``ChunkStream`` over fixed chunks; ``assembler`` mimics ``UpstreamStream``'s when given."""

    def __init__(self, chunks: list[dict[str, Any]], assembler_usage: dict[str, Any] | None = None) -> None:
        self.chunks = chunks
        self.closed = False
        if assembler_usage is not None:
            self.assembler = SimpleNamespace(usage=assembler_usage)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def stream_chunks(total_tokens: int | None) -> list[dict[str, Any]]:
    head = {"id": "s1", "object": "chat.completion.chunk"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": None}]},
              {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    if total_tokens is not None:
        chunks.append({**head, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": total_tokens - 1,
                                                       "total_tokens": total_tokens}})
    return chunks


@dataclass
class Next:
    """The next layer: answers with ``result`` (a factory) or raises ``error``; records every call."""

    result: Any = field(default_factory=lambda: completion)
    error: BaseException | None = None
    calls: list[ChatCall] = field(default_factory=list)

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        self.calls.append(call)
        if self.error is not None:
            raise self.error
        result: Completion | ChunkStream = self.result()
        return result
