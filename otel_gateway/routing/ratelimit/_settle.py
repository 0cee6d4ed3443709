"""A chunk stream that settles its token reservation when it ends, fails or is closed early."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from ...calls import ChunkStream


class SettlingStream:
    """Passes every chunk on unchanged; at the end calls ``settle`` once with the usage the
    stream reported, or ``None`` if none was seen (then the reservation stands).

    The usage is read from the inner stream's ``assembler`` when it has one (``UpstreamStream``
    does: it sees the usage chunk even when the client did not ask for it and the chunk is held
    back), else from the chunks that passed through here. Other attributes of the inner stream
    (such as ``assembler``) are reachable through this one.
    """

    def __init__(self, stream: ChunkStream, settle: Callable[[Mapping[str, Any] | None], Awaitable[None]]) -> None:
        self._stream = stream
        self._chunks: AsyncIterator[dict[str, Any]] = stream.__aiter__()
        self._settle: Callable[[Mapping[str, Any] | None], Awaitable[None]] | None = settle
        self._seen: Mapping[str, Any] | None = None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            chunk = await self._chunks.__anext__()
        except BaseException:
            await self._finish()
            raise
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self._seen = usage
        return chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            await self._finish()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._stream, name)

    def _usage(self) -> Mapping[str, Any] | None:
        assembler = getattr(self._stream, "assembler", None)
        usage = getattr(assembler, "usage", None)
        return usage if isinstance(usage, Mapping) else self._seen

    async def _finish(self) -> None:
        settle, self._settle = self._settle, None
        if settle is not None:
            await settle(self._usage())
