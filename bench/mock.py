"""A fast OpenAI-compatible mock upstream: ``POST .../chat/completions``, JSON or SSE.

Raw asyncio protocol on uvloop with httptools' parser: no framework, answers built from a few
byte templates, keep-alive. It must never be the bottleneck: the suite measures its capacity
(``capacity`` in the results) and the share of core 1 it uses while a gateway is under load.

    python -m bench.mock --port 9000 --chunks 50 --chunk-delay-ms 0 [--processes 1]

``GET /stats`` answers ``{"requests": N, "streams": N}`` (this process only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import time
from typing import Any

import httptools
import orjson
import uvloop

_CONTENT = "This is the mock upstream answering a benchmark request."
_USAGE = {"prompt_tokens": 14, "completion_tokens": 11, "total_tokens": 25}


class Options:
    def __init__(self, chunks: int, chunk_delay: float) -> None:
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self.requests = 0
        self.streams = 0


class MockProtocol(asyncio.Protocol):
    def __init__(self, options: Options) -> None:
        self.options = options
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.closing = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write_simple(400, b'{"error":{"message":"bad request"}}')
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.closing = not self.parser.should_keep_alive()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if method == b"POST" and path.endswith(b"/chat/completions"):
            self._chat(b"".join(self.body))
        elif path == b"/stats":
            payload = {"requests": self.options.requests, "streams": self.options.streams, "pid": os.getpid()}
            self._write_simple(200, orjson.dumps(payload))
        elif method == b"GET" and path.endswith(b"/models"):
            self._write_simple(200, b'{"object":"list","data":[{"id":"gpt-4o-mini","object":"model"}]}')
        elif method == b"GET":
            self._write_simple(200, b'{"status":"ok"}')
        else:
            self._write_simple(404, b'{"error":{"message":"unknown path","type":"invalid_request_error"}}')
        if self.closing and self.options.chunk_delay == 0:
            self._close()

    # answers
    def _chat(self, raw: bytes) -> None:
        try:
            request: dict[str, Any] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._write_simple(400, b'{"error":{"message":"body is not JSON","type":"invalid_request_error"}}')
            return
        self.options.requests += 1
        model = request.get("model") if isinstance(request.get("model"), str) else "gpt-4o-mini"
        ident = f"chatcmpl-bench{self.options.requests}"
        if request.get("stream") is True:
            self.options.streams += 1
            options = request.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            events = _stream_events(ident, model, self.options.chunks, usage)
            if self.options.chunk_delay > 0:
                asyncio.get_running_loop().create_task(self._stream_slowly(events))
            else:
                self._write_head_stream()
                for event in events:
                    self._write_chunk(event)
                self._write_chunk(b"")
            return
        body = orjson.dumps({
            "id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": _CONTENT, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": _USAGE, "system_fingerprint": "fp_bench",
        })
        self._write_simple(200, body)

    async def _stream_slowly(self, events: list[bytes]) -> None:
        self._write_head_stream()
        for index, event in enumerate(events):
            if index and self.transport is not None:
                await asyncio.sleep(self.options.chunk_delay)
            if self.transport is None:
                return
            self._write_chunk(event)
        self._write_chunk(b"")
        if self.closing:
            self._close()

    def _write_simple(self, status: int, body: bytes) -> None:
        if self.transport is None:
            return
        reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Status")
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n" % (
            status, reason, len(body), b"connection: close\r\n" if self.closing else b"")
        self.transport.write(head + body)

    def _write_head_stream(self) -> None:
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                                 b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n%s\r\n"
                                 % (b"connection: close\r\n" if self.closing else b""))

    def _write_chunk(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _stream_events(ident: str, model: str, chunks: int, usage: bool) -> list[bytes]:
    """``chunks`` content chunks (the first carries the role), the finish chunk, the usage chunk
    when asked for, ``[DONE]``: as OpenAI streams them."""
    created = int(time.time())
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_bench"}
    events = []
    for index in range(chunks):
        delta: dict[str, Any] = {"content": f"tok{index} "}
        if index == 0:
            delta = {"role": "assistant", **delta}
        events.append({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]})
    events.append({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
    if usage:
        events.append({**head, "choices": [], "usage": {**_USAGE, "completion_tokens": chunks,
                                                          "total_tokens": _USAGE["prompt_tokens"] + chunks}})
    return [b"data: " + orjson.dumps(event) + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]


async def serve(port: int, options: Options, reuse_port: bool) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(options), "127.0.0.1", port,
                                      reuse_port=reuse_port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--processes", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    args = parser.parse_args()
    for _ in range(args.processes - 1):
        if os.fork() == 0:
            break
    options = Options(args.chunks, args.chunk_delay_ms / 1000)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT is how the suite stops it
        uvloop.run(serve(args.port, options, reuse_port=args.processes > 1))


if __name__ == "__main__":
    main()
