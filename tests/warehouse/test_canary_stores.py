"""Canary keys over the real stores and every endpoint: a client's gateway key (sent as
``Authorization``, ``x-api-key``, ``api-key``, a configured header and in the query string) and the
providers' API keys (echoed back by a misbehaving upstream in its error bodies) appear nowhere: not
in the SQLite file (its rows, every column, and the raw bytes of the file and its WAL), not in the
PostgreSQL rows, the JSONL file, the OTLP log records, the spans, the gateway's own log lines or the
bodies clients get, for chat (plain and streamed), embeddings, moderations, ``/v1/messages``, files,
batches and a passed-through path."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from stores import postgres_schema, running_gateway, sqlite_url

CLIENT_SECRET = os.urandom(12).hex()
OPENAI_SECRET = os.urandom(12).hex()
ANTHROPIC_SECRET = os.urandom(12).hex()
CLIENT_KEY = f"sk-canary-client-{CLIENT_SECRET}"
OPENAI_KEY = f"sk-canary-openai-{OPENAI_SECRET}"
ANTHROPIC_KEY = f"sk-ant-canary-{ANTHROPIC_SECRET}"
SECRETS = (CLIENT_SECRET, OPENAI_SECRET, ANTHROPIC_SECRET)
CLIENT_SIDE_LOGGERS = ("httpx", "httpcore")


def echoing_upstream() -> Starlette:
    """A provider that refuses every request and quotes the credentials it was sent, as a
    misconfigured or hostile upstream might."""

    async def handle(request: Request) -> JSONResponse:
        sent = [request.headers.get(h, "") for h in ("authorization", "x-api-key", "api-key")]
        return JSONResponse(status_code=401, content={"error": {
            "message": f"Incorrect API key provided: {' '.join(s for s in sent if s)} on {request.url.path}",
            "type": "invalid_request_error", "code": "invalid_api_key"}})

    return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "DELETE"])])


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve(echoing_upstream()) as url:
        yield url


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@contextlib.asynccontextmanager
async def store(kind: str, tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    """(store URL, a coroutine function returning every row, all columns, as text)."""
    if kind == "sqlite":
        path = tmp_path / "logs.db"

        async def sqlite_rows() -> str:
            conn = sqlite3.connect(path)
            try:
                rows = conn.execute("SELECT * FROM request_logs").fetchall()
            finally:
                conn.close()
            raw = b"".join(p.read_bytes() for p in tmp_path.glob("logs.db*"))  # the file, its WAL and SHM
            return json.dumps(rows) + raw.decode("latin-1")

        yield sqlite_url(path), sqlite_rows
        return
    async with postgres_schema("test_canary") as (dsn, admin, schema):

        async def postgres_rows() -> str:
            rows = await admin.fetch(f"SELECT row_to_json(t)::text AS row FROM {schema}.request_logs t")
            return "\n".join(row["row"] for row in rows)

        yield f"{dsn}?search_path={schema}", postgres_rows


def config_text(upstream: str, store_url: str, tmp_path: Path) -> str:
    return f"""\
type: gateway-providers-config
providers:
  - {{name: oai, type: openai, base_url: "{upstream}/v1", api_key: {OPENAI_KEY},
     models: [gpt-4o, text-embedding-3-small, omni-moderation-latest]}}
  - {{name: claude, type: anthropic, base_url: "{upstream}", api_key: {ANTHROPIC_KEY}, models: [sonnet]}}
  - {{name: demo, type: mock, models: [echo]}}
---
type: gateway-auth-config
keys:
  - {{name: canary, key: {CLIENT_KEY}, subject: "user:canary", tenant: acme}}
