"""Anthropic's Messages API on the one chain: its stream events passed on as dicts, the message
they add up to (for the log, the span and the usage that settles token limits), and its span."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ..errors import GatewayError, UpstreamStreamError
from ..providers.anthropic import openai_usage
from ..sse import ServerSentEvent
from ..telemetry import OperationInvocation

__all__ = ["MessageAssembler", "MessagesInvocation", "MessagesTranslator", "message_usage", "response_attributes"]


class MessageAssembler:
    """The message a Messages API stream adds up to, and its events, for the log and the span.
    Events it cannot make sense of are kept but not assembled: the client got them as they were."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None
        self.error: Any = None
        """The upstream's ``error`` event, if it sent one."""
        self.finished = False
        self._partial_json: dict[int, str] = {}

    # The chunk-stream interface (``chat._stream.UpstreamStream`` drives it).

    @property
    def chunk_count(self) -> int:
        return len(self.events)

    @property
    def complete(self) -> bool:
        return self.finished and self.error is None

    @property
    def usage(self) -> dict[str, Any] | None:
        """OpenAI-shaped usage (``prompt_tokens``...), for token limits and health."""
        return message_usage(self.message)

    def result(self) -> dict[str, Any]:
        return self.message or {}

    def add(self, data: dict[str, Any]) -> None:
        self.events.append(data)
        with contextlib.suppress(KeyError, TypeError, IndexError, AttributeError, ValueError):
            self._add(data)

    def failure(self, provider: str) -> GatewayError | None:
        if self.error is not None:
            message = self.error.get("message") if isinstance(self.error, dict) else self.error
            return UpstreamStreamError(f"{provider}: the upstream failed mid-stream: {message}", provider=provider)
        if not self.finished:
            return UpstreamStreamError(f"{provider}: the upstream ended the stream before message_stop",
                                       provider=provider)
        return None

    def _add(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_start":
            self.message = {**data["message"], "content": list(data["message"].get("content") or [])}
        elif kind == "error":
            self.error = data.get("error")
        elif kind == "message_stop":
            self.finished = True
        elif self.message is None:
            return
        elif kind == "content_block_start":
            self.message["content"].append(dict(data["content_block"]))
        elif kind == "content_block_delta":
            self._delta(data["index"], data["delta"])
        elif kind == "content_block_stop":
            partial = self._partial_json.pop(data["index"], None)
            if partial:
                self.message["content"][data["index"]]["input"] = orjson.loads(partial)
        elif kind == "message_delta":
            self.message.update(data.get("delta") or {})
            usage = {k: v for k, v in (data.get("usage") or {}).items() if v is not None}
            self.message["usage"] = {**(self.message.get("usage") or {}), **usage}

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self.message["content"][index] if self.message else {}
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta["text"]
        elif kind == "input_json_delta":
            self._partial_json[index] = self._partial_json.get(index, "") + delta["partial_json"]
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta["thinking"]
        elif kind == "signature_delta":
            block["signature"] = delta["signature"]
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta["citation"])


class MessagesTranslator:
    """Anthropic's events as they are: one dict per event (``event:`` is the dict's ``type``).
    The stream ends complete at ``message_stop``; after an ``error`` event (passed on, so the
    client sees the upstream's own) it fails with the upstream's message."""

    def __init__(self, assembler: MessageAssembler, provider: str) -> None:
        self._assembler = assembler
        self._provider = provider
        self.finished = False
        self._failed = False

    @property
    def incomplete(self) -> str:
        """Why the stream is not whole, when it ended without ``message_stop``."""
        failure = self._assembler.failure(self._provider)
        return failure.message if failure is not None else "the upstream ended the stream before message_stop"

    def translate(self, event: ServerSentEvent) -> list[dict[str, Any]]:
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(data, dict):
            return []
        kind = data.get("type")
        self._failed = self._failed or kind == "error"
        self.finished = self.finished or (kind == "message_stop" and not self._failed)
        return [data]


class MessagesInvocation:
    """The ``messages`` span, driven like a chat invocation (``stop`` with the whole message)."""

    __slots__ = ("_operation",)

    def __init__(self, operation: OperationInvocation) -> None:
        self._operation = operation

    def current(self) -> contextlib.AbstractContextManager[None]:
        return self._operation.current()

    def first_chunk(self) -> None:
        pass

    def stop(self, message: Mapping[str, Any]) -> None:
        self._operation.stop(response_attributes(message))

    def fail(self, error: BaseException, partial: Mapping[str, Any] | None = None) -> None:
        self._operation.fail(error)

    def cancel(self, partial: Mapping[str, Any] | None = None) -> None:
        self._operation.cancel()


def message_usage(message: Mapping[str, Any] | None) -> dict[str, Any] | None:
    usage = message.get("usage") if message else None
    return openai_usage(usage) if isinstance(usage, dict) else None


def response_attributes(message: Mapping[str, Any]) -> Callable[[], dict[str, Any]]:
    def attributes() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, attribute in (("id", "gen_ai.response.id"), ("model", "gen_ai.response.model")):
            if isinstance(message.get(key), str):
                out[attribute] = message[key]
        if isinstance(message.get("stop_reason"), str):
            out["gen_ai.response.finish_reasons"] = [message["stop_reason"]]
        usage = message_usage(message)
        if usage is not None:
            out["gen_ai.usage.input_tokens"] = usage["prompt_tokens"]
            out["gen_ai.usage.output_tokens"] = usage["completion_tokens"]
        return out

    return attributes
