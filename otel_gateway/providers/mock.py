"""The built-in ``mock`` provider: no network, deterministic, speaks OpenAI's wire format.

It echoes the last message, streams it in N chunks, calls the first offered tool (on chat
completions, and on Anthropic's Messages API: ``_mock_messages``), answers
embeddings with unit vectors derived from a hash of each input and moderations by flagging the
categories an input names, and can be told to wait or fail, by its config (``mock:``) or per
request with ``x-mock-*`` headers:
``x-mock-delay-ms``, ``x-mock-status``, ``x-mock-stream-chunks``, ``x-mock-chunk-delay-ms``,
``x-mock-fail-after-chunks``. It sits behind an in-process httpx transport, so a mock request
runs through the same translation, streaming and tracing code as a real provider.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import orjson

from .._headers import MAX_MILLISECONDS, whole_number
from ..config import MockOptions, ProviderConfig
from ..sse import DONE, encode_data
from . import _mock_messages
from .openai import OpenAIAdapter

if TYPE_CHECKING:
    from ..calls import ChatCall

_JSON = {"content-type": "application/json"}
MAX_CHUNKS = 10_000
_HEADERS = {
    # header: (field of MockOptions, lowest, highest, unit)
    "x-mock-delay-ms": ("delay_ms", 0, MAX_MILLISECONDS, "milliseconds"),
    "x-mock-status": ("fail_status", 400, 599, ""),
    "x-mock-stream-chunks": ("stream_chunks", 1, MAX_CHUNKS, "chunks"),
    "x-mock-chunk-delay-ms": ("chunk_delay_ms", 0, MAX_MILLISECONDS, "milliseconds"),
    "x-mock-fail-after-chunks": ("fail_after_chunks", 0, MAX_CHUNKS, "chunks"),
}
"""Each header a whole number in its range (24 h for a delay, a status of 400-599, 1-10000 chunks to
split a stream into, as ``MockOptions`` has them); anything else is a 400 naming the header."""


DIMENSIONS = 8
"""Length of a mock embedding unless the request asks for ``dimensions``."""
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)


class MockAdapter(OpenAIAdapter):
    gen_ai_provider = "otel_gateway.mock"
    operations: ClassVar[frozenset[str]] = frozenset({"embeddings", "moderations", "messages"})

    @classmethod
    def own_transport(cls, config: ProviderConfig) -> httpx.AsyncBaseTransport:
        return MockTransport(config.mock)

    def build_request(self, call: ChatCall, upstream_model: str) -> httpx.Request:
        return _with_mock_headers(super().build_request(call, upstream_model), call.context.headers)

    def build_operation_request(
        self, operation: str, body: Mapping[str, Any], upstream_model: str, client_headers: Mapping[str, str]
    ) -> httpx.Request:
        request = super().build_operation_request(operation, body, upstream_model, client_headers)
        return _with_mock_headers(request, client_headers)

    def build_messages_request(
        self, body: Mapping[str, Any], upstream_model: str, client_headers: Mapping[str, str]
    ) -> httpx.Request:
        """Anthropic's Messages API, which the mock answers itself (``_mock_messages``)."""
        request = self._post(self.endpoint_url("messages"), {**body, "model": upstream_model}, {})
        return _with_mock_headers(request, client_headers)


def _with_mock_headers(request: httpx.Request, client_headers: Mapping[str, str]) -> httpx.Request:
    """The client's ``x-mock-*`` headers, checked (400 naming a bad one) and passed on as plain digits."""
    for header, value in _mock_headers(client_headers).items():
        request.headers[header] = str(value)
    return request


