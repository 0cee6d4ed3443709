"""The one opening of every endpoint that calls a model, and its answer.

Read the body, parse it, validate it, start the exchange, read the time bounds
(``x-gateway-request-timeout``, ``x-gateway-ttft-timeout-ms``), build the one call and send it down
the one chain (``runtime.send``), watching for the client leaving. What differs per endpoint is
an :class:`Endpoint` entry: its kind, how its body is checked, how a stream goes to the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send

from .._headers import whole_number
from ..calls import PATHS, ChatCall, ChunkStream, Completion, Kind, RequestContext
from ..calls import Send as ChatSend
from ..chat import SPECS
from ..errors import UpstreamTimeoutError
from ..runtime import Gateway
from ..warehouse import Exchange
from ._asgi import headers_of, parse_json_object, read_body, send_json
from ._logged import logged, start_exchange, watching_disconnect
from ._relay import send_bytes

__all__ = ["MAX_TIMEOUT_MS", "Endpoint", "ModelEndpoint", "request_timeout"]

MAX_TIMEOUT_MS = 86_400_000
"""The longest ``x-gateway-request-timeout`` / ``x-gateway-ttft-timeout-ms`` taken (24 h); more is a 400."""

StreamWriter = Callable[[ChunkStream, Send, RequestContext, Exchange], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The HTTP side of one endpoint that calls a model (the call side is ``chat._specs``)."""

    kind: Kind
    validate: Callable[[Mapping[str, Any]], None]
    """Raises a 400 naming the parameter; afterwards ``model`` is a non-empty string."""
    write_stream: StreamWriter | None = None
    """How a streamed answer goes to the client; ``None``: the endpoint never streams."""


class ModelEndpoint:
    """``POST`` of one :class:`Endpoint`: the shared opening, the chain, the answer."""

    def __init__(self, gateway: Gateway, endpoint: Endpoint) -> None:
        self._gateway = gateway
        self._endpoint = endpoint
        self._path = PATHS[endpoint.kind]
        self._streams = endpoint.write_stream is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self._gateway.current
        headers = headers_of(scope)
        exchange = start_exchange(scope, headers, self._path)
        with logged(self._gateway, exchange):
            body = parse_json_object(await read_body(scope, receive, runtime.config.server.max_request_body_bytes))
            exchange.request = body
            exchange.model = body["model"] if isinstance(body.get("model"), str) else None
            exchange.stream = self._streams and body.get("stream") is True
            self._endpoint.validate(body)
            context = RequestContext(
                request_id=exchange.request_id,
                headers=headers,
                ttft_timeout=_milliseconds(headers, "x-gateway-ttft-timeout-ms"),
                identity=exchange.identity,
                metadata=exchange.metadata,
                deadline=_deadline(headers),
                outcome=exchange.outcome,
            )
            call = ChatCall(body=body, model=body["model"], context=context, kind=self._endpoint.kind)
            async with watching_disconnect(receive, exchange, stream=exchange.stream):
                result = await send_within_deadline(runtime.send, call)
                if isinstance(result, Completion):
                    await self._answer(send, call, result, exchange)
                else:
                    assert self._endpoint.write_stream is not None
                    await self._endpoint.write_stream(result, send, context, exchange)

    async def _answer(self, send: Send, call: ChatCall, result: Completion, exchange: Exchange) -> None:
        exchange.response = result.data
        if call.kind != "chat":  # a chat record takes its usage from the completion itself
            exchange.usage = _dict(SPECS[call.kind].usage(result.data))
        headers = {**call.context.response_headers, **result.headers}
        if result.raw is None:
            await send_json(send, 200, result.data, headers)
        else:
            await send_bytes(send, 200, result.raw, "application/json", headers)


async def send_within_deadline(chat_send: ChatSend, call: ChatCall) -> Completion | ChunkStream:
    deadline = call.context.deadline
    if deadline is None:
        return await chat_send(call)
    try:
        async with asyncio.timeout_at(deadline):
            return await chat_send(call)
    except TimeoutError:
        raise request_timeout(call.context.headers) from None


def request_timeout(headers: Mapping[str, str]) -> UpstreamTimeoutError:
    ms = headers.get("x-gateway-request-timeout")
    return UpstreamTimeoutError(f"The request was not answered within {ms} ms (x-gateway-request-timeout).",
                                code="request_timeout")


def _milliseconds(headers: Mapping[str, str], name: str) -> float | None:
    """A header of whole milliseconds, 1 to :data:`MAX_TIMEOUT_MS`, in seconds (400 naming it if not)."""
    value = whole_number(headers, name, low=1, high=MAX_TIMEOUT_MS, unit="milliseconds")
    return None if value is None else value / 1000


def _deadline(headers: Mapping[str, str]) -> float | None:
    timeout = _milliseconds(headers, "x-gateway-request-timeout")
    return None if timeout is None else asyncio.get_running_loop().time() + timeout


def _dict(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(usage) if isinstance(usage, Mapping) else None
