"""A tiny OTLP/HTTP receiver: accepts ``POST /v1/traces`` (protobuf or JSON), answers 200, counts.

It decodes each export (``ExportTraceServiceRequest``) to count spans by name, so the suite can
confirm that the spans of every request arrived. ``GET /stats`` answers the counts as JSON.

    python -m bench.sink --port 4318
"""

from __future__ import annotations

import argparse
import collections
import gzip
import time
import zlib

import orjson
import uvloop
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_EMPTY_ANSWER = ExportTraceServiceResponse().SerializeToString()


class Counts:
    def __init__(self) -> None:
        self.posts = 0
        self.bytes = 0
        self.spans = 0
        self.undecoded = 0
        self.by_name: collections.Counter[str] = collections.Counter()
        self.trace_ids: set[bytes] = set()
        self.first_post: float | None = None
        self.last_post: float | None = None

    def as_json(self) -> dict[str, object]:
        return {"posts": self.posts, "bytes": self.bytes, "spans": self.spans, "undecoded": self.undecoded,
                "traces": len(self.trace_ids), "by_name": dict(self.by_name.most_common(20)),
                "first_post": self.first_post, "last_post": self.last_post}


def build_app(counts: Counts) -> web.Application:
    async def traces(request: web.Request) -> web.Response:
        raw = await request.read()
        counts.posts += 1
        counts.bytes += len(raw)
        counts.last_post = time.time()
        counts.first_post = counts.first_post or counts.last_post
        encoding = request.headers.get("content-encoding", "")
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        if "json" in request.headers.get("content-type", ""):
            _count_json(counts, raw)
            return web.Response(body=b"{}", content_type="application/json")
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(raw)
        except Exception:
            counts.undecoded += 1
            return web.Response(body=_EMPTY_ANSWER, content_type="application/x-protobuf")
        for resource_spans in message.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    counts.spans += 1
                    counts.by_name[span.name] += 1
                    counts.trace_ids.add(span.trace_id)
        return web.Response(body=_EMPTY_ANSWER, content_type="application/x-protobuf")

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(counts.as_json()), content_type="application/json")

    async def other(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"{}", content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    app.router.add_post("/v1/logs", other)
    app.router.add_post("/v1/metrics", other)
    return app


def _count_json(counts: Counts, raw: bytes) -> None:
    try:
        data = orjson.loads(raw)
        for resource_spans in data.get("resourceSpans", []):
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    counts.spans += 1
                    counts.by_name[span.get("name", "")] += 1
                    counts.trace_ids.add(str(span.get("traceId")).encode())
    except Exception:
        counts.undecoded += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(Counts()), host="127.0.0.1", port=args.port, print=None, access_log=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
