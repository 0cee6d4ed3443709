"""The built-in ``mock`` provider: no network, deterministic, speaks OpenAI's wire format.

It echoes the last message, streams it in N chunks, calls the first offered tool, and can be
told to wait or fail, by its config (``mock:``) or per request with ``x-mock-*`` headers:
``x-mock-delay-ms``, ``x-mock-status``, ``x-mock-stream-chunks``, ``x-mock-chunk-delay-ms``,
``x-mock-fail-after-chunks``. It sits behind an in-process httpx transport, so a mock request
runs through the same translation, streaming and tracing code as a real provider.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from ..config import MockOptions, ProviderConfig
from ..sse import DONE, encode_data
from .openai import OpenAIAdapter

if TYPE_CHECKING:
    from ..chat._types import ChatCall

_JSON = {"content-type": "application/json"}
_HEADERS = {
    "x-mock-delay-ms": "delay_ms",
    "x-mock-status": "fail_status",
    "x-mock-stream-chunks": "stream_chunks",
    "x-mock-chunk-delay-ms": "chunk_delay_ms",
    "x-mock-fail-after-chunks": "fail_after_chunks",
}


class MockAdapter(OpenAIAdapter):
    gen_ai_provider = "otel_gateway.mock"

    @classmethod
    def own_transport(cls, config: ProviderConfig) -> httpx.AsyncBaseTransport:
        return MockTransport(config.mock)

    def build_request(self, call: ChatCall, upstream_model: str) -> httpx.Request:
        request = super().build_request(call, upstream_model)
        for header in _HEADERS:
            if header in call.context.headers:
                request.headers[header] = call.context.headers[header]
        return request


class MockTransport(httpx.AsyncBaseTransport):
    def __init__(self, options: MockOptions) -> None:
        self.options = options

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            options = _options(self.options, request.headers)
        except ValueError as exc:
            return _error(400, str(exc))
        body = orjson.loads(request.content)
        if options.delay_ms:
            await asyncio.sleep(options.delay_ms / 1000)
        if options.fail_status:
            return _error(options.fail_status, f"mock provider failing on purpose with status {options.fail_status}")
        answer = _answer(body)
        if not body.get("stream"):
            return httpx.Response(200, content=orjson.dumps(answer), headers=_JSON, request=request)
        chunks = _chunks(answer, options.stream_chunks, _wants_usage(body))
        stream = _ChunkStream(chunks, options.chunk_delay_ms / 1000, options.fail_after_chunks, request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream, request=request)


class _ChunkStream(httpx.AsyncByteStream):
    def __init__(
        self, chunks: list[dict[str, Any]], delay: float, fail_after: int | None, request: httpx.Request
    ) -> None:
        self._chunks, self._delay, self._fail_after, self._request = chunks, delay, fail_after, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for sent, chunk in enumerate(self._chunks):
            if self._fail_after is not None and sent >= self._fail_after:
                raise httpx.RemoteProtocolError("mock provider cut the stream on purpose", request=self._request)
            if sent and self._delay:
                await asyncio.sleep(self._delay)
            yield encode_data(chunk)
        yield DONE


def _options(base: MockOptions, headers: Mapping[str, str]) -> MockOptions:
    updates: dict[str, int] = {}
    for header, field in _HEADERS.items():
        if header in headers:
            try:
                updates[field] = int(headers[header])
            except ValueError:
                raise ValueError(f"{header} must be an integer, got {headers[header]!r}") from None
    return MockOptions.model_validate({**base.model_dump(), **updates}) if updates else base


def _error(status: int, message: str) -> httpx.Response:
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
