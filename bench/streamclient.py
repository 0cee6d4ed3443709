"""Streaming latency client: one keep-alive connection, one streamed chat request at a time.

For each request it notes the time to the first chunk (the first ``data: {`` event's bytes)
and to the end of the answer (``[DONE]`` and the end of the HTTP message), and counts the
events received. A raw asyncio protocol with httptools' parser on uvloop, so its own cost per
request stays in the tens of microseconds; the same client measures the direct floor, so that
cost cancels out of every "added" figure. Bounded: ``--requests`` and ``--duration``.

    python -m bench.streamclient --url http://127.0.0.1:9000/v1/chat/completions --body-file body.json \
        [--header 'name: value'] --duration 10 --requests 5000 --warmup 20

Prints one JSON object: percentiles in microseconds, counts, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from urllib.parse import urlsplit

import httptools
import orjson
import uvloop


class _Exchange(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] | None = None
        self.first: float | None = None
        self.events = 0
        self.status = 0
        self.tail = b""
        self.saw_done = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def begin(self) -> asyncio.Future[None]:
        self.done = asyncio.get_running_loop().create_future()
        self.first, self.events, self.tail, self.saw_done = None, 0, b"", False
        return self.done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))
        if not self.lost.done():
            self.lost.set_result(None)

    def on_status(self, status: bytes) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        text = self.tail + body
        if self.first is None and b"data: {" in text:
            self.first = time.perf_counter()
        self.events += body.count(b"data: ")
        self.saw_done = self.saw_done or b"data: [DONE]" in text
        self.tail = text[-16:]

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "min": ordered[0], "max": ordered[-1],
            "mean": sum(ordered) / len(ordered)}


async def run(url: str, body: bytes, headers: list[str], duration: float, limit: int, warmup: int,
              timeout: float) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (f"POST {parts.path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"accept: text/event-stream\r\ncontent-length: {len(body)}\r\n"
            + "".join(f"{line}\r\n" for line in headers) + "\r\n").encode()
    loop = asyncio.get_running_loop()
    protocol: _Exchange | None = None
    ttfc: list[float] = []
    total: list[float] = []
    events: list[int] = []
    errors: dict[str, int] = {}
    sent = 0
    deadline: float | None = None if warmup else time.perf_counter() + duration
    hard_deadline = time.perf_counter() + 2 * duration + 30  # warm-up included, whatever happens
    while sent < limit + warmup and time.perf_counter() < min(deadline or hard_deadline, hard_deadline):
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            _, protocol = await loop.create_connection(_Exchange, host, port)
        done = protocol.begin()
        started = time.perf_counter()
        assert protocol.transport is not None
        protocol.transport.write(head + body)
        sent += 1
        try:
            await asyncio.wait_for(done, timeout)
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if protocol.transport is not None:
                protocol.transport.close()
            protocol = None
            continue
        ended = time.perf_counter()
        if sent == warmup:
            deadline = ended + duration
        if protocol.status != 200 or protocol.first is None or not protocol.saw_done:
            key = f"status {protocol.status}" if protocol.status != 200 else "no [DONE]"
            errors[key] = errors.get(key, 0) + 1
            continue
        if sent > warmup:
            ttfc.append((protocol.first - started) * 1e6)
            total.append((ended - started) * 1e6)
            events.append(protocol.events)
    if protocol is not None and protocol.transport is not None:
        protocol.transport.close()
    return {"requests": len(total), "errors": errors, "ttfc_us": _percentiles(ttfc), "total_us": _percentiles(total),
            "events_per_stream": sorted(events)[len(events) // 2] if events else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    with open(args.body_file, "rb") as file:
        body = file.read()
    result = uvloop.run(run(args.url, body, args.header, args.duration, args.requests, args.warmup, args.timeout))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
