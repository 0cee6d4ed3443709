"""The innermost ``send``: one attempt at one provider, owning its ``chatCompletions`` span.

Provider and transport failures become ``GatewayError``s through the shared boundary in
``otel_gateway.upstream``, with every credential scrubbed (``otel_gateway.redaction``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from opentelemetry.trace import Tracer

from ..calls import ChatCall, ChunkStream, Completion
from ..errors import GatewayError
from ..providers import ProviderRegistry
from ..redaction import Redactor
from ..upstream import close, json_object, note_attempt, read, request_id_of, status_error, transport_error
from ._specs import SPECS, Tracing
from ._stream import ttft_exceeded

__all__ = ["ProviderSend"]


class ProviderSend:
    """One attempt at one provider, for a call of any kind: what differs per endpoint (the
    request, the span, the answer, the stream) comes from its spec (``chat._specs``)."""

    def __init__(
        self,
        registry: ProviderRegistry,
        *,
        tracer: Tracer | None,
        capture_content: bool,
        redactor: Redactor,
    ) -> None:
        self._registry = registry
        self._redact = redactor
        self._tracing = Tracing(tracer, capture_content, redactor)

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        spec = SPECS[call.kind]
        route = self._registry.resolve(call.model)
        adapter = route.adapter
        outcome = call.context.outcome
        note_attempt(outcome, adapter, route)
        spec.check(adapter, call)
        invocation = spec.start(self._tracing, call, adapter)
        response: httpx.Response | None = None
        # Time to first token counts from the request: a provider slow to start its answer exceeds it too.
        ttft = call.context.ttft_timeout if call.stream else None
        started_at = asyncio.get_running_loop().time()
        try:
            request = spec.build(adapter, call, route.upstream_model)
            with invocation.current():
                response = await _send(adapter.transport, request, ttft)
            outcome.provider_request_id = request_id_of(response)
            if response.status_code >= 400:
                raise await status_error(adapter, response, self._redact)
            if not call.stream or spec.stream is None:
                try:
                    raw = await read(response)
                    completion = spec.answer(adapter, call, json_object(adapter, raw), raw, response)
                finally:
                    await response.aclose()
                if outcome.provider_request_id is None:
                    outcome.provider_request_id = _id_of(completion.data)
                invocation.stop(completion.data)
                return completion
        except GatewayError as exc:
            await close(response)
            invocation.fail(exc)
            raise
        except httpx.HTTPError as exc:
            await close(response)
            error = transport_error(adapter, exc, self._redact)
            invocation.fail(error)
            raise error from exc
        except asyncio.CancelledError:
            await close(response)
            invocation.cancel()
            raise
        stream = spec.stream(response, adapter, call, invocation, self._redact)
        await stream.prefetch(ttft, started_at=started_at)
        if outcome.provider_request_id is None:
            outcome.provider_request_id = stream.first_id
        return stream


def _id_of(data: dict[str, Any]) -> str | None:
    found = data.get("id")
    return found if isinstance(found, str) else None


async def _send(transport: httpx.AsyncBaseTransport, request: httpx.Request, ttft: float | None) -> httpx.Response:
    if ttft is None:
        return await transport.handle_async_request(request)
    waiting = asyncio.timeout(ttft)
    try:
        async with waiting:
            return await transport.handle_async_request(request)
    except TimeoutError:
        if not waiting.expired():
            raise
        raise ttft_exceeded(ttft) from None
