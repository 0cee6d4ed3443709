"""The ``chatCompletions`` span: one lifecycle object per upstream attempt owns it.

Request attributes are set when the span starts (so samplers see them), response attributes
when it stops, ``error.type`` when it fails. Prompts and completions are indexed
(``gen_ai.prompt.{i}.*``, ``gen_ai.completion.{i}.*``) and each prompt message is also an event
named by its role. The tools the request offers are ``gen_ai.tool.definitions``
(:func:`tool_definitions_attribute`, for the ``messages`` span too). With content capture off,
every attribute that carries text is left out.
Every string attribute, of the span and of its events, passes the configuration's redaction
(``otel_gateway.redaction``): a credential pasted into a prompt, a tool call's arguments or a
completion reads ``[REDACTED]``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from opentelemetry.trace import Span, SpanKind, Tracer

from ..redaction import Redactor
from ._operation import OperationInvocation

SPAN_NAME = "chatCompletions"
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()
_SEPARATOR = "\x00"
"""Joins attribute strings for one redaction test: no secret holds it, no key-shaped word spans it."""

_REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}
TOOL_DEFINITIONS = "gen_ai.tool.definitions"
_EVENTS = {"system": "gen_ai.system.message", "developer": "gen_ai.system.message", "user": "gen_ai.user.message",
           "assistant": "gen_ai.assistant.message", "tool": "gen_ai.tool.message"}


class ChatInvocation:
    """Owns one ``chatCompletions`` span from request to the last chunk; ``stop``, ``fail`` and
    ``cancel`` are idempotent, the first one wins."""

    __slots__ = ("_capture", "_first_chunk", "_lifecycle", "_redact", "_started")

    def __init__(self, span: Span, capture_content: bool, redactor: Redactor) -> None:
        self._lifecycle = OperationInvocation(span)
        self._capture = capture_content
        self._redact = redactor
        self._started = time.monotonic()
        self._first_chunk: float | None = None

    @property
    def span(self) -> Span:
        return self._lifecycle.span

    @classmethod
    def start(
        cls,
        tracer: Tracer,
        *,
        params: Mapping[str, Any],
        requested_model: str,
        provider: str,
        server: tuple[str, int],
        capture_content: bool,
        redactor: Redactor,
    ) -> ChatInvocation:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": provider,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": requested_model,
            "gen_ai.request.stream": bool(params.get("stream")),
            "server.address": server[0],
            "server.port": server[1],
        }
        for key, attribute in _REQUEST_PARAMS.items():
            value = params.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attributes[attribute] = value
        stop = params.get("stop")
        if stop:
            attributes["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else [str(s) for s in stop]
        if isinstance(params.get("n"), int) and params["n"] != 1:
            attributes["gen_ai.request.choice.count"] = params["n"]
        messages = params.get("messages")
        if not isinstance(messages, Sequence):
            messages = ()
        # One attributes dict at the start: the SDK validates and stores them in one pass.
        attributes.update(_prompt_attributes(messages, capture_content))
        if capture_content:
            definitions = tool_definitions(params.get("tools"))
            if definitions is not None:
                attributes[TOOL_DEFINITIONS] = definitions
        clean = not redactor.holds_secret(_joined(attributes))
        if not clean:
            _redact(redactor, attributes)
        span = tracer.start_span(SPAN_NAME, kind=SpanKind.CLIENT, attributes=attributes)
        if span.is_recording():
            events = [_message_event(m, provider, capture_content) for m in messages if isinstance(m, Mapping)]
            # The events repeat what the prompt attributes hold, but for the tool calls' JSON.
            if not clean or redactor.holds_secret(_SEPARATOR.join(e.get("tool_calls", "") for _, e in events)):
                for _, event in events:
                    _redact(redactor, event)
            for name, event in events:
                span.add_event(name, event)
        return cls(span, capture_content, redactor)

    def current(self) -> contextlib.AbstractContextManager[None]:
        """Makes the span the parent of the upstream HTTP call's CLIENT span."""
        return self._lifecycle.current()

    def first_chunk(self) -> None:
        if self._first_chunk is None:
            self._first_chunk = time.monotonic()
            if self.span.is_recording():
                self.span.set_attribute("gen_ai.response.time_to_first_chunk", self._first_chunk - self._started)

    def stop(self, completion: Mapping[str, Any]) -> None:
        self._lifecycle.stop(self._response(completion))

    def fail(self, error: BaseException, partial: Mapping[str, Any] | None = None) -> None:
        """``partial``: what a stream that failed after it started had delivered."""
        self._lifecycle.fail(error, None if partial is None else self._response(partial))

    def cancel(self, partial: Mapping[str, Any] | None = None) -> None:
        """The client went away mid-stream: record what had arrived and end the span."""
        self._lifecycle.cancel(None if partial is None else self._response(partial))

    def _response(self, completion: Mapping[str, Any]) -> Callable[[], dict[str, Any]]:
        def attributes() -> dict[str, Any]:
            out = _response_attributes(completion, self._capture)
            if self._redact.holds_secret(_joined(out)):
                _redact(self._redact, out)
            return out

        return attributes


class NullInvocation:
    """Stands in for :class:`ChatInvocation` when tracing is off: no SDK work at all."""

    __slots__ = ()

    def current(self) -> contextlib.AbstractContextManager[None]:
        return _NO_SPAN

    def first_chunk(self) -> None:
        pass

    def stop(self, completion: Mapping[str, Any]) -> None:
        pass

    def fail(self, error: BaseException, partial: Mapping[str, Any] | None = None) -> None:
        pass

    def cancel(self, partial: Mapping[str, Any] | None = None) -> None:
        pass


