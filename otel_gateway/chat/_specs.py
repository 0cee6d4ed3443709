"""Every endpoint that calls a model, as data: one :class:`EndpointSpec` per call kind.

The one chain (rate limit -> cache -> load balancing -> fallback -> retries -> the provider
attempt) is the same for all of them; what differs is here: the span and its attributes, how
the upstream request is built for a provider, what a JSON answer and a stream become, whether
the response cache applies, and how a call's tokens are estimated against token limits. A new
endpoint is a new entry in :data:`SPECS`, not a new path.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from opentelemetry.trace import Tracer

from ..calls import ChatCall, Completion, Kind
from ..errors import InvalidRequestError
from ..providers import ProviderAdapter
from ..redaction import Redactor
from ..telemetry import ChatInvocation, NullInvocation, OperationInvocation
from ._messages import MessageAssembler, MessagesInvocation, MessagesTranslator, message_usage
from ._stream import UpstreamStream

if TYPE_CHECKING:
    from ..telemetry import Invocation

__all__ = ["SPECS", "EndpointSpec", "Tracing", "spec_of"]

_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class Tracing:
    """What starting an attempt's span needs besides the call."""

    tracer: Tracer | None
    capture_content: bool
    redactor: Redactor


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    kind: Kind
    span: str
    """The attempt's CLIENT span name."""
    check: Callable[[ProviderAdapter, ChatCall], None]
    """Refuses (400) a provider that cannot serve this endpoint, before any span or request."""
    build: Callable[[ProviderAdapter, ChatCall, str], httpx.Request]
    start: Callable[[Tracing, ChatCall, ProviderAdapter], Any]
    """The attempt's invocation: ``current``/``first_chunk``/``stop(data)``/``fail``/``cancel``."""
    answer: Callable[[ProviderAdapter, ChatCall, dict[str, Any], bytes, httpx.Response], Completion]
    stream: Callable[[httpx.Response, ProviderAdapter, ChatCall, Any, Redactor], UpstreamStream] | None
    """``None``: this endpoint never streams."""
    cacheable: bool
    complete: Callable[[Mapping[str, Any]], bool]
    """Whether a JSON answer is whole enough to store in the response cache."""
    usage: Callable[[Mapping[str, Any]], Mapping[str, Any] | None]
    """A JSON answer's usage in OpenAI's shape (``prompt_tokens``, ``completion_tokens``, ``total_tokens``)."""
    prompt_tokens: Callable[[ChatCall], int]
    """The estimated input tokens, reserved against token limits until the answer's usage settles them."""
    output_tokens: Callable[[ChatCall], int | None]
    """The output asked for (``max_tokens``...); ``None``: the rate-limit document's default. 0: no output."""


def spec_of(call: ChatCall) -> EndpointSpec:
    return SPECS[call.kind]


# -- chat ------------------------------------------------------------------------------------------

def _no_check(adapter: ProviderAdapter, call: ChatCall) -> None:
    pass


def _chat_start(tracing: Tracing, call: ChatCall, adapter: ProviderAdapter) -> Invocation:
    if tracing.tracer is None:
        return NullInvocation()
    return ChatInvocation.start(
        tracing.tracer, params=call.params(), requested_model=call.requested_model,
        provider=adapter.gen_ai_provider, server=(adapter.server_address, adapter.server_port),
        capture_content=tracing.capture_content, redactor=tracing.redactor,
    )


def _chat_answer(
    adapter: ProviderAdapter, call: ChatCall, data: dict[str, Any], raw: bytes, response: httpx.Response
) -> Completion:
    return Completion(adapter.translate_response(data, call))


def _chat_stream(
    response: httpx.Response, adapter: ProviderAdapter, call: ChatCall, invocation: Any, redactor: Redactor
) -> UpstreamStream:
    return UpstreamStream(response, adapter.stream_translator(call), invocation, include_usage=call.include_usage,
                          scrub=redactor.text)


def _chat_complete(data: Mapping[str, Any]) -> bool:
    choices = data.get("choices")
    return isinstance(choices, list) and bool(choices) and all(
        isinstance(c, Mapping) and bool(c.get("finish_reason")) for c in choices)


