"""Anthropic's Messages API, spoken to by translating OpenAI chat completions both ways.

Anthropic keeps the system prompt out of the messages, wants user and assistant turns to
alternate, requires ``max_tokens``, and sends tool results as user content. OpenAI fields
with no Anthropic counterpart (``response_format``, ``seed``, ``logprobs``...) are dropped.
Clients speaking the Messages API themselves (``POST /v1/messages``) are passed through with
only the model replaced; Anthropic paths are under ``/v1`` of its base URL.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import orjson

from ..errors import InvalidRequestError, UpstreamStreamError
from ..sse import ServerSentEvent
from ._base import ProviderAdapter, StreamTranslator

if TYPE_CHECKING:
    from ..calls import ChatCall

DEFAULT_MAX_TOKENS = 4096

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}
_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")
"""Headers of a Messages API client passed upstream as they are."""


class AnthropicAdapter(ProviderAdapter):
    operations: ClassVar[frozenset[str]] = frozenset({"messages"})
    gen_ai_provider = "anthropic"

    def build_request(self, call: ChatCall, upstream_model: str) -> httpx.Request:
        headers = {"x-api-key": self.config.secret(), "anthropic-version": self.config.anthropic_version}
        return self._post(self.endpoint_url("v1", "messages"), messages_body(call.params(), upstream_model), headers)

    def build_messages_request(
        self, body: Mapping[str, Any], upstream_model: str, client_headers: Mapping[str, str]
    ) -> httpx.Request:
        headers = {**self.proxy_default_headers(), **self.auth_headers()}
        for name in _CLIENT_HEADERS:
            if name in client_headers:
                headers[name] = client_headers[name]
        return self._post(self.endpoint_url("v1", "messages"), {**body, "model": upstream_model}, headers)

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self.config.secret()}

    def proxy_default_headers(self) -> dict[str, str]:
        return {"anthropic-version": self.config.anthropic_version}

    def proxy_path(self, path: str) -> str:
        return path

    def translate_response(self, data: dict[str, Any], call: ChatCall) -> dict[str, Any]:
        texts: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for block in data.get("content") or ():
            if block.get("type") == "text":
                texts.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                arguments = orjson.dumps(block.get("input") or {}).decode()
                function = {"name": block.get("name"), "arguments": arguments}
                tool_calls.append({"id": block.get("id"), "type": "function", "function": function})
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {
            "id": data.get("id"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": data.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(data.get("stop_reason"))}],
            "usage": openai_usage(data.get("usage") or {}),
        }

    def stream_translator(self, call: ChatCall) -> StreamTranslator:
        return AnthropicStreamTranslator()


def messages_body(params: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages API body for OpenAI chat ``params``."""
    n = params.get("n")
    if isinstance(n, int) and n > 1:
        raise InvalidRequestError("Anthropic models give one choice per request; n must be 1", param="n")
    system, messages = _messages(params.get("messages"))
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": _max_tokens(params)}
    if system:
        body["system"] = system
    for name in ("temperature", "top_p", "top_k"):
        if params.get(name) is not None:
            body[name] = params[name]
    stop = params.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if params.get("user"):
        body["metadata"] = {"user_id": params["user"]}
    tools = params.get("tools")
    if tools:
        body["tools"] = [_tool(tool, index) for index, tool in enumerate(tools)]
        choice = _tool_choice(params.get("tool_choice"), params.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    if params.get("stream"):
        body["stream"] = True
    return body


def _max_tokens(params: dict[str, Any]) -> Any:
    for name in ("max_completion_tokens", "max_tokens"):
        if params.get(name) is not None:
            return params[name]
    return DEFAULT_MAX_TOKENS


def _messages(messages: Any) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt and the alternating turns; same-role neighbours are merged."""
    if not isinstance(messages, list):
        raise InvalidRequestError("messages must be a list", param="messages")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content: str | list[dict[str, Any]]
        if role in ("system", "developer"):
            system.append(_text(message.get("content"), index))
            continue
        if role == "user":
            content = _content(message.get("content"), index)
        elif role == "assistant":
            content = _assistant_content(message, index)
        elif role == "tool":
            role, content = "user", [_tool_result(message, index)]
        else:
            raise InvalidRequestError(f"messages[{index}] has a role Anthropic cannot take: {role!r}", param="messages")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = _blocks(turns[-1]["content"]) + _blocks(content)
        else:
            turns.append({"role": role, "content": content})
    return "\n\n".join(system), turns


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _text(content: Any, index: int) -> str:
    """Content that must be plain text (system prompt, tool result)."""
    if content is None or isinstance(content, str):
        return content or ""
    blocks = _parts(content, index)
    if any(block["type"] != "text" for block in blocks):
        raise InvalidRequestError(f"messages[{index}] may only hold text", param="messages")
    return "\n\n".join(block["text"] for block in blocks)


def _content(content: Any, index: int) -> str | list[dict[str, Any]]:
    return content if isinstance(content, str) else _parts(content, index)


def _parts(content: Any, index: int) -> list[dict[str, Any]]:
    """OpenAI content parts as Anthropic content blocks."""
    if not isinstance(content, list):
        raise InvalidRequestError(f"messages[{index}].content must be a string or a list of parts", param="messages")
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            blocks.append({"type": "image", "source": _image_source(url, index)})
        else:
            raise InvalidRequestError(
                f"messages[{index}] has a content part Anthropic cannot take: {kind!r}", param="messages"
            )
    return blocks


def _image_source(url: Any, index: int) -> dict[str, Any]:
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    if isinstance(url, str) and url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, *flags = header.split(";")
        if comma and media_type and "base64" in flags:
            return {"type": "base64", "media_type": media_type, "data": data}
    raise InvalidRequestError(
        f"messages[{index}] has an image that is neither a base64 data: URL nor an http(s) URL", param="messages"
    )


def _assistant_content(message: dict[str, Any], index: int) -> str | list[dict[str, Any]]:
    content = message.get("content")
    tool_calls = message.get("tool_calls") or []
    if not tool_calls:
        return _content(content or "", index)
    blocks = _blocks(_content(content, index)) if content else []
    return blocks + [_tool_use(call, index) for call in tool_calls]


def _tool_use(call: dict[str, Any], index: int) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        tool_input = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        tool_input = None
    if not isinstance(tool_input, dict):
        raise InvalidRequestError(
            f"messages[{index}]: the arguments of tool call {call.get('id')!r} are not a JSON object",
            param="messages",
        )
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": tool_input}


def _tool_result(message: dict[str, Any], index: int) -> dict[str, Any]:
    if not message.get("tool_call_id"):
        raise InvalidRequestError(f"messages[{index}] is a tool message without tool_call_id", param="messages")
    content = _text(message.get("content"), index)
    return {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": content}


def _tool(tool: Any, index: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not function.get("name"):
        raise InvalidRequestError(f"tools[{index}] is not a function tool with a name", param="tools")
    out: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: Any, parallel_tool_calls: Any) -> dict[str, Any] | None:
    mapped: dict[str, Any] | None
    if choice is None:
        mapped = {"type": "auto"} if parallel_tool_calls is False else None
    elif isinstance(choice, str) and choice in _TOOL_CHOICES:
        mapped = {"type": _TOOL_CHOICES[choice]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        mapped = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise InvalidRequestError(
            "tool_choice must be 'auto', 'required', 'none' or {'type': 'function', 'function': {'name': ...}}",
            param="tool_choice",
        )
    if mapped is not None and parallel_tool_calls is False and mapped["type"] != "none":
        mapped["disable_parallel_tool_use"] = True
    return mapped


def _finish_reason(stop_reason: Any) -> str:
    return _FINISH_REASONS.get(stop_reason, "stop")


def openai_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI usage; Anthropic counts cached input apart from ``input_tokens``, OpenAI within."""
    cache_read = usage.get("cache_read_input_tokens")
    prompt = (usage.get("input_tokens") or 0) + (usage.get("cache_creation_input_tokens") or 0) + (cache_read or 0)
    completion = usage.get("output_tokens") or 0
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    out["total_tokens"] = prompt + completion
    if cache_read is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cache_read}
    return out