class MockTransport(httpx.AsyncBaseTransport):
    def __init__(self, options: MockOptions) -> None:
        self.options = options

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer_for = _ANSWERS.get(request.url.path) if request.method == "POST" else None
        if answer_for is None:
            return _error(404, f"the mock provider has no {request.method} {request.url.path}", request)
        options = _options(self.options, request.headers)  # a bad header: InvalidRequestError, 400
        body = orjson.loads(await request.aread())
        if options.delay_ms:
            await _wait(options.delay_ms / 1000, request)
        if options.fail_status:
            return _error(options.fail_status, f"mock provider failing on purpose with status {options.fail_status}",
                          request)
        try:
            answer = answer_for(body)
        except ValueError as exc:
            return _error(400, str(exc), request)
        if answer_for is _answer and body.get("stream"):
            frames = [encode_data(chunk) for chunk in _chunks(answer, options.stream_chunks, _wants_usage(body))]
            frames.append(DONE)
        elif answer_for is _mock_messages.message and body.get("stream"):
            frames = _mock_messages.message_events(answer, options.stream_chunks)
        else:
            return httpx.Response(200, content=orjson.dumps(answer), headers=_JSON, request=request)
        stream = _ChunkStream(frames, options.chunk_delay_ms / 1000, options.fail_after_chunks, request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream, request=request)


class _ChunkStream(httpx.AsyncByteStream):
    """SSE ``frames``, ``delay`` s apart, cut (a connection drop) after ``fail_after`` of them."""

    def __init__(self, frames: list[bytes], delay: float, fail_after: int | None, request: httpx.Request) -> None:
        self._frames, self._delay, self._fail_after, self._request = frames, delay, fail_after, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for sent, frame in enumerate(self._frames):
            if self._fail_after is not None and sent >= self._fail_after:
                raise httpx.RemoteProtocolError("mock provider cut the stream on purpose", request=self._request)
            if sent and self._delay:
                await _wait(self._delay, self._request)
            yield frame


async def _wait(seconds: float, request: httpx.Request) -> None:
    """Waits as a slow upstream would: longer than the provider's ``timeout_ms`` (the request's read
    timeout), it times out as a real connection does."""
    limit = request.extensions.get("timeout", {}).get("read")
    if limit is not None and seconds > limit:
        await asyncio.sleep(limit)
        raise httpx.ReadTimeout(f"the mock provider waited longer than {limit:g} s", request=request)
    await asyncio.sleep(seconds)


def _options(base: MockOptions, headers: Mapping[str, str]) -> MockOptions:
    updates = {_HEADERS[header][0]: value for header, value in _mock_headers(headers).items()}
    return base.model_copy(update=updates) if updates else base


def _mock_headers(headers: Mapping[str, str]) -> dict[str, int]:
    """The ``x-mock-*`` headers present, each a whole number in its range (else InvalidRequestError)."""
    values: dict[str, int] = {}
    for header, (_, low, high, unit) in _HEADERS.items():
        value = whole_number(headers, header, low=low, high=high, unit=unit)
        if value is not None:
            values[header] = value
    return values