def _own_usage(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    usage = data.get("usage")
    return usage if isinstance(usage, Mapping) else None


def _chat_prompt_tokens(call: ChatCall) -> int:
    """A quarter token per character of the prompt text (plus a few per message) and its tools."""
    chars, count = _messages_chars(call.body.get("messages"))
    tools = call.param("tools")
    if tools:
        chars += len(orjson.dumps(tools))
    return math.ceil(chars / _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE * count


def _chat_output_tokens(call: ChatCall) -> int | None:
    output = _positive_int(call.param("max_completion_tokens")) or _positive_int(call.param("max_tokens"))
    return None if output is None else output * (_positive_int(call.param("n")) or 1)


def _messages_chars(messages: Any) -> tuple[int, int]:
    chars = count = 0
    for message in messages if isinstance(messages, Sequence) else ():
        if isinstance(message, Mapping):
            count += 1
            chars += _text_length(message.get("content"))
            for tool_call in message.get("tool_calls") or ():
                if isinstance(tool_call, Mapping):
                    chars += len(orjson.dumps(tool_call.get("function")))
    return chars, count


# -- messages (Anthropic's Messages API) -------------------------------------------------------------

_MESSAGES_PARAMS = {"max_tokens": "gen_ai.request.max_tokens", "temperature": "gen_ai.request.temperature",
                    "top_p": "gen_ai.request.top_p", "top_k": "gen_ai.request.top_k"}
_MESSAGES_RELAYED = ("request-id",)


def _speaks_messages(adapter: ProviderAdapter) -> bool:
    return "messages" in adapter.operations


def _messages_check(adapter: ProviderAdapter, call: ChatCall) -> None:
    if _speaks_messages(adapter):
        return
    if call.via is None:  # a model named directly
        raise adapter.unsupported("/v1/messages")
    raise InvalidRequestError(
        f"{call.via} sends /v1/messages to '{call.model}', a provider of type {adapter.config.type}; "
        "/v1/messages is served by anthropic providers only.", param="model", code="unsupported_endpoint",
    )


def _messages_build(adapter: ProviderAdapter, call: ChatCall, upstream_model: str) -> httpx.Request:
    return adapter.build_messages_request(call.params(), upstream_model, call.context.headers)


def _messages_start(tracing: Tracing, call: ChatCall, adapter: ProviderAdapter) -> MessagesInvocation:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": adapter.gen_ai_provider,
        "gen_ai.request.model": call.requested_model,
        "gen_ai.request.stream": call.stream,
        "server.address": adapter.server_address,
        "server.port": adapter.server_port,
    }
    for key, attribute in _MESSAGES_PARAMS.items():
        value = call.param(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[attribute] = value
    return MessagesInvocation(OperationInvocation.start(tracing.tracer, "messages", attributes))


def _messages_answer(
    adapter: ProviderAdapter, call: ChatCall, data: dict[str, Any], raw: bytes, response: httpx.Response
) -> Completion:
    return Completion(data, _relayed(response), raw)


def _relayed(response: httpx.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in _MESSAGES_RELAYED if name in response.headers}


def _messages_stream(
    response: httpx.Response, adapter: ProviderAdapter, call: ChatCall, invocation: Any, redactor: Redactor
) -> UpstreamStream:
    assembler = MessageAssembler()
    call.context.response_headers.update(_relayed(response))  # the attempt that answers: its request-id
    return UpstreamStream(response, MessagesTranslator(assembler, adapter.name), invocation, include_usage=True,
                          scrub=redactor.text, assembler=assembler)


def _messages_usage(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return message_usage(data)


def _messages_prompt_tokens(call: ChatCall) -> int:
    """``system`` and ``messages`` (text blocks), and the tools, a quarter token per character."""
    chars, count = _messages_chars(call.body.get("messages"))
    chars += _text_length(call.param("system"))
    tools = call.param("tools")
    if tools:
        chars += len(orjson.dumps(tools))
    return math.ceil(chars / _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE * count


def _messages_output_tokens(call: ChatCall) -> int | None:
    return _positive_int(call.param("max_tokens"))


# -- embeddings and moderations ----------------------------------------------------------------------

def _operation_check(adapter: ProviderAdapter, call: ChatCall) -> None:
    if call.kind not in adapter.operations:
        raise adapter.unsupported(call.path)


def _operation_build(adapter: ProviderAdapter, call: ChatCall, upstream_model: str) -> httpx.Request:
    return adapter.build_operation_request(call.kind, call.params(), upstream_model, call.context.headers)


class _OperationSpan:
    """The ``embeddings``/``moderations`` span, driven like a chat invocation."""

    __slots__ = ("_attributes", "_operation")

    def __init__(self, operation: OperationInvocation, attributes: Callable[[dict[str, Any]], dict[str, Any]]):
        self._operation = operation
        self._attributes = attributes

    def current(self) -> Any:
        return self._operation.current()

    def stop(self, data: dict[str, Any]) -> None:
        self._operation.stop(lambda: self._attributes(data))

    def fail(self, error: BaseException, partial: Any = None) -> None:
        self._operation.fail(error)

    def cancel(self, partial: Any = None) -> None:
        self._operation.cancel()


def _operation_start(tracing: Tracing, call: ChatCall, adapter: ProviderAdapter) -> _OperationSpan:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": call.kind,
        "gen_ai.provider.name": adapter.gen_ai_provider,
        "gen_ai.request.model": call.requested_model,
        "server.address": adapter.server_address,
        "server.port": adapter.server_port,
    }
    encoding = call.param("encoding_format")
    if call.kind == "embeddings" and isinstance(encoding, str):
        attributes["gen_ai.request.encoding_formats"] = [encoding]
    response = _embedding_attributes if call.kind == "embeddings" else _common_attributes
    return _OperationSpan(OperationInvocation.start(tracing.tracer, call.kind, attributes), response)


def _operation_answer(
    adapter: ProviderAdapter, call: ChatCall, data: dict[str, Any], raw: bytes, response: httpx.Response
) -> Completion:
    return Completion(data, raw=raw)


def _embedding_attributes(data: dict[str, Any]) -> dict[str, Any]:
    out = _common_attributes(data)
    usage = data.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        out["gen_ai.usage.input_tokens"] = usage["prompt_tokens"]
    items = data.get("data")
    first = items[0].get("embedding") if isinstance(items, list) and items and isinstance(items[0], dict) else None
    if isinstance(first, list):
        out["gen_ai.embeddings.dimension.count"] = len(first)
    elif isinstance(first, str):  # base64 of little-endian float32s
        out["gen_ai.embeddings.dimension.count"] = len(base64.b64decode(first)) // 4
    return out


def _common_attributes(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(data.get("id"), str):
        out["gen_ai.response.id"] = data["id"]
    if isinstance(data.get("model"), str):
        out["gen_ai.response.model"] = data["model"]
    return out


def _listed(field: str) -> Callable[[Mapping[str, Any]], bool]:
    def complete(data: Mapping[str, Any]) -> bool:
        items = data.get(field)
        return isinstance(items, list) and bool(items)

    return complete


def _input_tokens(call: ChatCall) -> int:
    """``input``: a quarter token per character of its text, one per token id given as numbers."""
    value = call.param("input")
    items = value if isinstance(value, list) else [value]
    count = 0
    for item in items:
        if isinstance(item, str):
            count += math.ceil(len(item) / _CHARS_PER_TOKEN)
        elif isinstance(item, list):
            count += len(item)
        elif isinstance(item, int):
            count += 1
        elif isinstance(item, Mapping):  # moderation inputs: {"type": "text", "text": ...}
            count += math.ceil(len(str(item.get("text") or "")) / _CHARS_PER_TOKEN)
    return count


def _no_output(call: ChatCall) -> int:
    return 0


# -- shared ----------------------------------------------------------------------------------------

def _text_length(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, Sequence):
        return sum(len(str(part.get("text") or "")) for part in content if isinstance(part, Mapping))
    return 0


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _build_chat(adapter: ProviderAdapter, call: ChatCall, upstream_model: str) -> httpx.Request:
    return adapter.build_request(call, upstream_model)


SPECS: Mapping[Kind, EndpointSpec] = MappingProxyType({
    "chat": EndpointSpec(
        "chat", "chatCompletions", _no_check, _build_chat, _chat_start, _chat_answer, _chat_stream,
        cacheable=True, complete=_chat_complete, usage=_own_usage, prompt_tokens=_chat_prompt_tokens,
        output_tokens=_chat_output_tokens,
    ),
    "messages": EndpointSpec(
        "messages", "messages", _messages_check, _messages_build, _messages_start, _messages_answer,
        _messages_stream, cacheable=False, complete=lambda data: False, usage=_messages_usage,
        prompt_tokens=_messages_prompt_tokens, output_tokens=_messages_output_tokens,
    ),
    "embeddings": EndpointSpec(
        "embeddings", "embeddings", _operation_check, _operation_build, _operation_start, _operation_answer, None,
        cacheable=True, complete=_listed("data"), usage=_own_usage, prompt_tokens=_input_tokens,
        output_tokens=_no_output,
    ),
    "moderations": EndpointSpec(
        "moderations", "moderations", _operation_check, _operation_build, _operation_start, _operation_answer,
        None, cacheable=True, complete=_listed("results"), usage=_own_usage, prompt_tokens=_input_tokens,
        output_tokens=_no_output,
    ),
})
