"""One upstream attempt's stream: SSE bytes in, OpenAI chunks out, the span ended at its end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import GatewayError, RequestTimeoutError, UpstreamStreamError, UpstreamTimeoutError
from ..sse import SSEDecoder
from ._assemble import CompletionAssembler

if TYPE_CHECKING:
    from ..providers import StreamTranslator
    from ..telemetry import Invocation


class UpstreamStream:
    """Implements ``ChunkStream`` over a provider's streamed HTTP response.

    Every chunk is passed on as soon as it is decoded; the assembler keeps the message they add
    up to for the span (and the request log). The usage chunk is always requested upstream and
    passed on only if the client asked for it.
    """

    def __init__(
        self,
        response: httpx.Response,
        translator: StreamTranslator,
        invocation: Invocation,
        *,
        include_usage: bool,
        scrub: Callable[[str], str],
        assembler: Any = None,
    ) -> None:
        """``assembler``: what the chunks add up to (default: a ``chat.completion``'s
        :class:`CompletionAssembler`; the Messages API brings its own)."""
        self._response = response
        self._scrub = scrub
        self._translator = translator
        self._invocation = invocation
        self._include_usage = include_usage
        self._chunks: AsyncGenerator[dict[str, Any], None] = self._generate()
        self._first: dict[str, Any] | None = None
        self._closed = False
        self.assembler = CompletionAssembler() if assembler is None else assembler

    @property
    def first_id(self) -> str | None:
        """The ``id`` the first chunk carried (the response's id), once prefetched."""
        first = self._first
        if first is None:
            return None
        found = first.get("id")
        if found is None and isinstance(first.get("message"), dict):
            found = first["message"].get("id")  # Anthropic's message_start
        return found if isinstance(found, str) else None

    async def prefetch(self, ttft_timeout: float | None, *, started_at: float | None = None) -> None:
        """Waits for the first chunk, so that a failure before it raises here. The ``ttft_timeout``
        clock runs from ``started_at`` (event loop time; default: now), when the request was sent."""
        error: GatewayError
        start = asyncio.get_running_loop().time() if started_at is None else started_at
        try:
            async with asyncio.timeout_at(None if ttft_timeout is None else start + ttft_timeout):
                self._first = await anext(self._chunks)
            return
        except StopAsyncIteration:
            error = UpstreamStreamError("the upstream ended the stream before sending anything")
        except TimeoutError:
            error = ttft_exceeded(ttft_timeout or 0)
        except GatewayError as exc:
            error = exc
        except asyncio.CancelledError:
            await self.aclose()
            raise
        await self._abort(error)
        raise error

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._first is not None:
            chunk, self._first = self._first, None
            return chunk
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            self._invocation.stop(self.assembler.result())
            await self._release()
            raise
        except GatewayError as exc:
            await self._abort(exc)
            raise

    async def aclose(self) -> None:
        if not self._closed:
            self._invocation.cancel(self.assembler.result())
        await self._release()

    async def _abort(self, error: GatewayError) -> None:
        self._invocation.fail(error, self.assembler.result() if self.assembler.chunk_count else None)
        await self._release()

    async def _release(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._chunks.aclose()
        await self._response.aclose()

    async def _generate(self) -> AsyncGenerator[dict[str, Any], None]:
        decoder = SSEDecoder()
        translate = self._translator.translate
        try:
            async for raw in self._response.aiter_raw():
                for event in decoder.feed(raw):
                    for chunk in translate(event):
                        if (passed := self._observe(chunk)) is not None:
                            yield passed
            for event in decoder.flush():
                for chunk in translate(event):
                    if (passed := self._observe(chunk)) is not None:
                        yield passed
        except UpstreamStreamError as exc:
            # The provider's own words: no credential it echoes may reach a client, span or log.
            raise UpstreamStreamError(self._scrub(exc.message)) from None
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError("the upstream stopped sending in the middle of the stream") from exc
        except httpx.TransportError as exc:
            raise UpstreamStreamError(f"the upstream connection was cut mid-stream: {self._scrub(str(exc))}") from None
        if not (self._translator.finished or self.assembler.complete):
            reason = getattr(self._translator, "incomplete", None)
            raise UpstreamStreamError(reason or "the upstream ended the stream before it was complete")

    def _observe(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        if self.assembler.chunk_count == 0:
            self._invocation.first_chunk()
        self.assembler.add(chunk)
        if self._include_usage or "usage" not in chunk:
            return chunk
        if not chunk.get("choices"):
            return None
        return {key: value for key, value in chunk.items() if key != "usage"}


def ttft_exceeded(ttft_timeout: float) -> RequestTimeoutError:
    ms = round(ttft_timeout * 1000)
    return RequestTimeoutError(f"no streamed chunk arrived within {ms} ms (x-gateway-ttft-timeout-ms)")