def _error(status: int, message: str, request: httpx.Request) -> httpx.Response:
    """In OpenAI's error shape, or Anthropic's for the Messages API."""
    if request.url.path == _mock_messages.PATH:
        body = _mock_messages.error_body(status, message)
    else:
        kind = "rate_limit_error" if status == 429 else "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "code": f"mock_{status}", "param": None}}
    return httpx.Response(status, content=orjson.dumps(body), headers=_JSON)


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _tool_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    messages = body.get("messages") or [{}]
    if not tools or choice == "none" or messages[-1].get("role") == "tool":
        return None
    function = tools[0].get("function", {})
    if isinstance(choice, dict):
        wanted = choice.get("function", {}).get("name")
        function = next((t["function"] for t in tools if t.get("function", {}).get("name") == wanted), function)
    schema = function.get("parameters") or {}
    properties = schema.get("properties") or {}
    samples = {"string": "mock", "integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}
    arguments = {name: samples.get(properties.get(name, {}).get("type"), "mock") for name in schema.get("required", [])}
    return {"name": function.get("name", "tool"), "arguments": orjson.dumps(arguments).decode()}


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or [{}]
    digest = hashlib.sha256(orjson.dumps(messages)).hexdigest()
    call = _tool_to_call(body)
    if call is not None:
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{digest[:24]}", "type": "function", "function": call}
        ]}
        finish, text = "tool_calls", call["arguments"]
    else:
        text = _text(messages[-1].get("content"))
        message, finish = {"role": "assistant", "content": text}, "stop"
    prompt_tokens = sum(len(_text(m.get("content")).split()) + 3 for m in messages)
    completion_tokens = max(1, len(text.split()))
    return {
        "id": f"chatcmpl-mock-{digest[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "echo"),
        "choices": [{"index": i, "message": message, "finish_reason": finish, "logprobs": None}
                    for i in range(int(body.get("n") or 1))],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _chunks(answer: dict[str, Any], count: int, usage: bool) -> list[dict[str, Any]]:
    head = {k: answer[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    out = []
    for choice in answer["choices"]:
        index, message = choice["index"], choice["message"]
        deltas: list[dict[str, Any]] = []
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            deltas.append({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": call["id"], "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": arguments[:half]}}]})
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]})
        else:
            text = message["content"] or ""
            size = max(1, -(-len(text) // count))
            parts = [text[i:i + size] for i in range(0, len(text), size)] or [""]
            deltas = [{"role": "assistant", "content": parts[0]}] + [{"content": p} for p in parts[1:]]
        out += [{**head, "choices": [{"index": index, "delta": d, "finish_reason": None}]} for d in deltas]
        out.append({**head, "choices": [{"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}]})
    if usage:
        out.append({**head, "choices": [], "usage": answer["usage"]})
    return out


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    dimensions = DIMENSIONS if body.get("dimensions") is None else body["dimensions"]
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= 4096:
        raise ValueError("dimensions must be a whole number from 1 to 4096")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ValueError("encoding_format must be 'float' or 'base64'")
    inputs = _embedding_inputs(body.get("input"))
    data = [{"object": "embedding", "index": index, "embedding": _vector(item, dimensions, encoding)}
            for index, item in enumerate(inputs)]
    tokens = sum(len(item.split()) if isinstance(item, str) else len(item) for item in inputs)
    return {"object": "list", "data": data, "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _embedding_inputs(value: Any) -> list[str | list[int]]:
    """A string, a list of strings, a list of token ids, or a list of lists of token ids."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return list(value)
        if all(isinstance(item, int) for item in value):
            return [value]
        if all(isinstance(item, list) and item and all(isinstance(i, int) for i in item) for item in value):
            return list(value)
    raise ValueError("input must be a string, a list of strings, or token ids, and not empty")


def _vector(item: str | list[int], dimensions: int, encoding: str) -> list[float] | str:
    """A unit vector from the SHA-256 of the input: the same input always gets the same one."""
    seed = orjson.dumps(item)
    raw = b"".join(hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
                   for counter in range(-(-dimensions * 2 // 32)))
    values = [int.from_bytes(raw[i * 2:i * 2 + 2], "big") / 32767.5 - 1 for i in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    vector = [v / norm for v in values]
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
    return vector


def _moderations(body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("input")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError("input must be a string, a list of strings, or a list of content parts")
    texts = [item if isinstance(item, str) else _text([item]) for item in items]
    digest = hashlib.sha256(orjson.dumps(texts)).hexdigest()
    return {"id": f"modr-mock-{digest[:16]}", "model": body.get("model"), "results": [_moderation(t) for t in texts]}


def _moderation(text: str) -> dict[str, Any]:
    """Flags exactly the categories whose names the text contains (``"violence"`` flags violence)."""
    words = set(text.lower().replace(",", " ").replace(".", " ").split())
    categories = {name: name in words for name in MODERATION_CATEGORIES}
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": {name: 0.99 if hit else 0.0001 for name, hit in categories.items()},
        "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
    }


_ANSWERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "/chat/completions": _answer,
    "/embeddings": _embeddings,
    "/moderations": _moderations,
    _mock_messages.PATH: _mock_messages.message,
}