def tool_definitions(tools: Any) -> str | None:
    """The tools a request offers as the JSON text of ``gen_ai.tool.definitions``, in the GenAI
    semantic conventions' form: a list of ``{"type": "function", "name", "description",
    "parameters"}`` (the last two when given). OpenAI's chat tools (``{"type": "function",
    "function": {...}}``) and Anthropic's (``{"name", "description", "input_schema"}``) both take it;
    any other tool (Anthropic's server tools, say) is kept as it came. ``None`` when none is offered."""
    if not isinstance(tools, Sequence) or isinstance(tools, (str, bytes)) or not tools:
        return None
    return orjson.dumps([_tool_definition(tool) for tool in tools]).decode()


def tool_definitions_attribute(tools: Any, redactor: Redactor, *, capture_content: bool) -> dict[str, str]:
    """``{"gen_ai.tool.definitions": ...}`` for a span's attributes, redacted by the one rule; empty
    with content capture off or no tools offered."""
    definitions = tool_definitions(tools) if capture_content else None
    return {} if definitions is None else {TOOL_DEFINITIONS: redactor.text(definitions)}


def _tool_definition(tool: Any) -> Any:
    if not isinstance(tool, Mapping):
        return tool
    function = tool.get("function")
    if tool.get("type") == "function" and isinstance(function, Mapping):
        source, schema = function, function.get("parameters")
    elif "input_schema" in tool and tool.get("type") in (None, "custom"):
        source, schema = tool, tool.get("input_schema")
    else:
        return tool
    definition: dict[str, Any] = {"type": "function", "name": source.get("name")}
    if source.get("description") is not None:
        definition["description"] = source["description"]
    if schema is not None:
        definition["parameters"] = schema
    return definition


def _joined(attributes: Mapping[str, Any]) -> str:
    """Every string of ``attributes``, in lists too, for one redaction test: most spans hold
    nothing to redact, and one scan of their joined text is cheaper than one per string."""
    strings = []
    for value in attributes.values():
        if type(value) is str:
            strings.append(value)
        elif type(value) is list:
            strings.extend(v for v in value if type(v) is str)
    return _SEPARATOR.join(strings)


def _redact(redactor: Redactor, attributes: dict[str, Any]) -> None:
    """Redacts every string of ``attributes`` in place, in lists too."""
    text = redactor.text
    for key, value in attributes.items():
        if type(value) is str:
            attributes[key] = text(value)
        elif type(value) is list:
            attributes[key] = [text(v) if type(v) is str else v for v in value]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    return orjson.dumps(content).decode()


def _tool_call_attributes(out: dict[str, Any], prefix: str, calls: Any, capture: bool) -> None:
    for j, call in enumerate(calls if isinstance(calls, Sequence) else ()):
        if not isinstance(call, Mapping):
            continue
        function = call.get("function") or {}
        out[f"{prefix}.tool_calls.{j}.id"] = str(call.get("id") or "")
        out[f"{prefix}.tool_calls.{j}.name"] = str(function.get("name") or "")
        if capture:
            out[f"{prefix}.tool_calls.{j}.arguments"] = str(function.get("arguments") or "")


def _prompt_attributes(messages: Sequence[Any], capture: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        prefix = f"gen_ai.prompt.{i}"
        out[f"{prefix}.role"] = str(message.get("role", "unknown"))
        if capture and message.get("content") is not None:
            out[f"{prefix}.content"] = _content_text(message["content"])
        if message.get("tool_calls"):
            _tool_call_attributes(out, prefix, message["tool_calls"], capture)
        if message.get("tool_call_id"):
            out[f"{prefix}.tool_call_id"] = str(message["tool_call_id"])
    return out


def _message_event(message: Mapping[str, Any], provider: str, capture: bool) -> tuple[str, dict[str, Any]]:
    role = str(message.get("role", "unknown"))
    attributes: dict[str, Any] = {"gen_ai.system": provider, "role": role}
    if capture and message.get("content") is not None:
        attributes["content"] = _content_text(message["content"])
    if message.get("tool_call_id"):
        attributes["id"] = str(message["tool_call_id"])
    if capture and message.get("tool_calls"):
        attributes["tool_calls"] = _content_text(message["tool_calls"])
    return _EVENTS.get(role, "gen_ai.unknown.message"), attributes


def _response_attributes(completion: Mapping[str, Any], capture: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if completion.get("id"):
        out["gen_ai.response.id"] = str(completion["id"])
    if completion.get("model"):
        out["gen_ai.response.model"] = str(completion["model"])
    reasons = []
    for choice in completion.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        prefix = f"gen_ai.completion.{index}"
        out[f"{prefix}.role"] = str(message.get("role") or "assistant")
        if capture and message.get("content") is not None:
            out[f"{prefix}.content"] = _content_text(message["content"])
        reason = choice.get("finish_reason")
        if reason:
            out[f"{prefix}.finish_reason"] = str(reason)
            reasons.append(str(reason))
        if message.get("tool_calls"):
            _tool_call_attributes(out, prefix, message["tool_calls"], capture)
    if reasons:
        out["gen_ai.response.finish_reasons"] = reasons
    usage = completion.get("usage") or {}
    if isinstance(usage.get("prompt_tokens"), int):
        out["gen_ai.usage.input_tokens"] = usage["prompt_tokens"]
    if isinstance(usage.get("completion_tokens"), int):
        out["gen_ai.usage.output_tokens"] = usage["completion_tokens"]
    return out
