"""``POST /v1/messages``: Anthropic's Messages API, native to Anthropic providers.

The client's body goes upstream with only ``model`` replaced (``anthropic-main/claude-...`` ->
the provider's name); the answer comes back as it came: JSON whole, a stream byte for byte as
it arrives. The stream is also decoded on the side, for the log (every event, the message they
add up to, the usage of ``message_start`` and ``message_delta``) and the ``messages`` span.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson
from starlette.types import Receive, Scope, Send

from ..errors import GatewayError, InvalidRequestError, UpstreamStreamError
from ..providers import ProviderAdapter
from ..providers.anthropic import openai_usage
from ..runtime import Gateway
from ..sse import ServerSentEvent, SSEDecoder
from ..telemetry import OperationInvocation
from ..upstream import note_attempt
from ..warehouse import Exchange
from ._asgi import headers_of, parse_json_object, read_body
from ._logged import logged, record_error, start_exchange, watching_disconnect
from ._relay import open_upstream, read_json_object

SPAN_NAME = "messages"
_REQUEST_PARAMS = {"max_tokens": "gen_ai.request.max_tokens", "temperature": "gen_ai.request.temperature",
                   "top_p": "gen_ai.request.top_p", "top_k": "gen_ai.request.top_k"}
_RELAYED_HEADERS = ("request-id",)
_STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


class MessagesEndpoint:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self._gateway.current
        headers = headers_of(scope)
        exchange = start_exchange(scope, headers, "/v1/messages")
        with logged(self._gateway, exchange):
            body = parse_json_object(await read_body(scope, receive, runtime.config.server.max_request_body_bytes))
            exchange.request = body
            exchange.model = _validate(body)
            exchange.stream = body.get("stream") is True
            route = runtime.registry.resolve(exchange.model)
            adapter = route.adapter
            request = adapter.build_messages_request(body, route.upstream_model, headers)
            note_attempt(exchange.outcome, adapter, route)
            redact = runtime.redactor
            tracer = self._gateway.services.tracer
            invocation = OperationInvocation.start(tracer, SPAN_NAME, _request_attributes(body, exchange, adapter))
            async with watching_disconnect(receive, exchange, stream=exchange.stream):
                try:
                    with invocation.current():
                        response = await open_upstream(adapter, request, redact, exchange)
                    if response.headers.get("content-type", "").startswith("text/event-stream"):
                        await _relay_stream(response, send, exchange, invocation, adapter)
                    else:
                        raw, data = await read_json_object(adapter, response, redact)
                        exchange.response, exchange.usage = data, _usage(data)
                        invocation.stop(_response_attributes(data))
                        await _send_answer(send, response, raw)
                except asyncio.CancelledError:
                    invocation.cancel()
                    raise
                except Exception as exc:
                    invocation.fail(exc)
                    raise


def _validate(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("You must provide a model parameter (a non-empty string).", param="model",
                                  code="missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("You must provide messages: a non-empty array of message objects.",
                                  param="messages", code="missing_required_parameter")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequestError("stream must be a boolean.", param="stream", code="invalid_type")
    return model


async def _send_answer(send: Send, response: httpx.Response, raw: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers + _relayed(response)})
    await send({"type": "http.response.body", "body": raw})


async def _relay_stream(
    response: httpx.Response, send: Send, exchange: Exchange, invocation: OperationInvocation,
    adapter: ProviderAdapter,
) -> None:
    """Passes every byte on as it arrives. A failure after the start ends the stream with an
    ``error`` event (OpenAI's error object in Anthropic's event shape); a client that leaves
    cancels this, and the upstream is closed at once."""
    assembler = MessageAssembler()
    decoder = SSEDecoder()
    content_type = response.headers.get("content-type", "text/event-stream").encode("latin-1")
    headers = [(b"content-type", content_type), *_STREAM_HEADERS, *_relayed(response)]
    error: GatewayError | None = None
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                for event in decoder.feed(chunk):
                    assembler.add(event)
            for event in decoder.flush():
                assembler.add(event)
        except httpx.HTTPError as exc:
            error = UpstreamStreamError(f"{adapter.name}: the upstream stream broke off: {type(exc).__name__}",
                                        provider=adapter.name)
        else:
            error = assembler.failure(adapter.name)
        if error is not None and not assembler.error:
            frame = b"event: error\ndata: " + orjson.dumps({"type": "error", **error.body()}) + b"\n\n"
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        await response.aclose()
        exchange.response, exchange.streamed_data = assembler.message, assembler.events
        exchange.usage = _usage(assembler.message)
    if error is None:
        invocation.stop(_response_attributes(assembler.message or {}))
    else:
        record_error(exchange, error, http_status=200)
        invocation.fail(error)


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

    def add(self, event: ServerSentEvent) -> None:
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
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


def _relayed(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), response.headers[name].encode("latin-1"))
            for name in _RELAYED_HEADERS if name in response.headers]


def _usage(message: Mapping[str, Any] | None) -> dict[str, Any] | None:
    usage = message.get("usage") if message else None
    return openai_usage(usage) if isinstance(usage, dict) else None


def _request_attributes(body: Mapping[str, Any], exchange: Exchange, adapter: ProviderAdapter) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": adapter.gen_ai_provider,
        "gen_ai.request.model": exchange.model,
        "gen_ai.request.stream": exchange.stream,
        "server.address": adapter.server_address,
        "server.port": adapter.server_port,
    }
    for key, attribute in _REQUEST_PARAMS.items():
        value = body.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[attribute] = value
    return attributes


def _response_attributes(message: Mapping[str, Any]) -> Callable[[], dict[str, Any]]:
    def attributes() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, attribute in (("id", "gen_ai.response.id"), ("model", "gen_ai.response.model")):
            if isinstance(message.get(key), str):
                out[attribute] = message[key]
        if isinstance(message.get("stop_reason"), str):
            out["gen_ai.response.finish_reasons"] = [message["stop_reason"]]
        usage = _usage(message)
        if usage is not None:
            out["gen_ai.usage.input_tokens"] = usage["prompt_tokens"]
            out["gen_ai.usage.output_tokens"] = usage["completion_tokens"]
        return out

    return attributes