---
type: gateway-logging-config
store: "{store_url}"
spool_dir: "{tmp_path / 'spool'}"
jsonl: "{tmp_path / 'records.jsonl'}"
flush_interval_ms: 10
redact_headers: [x-custom-auth]
"""


CHAT = {"model": "oai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
REQUESTS: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
    ("POST", "/v1/chat/completions", CHAT, {}),
    ("POST", "/v1/chat/completions", {**CHAT, "stream": True}, {}),
    ("POST", "/v1/embeddings", {"model": "oai/text-embedding-3-small", "input": "hi"}, {}),
    ("POST", "/v1/moderations", {"model": "oai/omni-moderation-latest", "input": "hi"}, {}),
    ("POST", "/v1/messages", {"model": "claude/sonnet", "max_tokens": 10, "messages": CHAT["messages"]}, {}),
    ("GET", "/v1/files", None, {"x-gateway-provider": "oai"}),
    ("POST", "/v1/batches", {"input_file_id": "file-1", "endpoint": "/v1/chat/completions",
                             "completion_window": "24h"}, {"x-gateway-provider": "oai"}),
    ("POST", "/v1/responses", {"model": "gpt-4o", "input": "hi"}, {"x-gateway-provider": "oai"}),
    ("POST", "/v1/messages/count_tokens", {"model": "claude-sonnet-4-5", "messages": CHAT["messages"]},
     {"x-gateway-provider": "claude"}),
    ("POST", "/v1/chat/completions", {**CHAT, "model": "demo/echo", "stream": True}, {}),
]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_canary_keys_appear_in_no_store_row_and_no_sink(
    kind: str, upstream_url: str, tmp_path: Path, tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    log_exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    credentials = {"authorization": f"Bearer {CLIENT_KEY}", "x-api-key": CLIENT_KEY, "api-key": CLIENT_KEY,
                   "x-custom-auth": CLIENT_KEY}
    bodies: list[str] = []
    statuses: list[int] = []
    async with store(kind, tmp_path) as (url, rows):
        async with running_gateway(config_text(upstream_url, url, tmp_path), timeout=10,
                                   tracer_provider=tracer_provider, logger_provider=logger_provider) as (client, _):
            for method, path, body, headers in REQUESTS:
                response = await client.request(method, path, json=body, headers={**credentials, **headers},
                                                params={"key": CLIENT_KEY, "keep": "yes"})
                statuses.append(response.status_code)
                bodies.append(response.text + json.dumps(dict(response.headers)))
            refused = await client.post("/v1/chat/completions", json=CHAT,
                                        headers={"authorization": f"Bearer {CLIENT_KEY}x"})
            statuses.append(refused.status_code)
            bodies.append(refused.text)
        stored = await rows()  # the app has shut down: every record is written
    # the upstream refused all but the mock's (its 401 is the gateway's key: 502); the refused gateway key is
    # logged too ...
    assert statuses == [502] * 9 + [200, 401], statuses
    assert "[REDACTED]" in stored
    jsonl = (tmp_path / "records.jsonl").read_text()
    records = [json.loads(line) for line in jsonl.splitlines()]
    assert len(records) == len(REQUESTS) + 1
    assert (records[-1]["attributes"]["user_id"], records[-1]["attributes"]["metadata"]["http_status"]) == (
        "user:anonymous", 401)
    assert all(r["attributes"]["id"] in stored for r in records)
    assert {r["attributes"]["endpoint"] for r in records} >= {p for _, p, _, _ in REQUESTS}
    otlp = log_exporter.get_finished_logs()
    assert len(otlp) == len(records)
    spans = span_exporter.get_finished_spans()
    assert len(spans) >= len(records)
    gateway_lines = [r.getMessage() + (r.exc_text or "") for r in caplog.records
                     if not r.name.startswith(CLIENT_SIDE_LOGGERS)]
    # ... and no sink holds any of the keys
    assert {
        f"{kind} rows": leaks(stored),
        "jsonl file": leaks(jsonl),
        "otlp logs": leaks("\n".join(item.to_json() for item in otlp)),
        "spans": leaks("\n".join(span.to_json() for span in spans)),
        "gateway log lines": leaks("\n".join(gateway_lines)),
        "client bodies and headers": leaks("\n".join(bodies)),
    } == {sink: [] for sink in (f"{kind} rows", "jsonl file", "otlp logs", "spans", "gateway log lines",
                                "client bodies and headers")}
    logger_provider.shutdown()
