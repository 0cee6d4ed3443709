"""Liveness and readiness: /healthz answers while the process lives, /readyz only while the
request-log store answers too (records spool meanwhile, but the replica is not ready)."""

from __future__ import annotations

from typing import Any

import httpx
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config, load_config_text
from otel_gateway.warehouse._memory import MemoryStore
from otel_gateway.warehouse._store import StoreUnavailable


class UnreachableStore(MemoryStore):
    async def ping(self) -> bool:
        return False

    async def write(self, records: list[dict[str, Any]]) -> None:
        raise StoreUnavailable("unreachable in this test")


def probe(app: Any) -> tuple[httpx.Response, httpx.Response]:
    with serve(app) as url:
        return httpx.get(url + "/healthz"), httpx.get(url + "/readyz")


def test_ready_with_the_default_config_and_its_sqlite_store() -> None:
    health, ready = probe(create_app(load_config(None)))
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


def test_not_ready_while_the_store_is_unreachable() -> None:
    health, ready = probe(create_app(load_config(None), log_store=UnreachableStore()))
    assert health.status_code == 200
    assert (ready.status_code, ready.json()) == (503, {"status": "not_ready", "store": "unreachable"})


def test_ready_without_a_store() -> None:
    config = load_config_text("""
type: gateway-providers-config
providers: [{name: demo, type: mock, models: [echo]}]
---
type: gateway-logging-config
store: none
""")
    _, ready = probe(create_app(config))
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


def test_probes_need_no_key_when_auth_is_configured() -> None:
    config = load_config_text("""
type: gateway-providers-config
providers: [{name: demo, type: mock, models: [echo]}]
---
type: gateway-auth-config
keys: [{name: k, key: sk-probe-key-0001, subject: "user:k"}]
""")
    health, ready = probe(create_app(config))
    assert (health.status_code, ready.status_code) == (200, 200)
