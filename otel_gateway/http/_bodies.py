"""Bodies passed through without being held: the client's request body as an async byte stream
fed by ASGI ``receive``, and what the request log keeps of a body (small JSON, or metadata)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.types import Message, Receive

from ._asgi import ClientGone

LOGGED_JSON_LIMIT = 64 * 1024
"""JSON bodies up to this size are logged whole; larger ones, and any other body, by metadata only."""
_FIELD_LIMIT = 256
_DISPOSITION = re.compile(rb'content-disposition:[^\r\n]*?\bname="([^"]*)"(?:[^\r\n]*?\bfilename="([^"]*)")?', re.I)
_PART_TYPE = re.compile(rb"content-type:[ \t]*([^\r\n;]+)", re.I)


class StreamedBody:
    """The request body, chunk by chunk as the client sends it: the content of the upstream
    request. Only its size and its first ``keep`` bytes (for the log) stay in memory.

    A client that leaves mid-body ends the iteration with :class:`ClientGone` (``client_gone``
    tells it apart from an upstream failure). :meth:`receive_after_body` is the ``receive`` to
    watch for a disconnect with: it waits until the body is read, and is the only reader then."""

    def __init__(self, receive: Receive, *, keep: int = 0) -> None:
        self._receive = receive
        self._keep = keep
        self._head = bytearray()
        self._read = asyncio.Event()
        self.size = 0
        self.client_gone = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            if chunk:
                self.size += len(chunk)
                if len(self._head) < self._keep:
                    self._head += chunk[: self._keep - len(self._head)]
                yield chunk
            if not message.get("more_body", False):
                self._read.set()
                return

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    async def receive_after_body(self) -> Message:
        await self._read.wait()
        return await self._receive()


def has_body(headers: Mapping[str, str]) -> bool:
    length = headers.get("content-length")
    return "transfer-encoding" in headers or (length is not None and length.strip() not in ("", "0"))


def logged_body(content_type: str, size: int, head: bytes, *, whole: bool) -> Any:
    """What the log keeps of a body: ``whole`` JSON of up to :data:`LOGGED_JSON_LIMIT` bytes
    parsed; of a multipart upload its small fields and file names; else its type and size."""
    media_type, _, params = content_type.partition(";")
    media_type = media_type.strip().lower()
    if whole and size <= LOGGED_JSON_LIMIT and len(head) == size and _is_json(media_type):
        try:
            return orjson.loads(head)
        except orjson.JSONDecodeError:
            pass
    summary: dict[str, Any] = {"content_type": media_type or None, "size": size}
    boundary = _boundary(params)
    if whole and media_type == "multipart/form-data" and boundary:
        summary.update(_multipart(head, boundary))
    return summary


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _boundary(params: str) -> str | None:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value:
            return value.strip('"')
    return None


def _multipart(head: bytes, boundary: str) -> dict[str, Any]:
    """Fields and file names from the parts that begin within ``head``; never a file's bytes."""
    fields: dict[str, str] = {}
    files: list[dict[str, str | None]] = []
    pieces = head.split(b"--" + boundary.encode("latin-1"))[1:]
    for index, piece in enumerate(pieces):
        part_headers, blank, content = piece.partition(b"\r\n\r\n")
        match = _DISPOSITION.search(part_headers) if blank else None
        if match is None:
            continue
        name = match.group(1).decode("utf-8", "replace")
        if match.group(2) is not None:
            part_type = _PART_TYPE.search(part_headers)
            files.append({
                "field": name,
                "filename": match.group(2).decode("utf-8", "replace"),
                "content_type": part_type.group(1).decode("latin-1").strip() if part_type else None,
            })
        elif index < len(pieces) - 1:  # a field whose value ends within the head
            fields[name] = content.removesuffix(b"\r\n").decode("utf-8", "replace")[:_FIELD_LIMIT]
    return {"fields": fields, "files": files}
