"""``POST /v1/embeddings`` and ``POST /v1/moderations``: one JSON request to the provider of the
addressed model (``provider-account/model``), its JSON answer passed back as it came."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

from starlette.types import Receive, Scope, Send

from ..providers import Route
from ..redaction import Redactor
from ..runtime import Gateway
from ..telemetry import OperationInvocation
from ..upstream import note_attempt
from ..warehouse import Exchange
from ._asgi import headers_of, parse_json_object, read_body
from ._logged import logged, start_exchange, watching_disconnect
from ._params import EMBEDDINGS, MODERATIONS, Spec, check_body
from ._relay import open_upstream, read_json_object, send_bytes

Operation = Literal["embeddings", "moderations"]
_SPECS: Mapping[Operation, Spec] = MappingProxyType({"embeddings": EMBEDDINGS, "moderations": MODERATIONS})


class OperationEndpoint:
    def __init__(self, gateway: Gateway, operation: Operation) -> None:
        self._gateway = gateway
        self._operation: Operation = operation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self._gateway.current
        headers = headers_of(scope)
        exchange = start_exchange(scope, headers, f"/v1/{self._operation}")
        with logged(self._gateway, exchange):
            body = parse_json_object(await read_body(scope, receive, runtime.config.server.max_request_body_bytes))
            exchange.request = body
            exchange.model = _validate(body, self._operation)
            route = runtime.registry.resolve(exchange.model)
            async with watching_disconnect(receive, exchange, stream=False):
                raw, data = await self._call(route, body, headers, exchange, runtime.redactor)
                exchange.response = data
                usage = data.get("usage")
                exchange.usage = usage if isinstance(usage, dict) else None
                await send_bytes(send, 200, raw, "application/json")

    async def _call(
        self, route: Route, body: dict[str, Any], headers: Mapping[str, str], exchange: Exchange, redact: Redactor
    ) -> tuple[bytes, dict[str, Any]]:
        adapter = route.adapter
        note_attempt(exchange.outcome, adapter, route)
        request = adapter.build_operation_request(self._operation, body, route.upstream_model, headers)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": self._operation,
            "gen_ai.provider.name": adapter.gen_ai_provider,
            "gen_ai.request.model": exchange.model,
            "server.address": adapter.server_address,
            "server.port": adapter.server_port,
        }
        if isinstance(body.get("encoding_format"), str):
            attributes["gen_ai.request.encoding_formats"] = [body["encoding_format"]]
        invocation = OperationInvocation.start(self._gateway.services.tracer, self._operation, attributes)
        try:
            with invocation.current():
                response = await open_upstream(adapter, request, redact, exchange)
            raw, data = await read_json_object(adapter, response, redact)
        except asyncio.CancelledError:
            invocation.cancel()
            raise
        except Exception as exc:
            invocation.fail(exc)
            raise
        invocation.stop(_RESPONSE_ATTRIBUTES[self._operation](data))
        return raw, data


def _validate(body: Mapping[str, Any], operation: Operation) -> str:
    check_body(body, _SPECS[operation])
    model: str = body["model"]
    return model


def _embedding_attributes(data: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    def attributes() -> dict[str, Any]:
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

    return attributes


def _moderation_attributes(data: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    return lambda: _common_attributes(data)


def _common_attributes(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(data.get("id"), str):
        out["gen_ai.response.id"] = data["id"]
    if isinstance(data.get("model"), str):
        out["gen_ai.response.model"] = data["model"]
    return out


_RESPONSE_ATTRIBUTES: dict[Operation, Callable[[dict[str, Any]], Callable[[], dict[str, Any]]]] = {
    "embeddings": _embedding_attributes,
    "moderations": _moderation_attributes,
}