class AnthropicStreamTranslator:
    """Anthropic's typed stream events as OpenAI chunks. Tool calls are numbered among
    themselves, not by Anthropic's block index (which counts text blocks too)."""

    __slots__ = ("_created", "_id", "_model", "_tool_indexes", "_usage", "finished")

    def __init__(self) -> None:
        self.finished = False
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._usage: dict[str, Any] = {}
        self._tool_indexes: dict[int, int] = {}

    def translate(self, event: ServerSentEvent) -> list[dict[str, Any]]:
        if not event.data:
            return []
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamStreamError(f"the upstream sent a malformed stream event: {event.data[:200]!r}") from exc
        if not isinstance(data, dict):
            raise UpstreamStreamError("the upstream sent a stream event that is not a JSON object")
        try:
            return self._translate(data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise UpstreamStreamError(f"the upstream sent a malformed {data.get('type')!r} stream event") from exc

    def _translate(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type")
        if kind == "message_start":
            message = data["message"]
            self._id, self._model = message["id"], message["model"]
            self._add_usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data["content_block"]
            if block["type"] != "tool_use":
                return []
            tool_index = self._tool_indexes[data["index"]] = len(self._tool_indexes)
            function = {"name": block["name"], "arguments": ""}
            call = {"index": tool_index, "id": block["id"], "type": "function", "function": function}
            return [self._chunk({"tool_calls": [call]})]
        if kind == "content_block_delta":
            return self._delta(data["index"], data["delta"])
        if kind == "message_delta":
            self._add_usage(data.get("usage"))
            return [self._chunk({}, _finish_reason(data["delta"].get("stop_reason")))]
        if kind == "message_stop":
            self.finished = True
            return [{**self._head(), "choices": [], "usage": openai_usage(self._usage)}]
        if kind == "error":
            error = data.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            raise UpstreamStreamError(f"the upstream failed mid-stream: {message}")
        return []  # ping, content_block_stop, and event types added later

    def _delta(self, block_index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        if delta["type"] == "text_delta":
            return [self._chunk({"content": delta["text"]})]
        if delta["type"] == "input_json_delta":
            tool_index = self._tool_indexes.get(block_index)
            if tool_index is None:
                raise UpstreamStreamError("the upstream streamed tool input for a block that is not a tool_use")
            if not delta["partial_json"]:
                return []
            call = {"index": tool_index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking, signature and citation deltas have no OpenAI counterpart

    def _add_usage(self, usage: Any) -> None:
        """Counts from ``message_start``, then the cumulative ones of ``message_delta``."""
        if isinstance(usage, dict):
            self._usage.update((key, value) for key, value in usage.items() if value is not None)

    def _head(self) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**self._head(), "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
