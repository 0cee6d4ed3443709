"""``GET /api/logs`` through the whole app: filters, pages, the list shape, admin-only under auth
(403, OpenAI error shape), 400 for each bad filter, 503 when the store is down. The store named in
the config is seeded directly: SQLite in a temporary directory, PostgreSQL in a schema of its own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stores import ids, record, running_gateway, sqlite_url, store_url

from otel_gateway.warehouse._store import store_for_url

PROVIDERS = "type: gateway-providers-config\nproviders:\n  - {name: demo, type: mock, models: [echo]}\n"
AUTH = """\
---
type: gateway-auth-config
keys:
  - {name: ops, key: admin-key, subject: "user:ops", tenant: acme, admin: true}
  - {name: alice, key: alice-key, subject: "user:alice", tenant: acme}
"""

SAMPLE = [
    record("r1", 1, model="demo/echo", user="user:alice", project="proj_a", metadata={"env": "prod"}),
    record("r2", 2, model="demo/echo", user="user:bob", project="proj_b", status="error", metadata={"env": "dev"}),
    record("r3", 3, model="openai-main/gpt-4o", user="user:alice", project="proj_b", metadata={"env": "prod"}),
    record("r4", 4, model="demo/echo", user="user:alice", project="proj_a", status="rate_limited"),
]


def config_text(store: str, tmp_path: Path, *, auth: bool = False) -> str:
    return (PROVIDERS + f"---\ntype: gateway-logging-config\nstore: {store}\nspool_dir: {tmp_path / 'spool'}\n"
            + (AUTH if auth else ""))


@contextlib.asynccontextmanager
async def gateway(text: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_gateway(text, capture_content=True) as (client, _):
        yield client


async def seed(url: str, records: list[dict[str, Any]]) -> None:
    store = store_for_url(url)
    await store.write(records)
    await store.aclose()


@pytest.fixture(params=["sqlite", "postgres"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with store_url(request.param, tmp_path, prefix="test_api") as url:
        await seed(url, SAMPLE)
        async with gateway(config_text(url, tmp_path)) as client:
            yield client


async def test_the_list_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/logs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {"object": "list", "data": SAMPLE[::-1], "has_more": False, "next_cursor": None}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("model=demo/echo", ["r4", "r2", "r1"], id="model"),
        pytest.param("user=user:alice", ["r4", "r3", "r1"], id="user"),
        pytest.param("project=proj_b", ["r3", "r2"], id="project"),
        pytest.param("status=error", ["r2"], id="status"),
        pytest.param("metadata.env=prod", ["r3", "r1"], id="metadata"),
        pytest.param("metadata.env=prod&project=proj_a", ["r1"], id="metadata-and-project"),
        pytest.param("since=2025-03-05T16:02:00Z", ["r4", "r3", "r2"], id="since"),
        pytest.param("since=2025-03-05T16:02:00Z&until=2025-03-05T16:04:00Z", ["r3", "r2"], id="until"),
        pytest.param("since=1h", [], id="since-relative"),
        pytest.param("model=&user=", ["r4", "r3", "r2", "r1"], id="empty-values-filter-nothing"),
    ],
)
async def test_filters(client: httpx.AsyncClient, query: str, expected: list[str]) -> None:
    response = await client.get(f"/api/logs?{query}")
    assert response.status_code == 200, response.text
    assert ids(response.json()["data"]) == expected


async def test_pages(client: httpx.AsyncClient) -> None:
    first = (await client.get("/api/logs", params={"limit": 3})).json()
    assert ids(first["data"]) == ["r4", "r3", "r2"]
    assert first["has_more"] is True
    second = (await client.get("/api/logs", params={"limit": 3, "cursor": first["next_cursor"]})).json()
    assert (ids(second["data"]), second["has_more"], second["next_cursor"]) == (["r1"], False, None)


@pytest.mark.parametrize(
    ("query", "param", "message"),
    [
        pytest.param("since=yesterday", "since", "'yesterday' is neither a duration", id="since"),
        pytest.param("until=5", "until", "'5' is neither a duration", id="until"),
        pytest.param("limit=many", "limit", "'many' is not a whole number", id="limit-text"),
        pytest.param("limit=5000", "limit", "must be between 1 and 1000", id="limit-range"),
        pytest.param("status=ok", "status", "'ok' is not one of success, error", id="status"),
        pytest.param("cursor=xyz", "cursor", "not a cursor returned by this endpoint", id="cursor"),
        pytest.param("metadata.=x", "metadata", "a metadata filter needs a key", id="metadata-key"),
        pytest.param("models=x", "models", "unknown filter", id="unknown"),
        pytest.param("model=a&model=b", "model", "given more than once", id="repeated"),
    ],
)
async def test_bad_filters_are_400(tmp_path: Path, query: str, param: str, message: str) -> None:
    async with gateway(config_text(sqlite_url(tmp_path / "x.db"), tmp_path)) as client:
        response = await client.get(f"/api/logs?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_filter", param)
    assert error["message"].startswith(f"Invalid filter {param!r}: {message}")


async def test_admin_only_when_auth_is_configured(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "logs.db")
    await seed(url, SAMPLE)
    async with gateway(config_text(url, tmp_path, auth=True)) as client:
        anonymous = await client.get("/api/logs")
        alice = await client.get("/api/logs", headers={"authorization": "Bearer alice-key"})
        ops = await client.get("/api/logs", headers={"authorization": "Bearer admin-key"})
        bad_filter = await client.get("/api/logs?limit=0", headers={"authorization": "Bearer alice-key"})
    assert anonymous.status_code == 401
    assert alice.status_code == 403
    assert alice.json() == {"error": {"message": "Reading the request logs needs an admin key.",
                                      "type": "permission_error", "code": "admin_required", "param": None}}
    assert bad_filter.status_code == 403  # refused before the filters are even looked at
    assert ops.status_code == 200
    assert ids(ops.json()["data"]) == ["r4", "r3", "r2", "r1"]


async def test_an_unreachable_store_is_503(tmp_path: Path) -> None:
    async with gateway(config_text("postgresql://nobody:pw@127.0.0.1:1/none", tmp_path)) as client:
        response = await client.get("/api/logs")
    assert response.status_code == 503
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("service_unavailable_error", "log_store_unavailable")
    assert "pw" not in error["message"]


async def test_no_store_is_404(tmp_path: Path) -> None:
    async with gateway(config_text("none", tmp_path)) as client:
        response = await client.get("/api/logs")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "logging_disabled"


async def test_a_request_through_the_gateway_is_found(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "logs.db")
    async with running_gateway(config_text(url, tmp_path, auth=True), capture_content=True) as (client, gw):
        answer = await client.post("/v1/chat/completions", headers={
            "authorization": "Bearer alice-key", "x-gateway-metadata": '{"env": "prod", "project_id": "proj_z"}'},
            json={"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
        await gw.request_log.flush()
        response = await client.get("/api/logs", params={"user": "user:alice", "metadata.env": "prod",
                                                         "project": "proj_z", "status": "success",
                                                         "model": "demo/echo", "since": "5m"},
                                    headers={"authorization": "Bearer admin-key"})
    (found,) = response.json()["data"]
    assert found["attributes"]["id"] == answer.headers["x-gateway-request-id"]
    assert found["name"] == "ai_gateway_request_log"
