"""The innermost ``send``: one attempt at one provider, owning its ``chatCompletions`` span.

Provider and transport failures become ``GatewayError``s through the shared boundary in
``otel_gateway.upstream``, with every credential scrubbed (``otel_gateway.redaction``).
"""

from __future__ import annotations

import asyncio

import httpx
from opentelemetry.trace import Tracer

from ..errors import GatewayError
from ..providers import ProviderAdapter, ProviderRegistry
from ..redaction import Redactor
from ..telemetry import ChatInvocation, Invocation, NullInvocation
from ..upstream import close, json_object, note_attempt, read, request_id_of, status_error, transport_error
from ._stream import UpstreamStream, ttft_exceeded
from ._types import ChatCall, ChunkStream, Completion

__all__ = ["ProviderSend"]


class ProviderSend:
    def __init__(
        self,
        registry: ProviderRegistry,
        *,
        tracer: Tracer | None,
        capture_content: bool,
        redactor: Redactor,
    ) -> None:
        self._registry = registry
        self._tracer = tracer
        self._capture = capture_content
        self._redact = redactor

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        route = self._registry.resolve(call.model)
        adapter = route.adapter
        note_attempt(call.context.outcome, adapter, route)
        invocation = self._start(call, adapter)
        response: httpx.Response | None = None
        # Time to first token counts from the request: a provider slow to start its answer exceeds it too.
        ttft = call.context.ttft_timeout if call.stream else None
        started_at = asyncio.get_running_loop().time()
        try:
            request = adapter.build_request(call, route.upstream_model)
            with invocation.current():
                response = await _send(adapter.transport, request, ttft)
            call.context.outcome.provider_request_id = request_id_of(response)
            if response.status_code >= 400:
                raise await status_error(adapter, response, self._redact)
            if not call.stream:
                try:
                    data = json_object(adapter, await read(response))
                    completion = Completion(adapter.translate_response(data, call))
                finally:
                    await response.aclose()
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
        stream = UpstreamStream(
            response, adapter.stream_translator(call), invocation, include_usage=call.include_usage,
            scrub=self._redact.text,
        )
        await stream.prefetch(ttft, started_at=started_at)
        return stream

    def _start(self, call: ChatCall, adapter: ProviderAdapter) -> Invocation:
        if self._tracer is None:
            return NullInvocation()
        return ChatInvocation.start(
            self._tracer,
            params=call.params(),
            requested_model=call.requested_model,
            provider=adapter.gen_ai_provider,
            server=(adapter.server_address, adapter.server_port),
            capture_content=self._capture,
            redactor=self._redact,
        )


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
