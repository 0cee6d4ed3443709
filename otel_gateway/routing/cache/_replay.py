"""A cached ``chat.completion`` told again as a stream of ``chat.completion.chunk``s.

Per choice, in order: a role chunk, the content in up to :data:`CONTENT_PIECES` chunks, the
refusal, one chunk per tool call (whole arguments), and the finish chunk; then, only if the client
asked (``stream_options.include_usage``), the usage chunk. Every chunk carries the cached answer's
``id``, ``created``, ``model`` (and ``system_fingerprint``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from ...chat import CompletionAssembler

CONTENT_PIECES = 4
_HEAD_KEYS = ("id", "object", "created", "model", "system_fingerprint")


def replay_chunks(completion: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every chunk of the replay, the usage chunk last when the completion has usage."""
    head = {key: completion[key] for key in _HEAD_KEYS if key in completion}
    head["object"] = "chat.completion.chunk"
    head = {key: head[key] for key in _HEAD_KEYS if key in head}
    out: list[dict[str, Any]] = []
    for position, choice in enumerate(completion.get("choices") or ()):
        index = choice.get("index", position)
        out += [{**head, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}
                for delta in _deltas(choice.get("message") or {})]
        out.append({**head, "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
    usage = completion.get("usage")
    if usage:
        out.append({**head, "choices": [], "usage": usage})
    return out


def _deltas(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    role = message.get("role") or "assistant"
    if not isinstance(content, str):
        deltas: list[dict[str, Any]] = [{"role": role, "content": content}]
    else:
        deltas = [{"role": role, "content": ""}] + [{"content": piece} for piece in _pieces(content)]
    if message.get("refusal"):
        deltas.append({"refusal": message["refusal"]})
    for index, tool_call in enumerate(message.get("tool_calls") or ()):
        deltas.append({"tool_calls": [{"index": index, **tool_call}]})
    return deltas


def _pieces(text: str) -> list[str]:
    size = max(1, -(-len(text) // CONTENT_PIECES))
    return [text[i:i + size] for i in range(0, len(text), size)]


class ReplayStream:
    """Implements ``ChunkStream`` over a cached completion. Like ``UpstreamStream`` it has an
    ``assembler`` that sees every chunk, the usage chunk included even when the client did not ask
    for it and it is held back."""

    def __init__(self, completion: Mapping[str, Any], *, include_usage: bool) -> None:
        self._chunks = replay_chunks(completion)
        self._include_usage = include_usage
        self._position = 0
        self.assembler = CompletionAssembler()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while self._position < len(self._chunks):
            chunk = self._chunks[self._position]
            self._position += 1
            self.assembler.add(chunk)
            if self._include_usage or "usage" not in chunk:
                return chunk
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._position = len(self._chunks)
