"""The innermost ``send``: one attempt at one provider, owning its ``chatCompletions`` span.

This is the boundary where provider and transport failures become ``GatewayError``s, with
every configured credential scrubbed from whatever text the provider sent back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import orjson
from opentelemetry import trace
from opentelemetry.trace import Tracer

from ..errors import (
    GatewayError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from ..providers import ProviderAdapter, ProviderRegistry
from ..telemetry import ChatInvocation, Invocation, NullInvocation
from ._stream import UpstreamStream, ttft_exceeded
from ._types import ChatCall, ChunkStream, Completion, Outcome

_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{6,}|sk-ant-[A-Za-z0-9_\-*]{6,})")


class Scrubber:
    """Removes credentials from text: every configured secret, and anything shaped like a key."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return _KEY_LIKE.sub("[REDACTED]", text)


class ProviderSend:
    def __init__(
        self,
        registry: ProviderRegistry,
        *,
        tracer: Tracer | None,
        capture_content: bool,
        scrub: Scrubber,
    ) -> None:
        self._registry = registry
        self._tracer = tracer
        self._capture = capture_content
        self._scrub = scrub

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        route = self._registry.resolve(call.model)
        adapter = route.adapter
        _note_attempt(call.context.outcome, adapter, route.upstream_model)
        invocation = self._start(call, adapter)
        response: httpx.Response | None = None
        # Time to first token counts from the request: a provider slow to start its answer exceeds it too.
        ttft = call.context.ttft_timeout if call.stream else None
        started_at = asyncio.get_running_loop().time()
        try:
            request = adapter.build_request(call, route.upstream_model)
            with self._current(invocation):
                response = await _send(adapter.transport, request, ttft)
            call.context.outcome.provider_request_id = _request_id_of(response)
            if response.status_code >= 400:
                body = await _read(response)
                message = self._scrub(adapter.error_message(response.status_code, body))
                retry_after = response.headers.get("retry-after")
                raise UpstreamStatusError(
                    f"{adapter.name}: {message}", upstream_status=response.status_code, provider=adapter.name,
                    headers={"retry-after": retry_after} if retry_after else None,
                )
            if not call.stream:
                try:
                    completion = Completion(self._parse(adapter, await _read(response), call))
                finally:
                    await response.aclose()
                invocation.stop(completion.data)
                return completion
        except GatewayError as exc:
            await _close(response)
            invocation.fail(exc)
            raise
        except httpx.HTTPError as exc:
            await _close(response)
            error = self._transport_error(adapter, exc)
            invocation.fail(error)
            raise error from exc
        except asyncio.CancelledError:
            await _close(response)
            invocation.cancel()
            raise
        stream = UpstreamStream(response, adapter.stream_translator(call), invocation, include_usage=call.include_usage)
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
        )

    @staticmethod
    @contextlib.contextmanager
    def _current(invocation: Invocation) -> Iterator[None]:
        if isinstance(invocation, ChatInvocation):
            with trace.use_span(
                invocation.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                yield
        else:
            yield

    def _parse(self, adapter: ProviderAdapter, raw: bytes, call: ChatCall) -> dict[str, Any]:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            message = f"{adapter.name}: the upstream answered with a body that is not JSON"
            raise UpstreamError(message, provider=adapter.name)
        return adapter.translate_response(data, call)

    def _transport_error(self, adapter: ProviderAdapter, exc: httpx.HTTPError) -> UpstreamError:
        detail = self._scrub(str(exc)) or type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            seconds = adapter.config.timeout_ms / 1000
            return UpstreamTimeoutError(
                f"{adapter.name}: the upstream did not answer in time ({seconds:g} s): {detail}", provider=adapter.name
            )
        return UpstreamConnectionError(f"{adapter.name}: could not reach the upstream: {detail}", provider=adapter.name)


def _note_attempt(outcome: Outcome, adapter: ProviderAdapter, upstream_model: str) -> None:
    outcome.attempts += 1
    outcome.provider = adapter.name
    outcome.provider_type = adapter.gen_ai_provider
    outcome.upstream_model = upstream_model
    outcome.provider_request_id = None


def _request_id_of(response: httpx.Response) -> str | None:
    headers = response.headers
    return headers.get("x-request-id") or headers.get("request-id") or headers.get("apim-request-id")


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


async def _read(response: httpx.Response) -> bytes:
    """The whole body, read straight off the transport's stream (requests ask for no encoding)."""
    try:
        return response.content  # an in-process transport (the mock) answers with it read
    except httpx.ResponseNotRead:
        pass
    chunks = [chunk async for chunk in response.aiter_raw()]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _close(response: httpx.Response | None) -> None:
    if response is not None:
        await response.aclose()
