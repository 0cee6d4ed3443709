"""Liveness and readiness: /healthz answers while the process lives, /readyz only while the
request-log store answers too (records spool meanwhile, but the replica is not ready). /readyz also
reports how the request log fares, ``request_log``: its counters, what waits in memory and in the
spool, the kind of store; records spooled or dropped are reported there, never by a 503."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config, load_config_text
from otel_gateway.warehouse._memory import MemoryStore
from otel_gateway.warehouse._store import StoreUnavailable

REQUESTS = 5


class UnreachableStore(MemoryStore):
    async def ping(self) -> bool:
        return False

    async def write(self, records: list[dict[str, Any]]) -> None:
        raise StoreUnavailable("unreachable in this test")


class RefusingStore(MemoryStore):
    """Answers a ping but takes no write: what a locked or read-only database looks like."""

    async def write(self, records: list[dict[str, Any]]) -> None:
        raise StoreUnavailable("refusing writes in this test")


def request_log(store: str, **counters: Any) -> dict[str, Any]:
    """The ``request_log`` of a /readyz body: every counter 0 unless given."""
    return {"store": store, "submitted": 0, "written": 0, "spooled": 0, "replayed": 0, "dropped": 0,
            "sink_errors": 0, "queued": 0, "spool_pending": False, "spool_bytes": 0, **counters}


def config_text(logging: str) -> str:
    return f"""\
type: gateway-providers-config
providers: [{{name: demo, type: mock, models: [echo]}}]
---
type: gateway-logging-config
flush_interval_ms: 10
{logging}
"""


def probe(app: Any) -> tuple[httpx.Response, httpx.Response]:
    with serve(app) as url:
        return httpx.get(url + "/healthz"), httpx.get(url + "/readyz")


def chat(url: str, count: int = REQUESTS) -> None:
    """``count`` chat completions through the real openai SDK."""
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=10) as sdk:
        for i in range(count):
            answer = sdk.chat.completions.create(model="demo/echo", messages=[{"role": "user", "content": f"hi {i}"}])
            assert answer.choices[0].message.content


def ready_when(url: str, done: Callable[[dict[str, Any]], bool], timeout: float = 15) -> httpx.Response:
    """/readyz, asked again until ``done(request_log)`` (the worker writes batches in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url + "/readyz", timeout=10)
        if done(response.json()["request_log"]) or time.monotonic() > deadline:
            return response
        time.sleep(0.02)


def without_spool_bytes(body: dict[str, Any]) -> dict[str, Any]:
    """The body with ``spool_bytes`` checked to be positive and set to 0, for an exact comparison."""
    assert body["request_log"]["spool_bytes"] > 0, body
    return {**body, "request_log": {**body["request_log"], "spool_bytes": 0}}


def test_ready_with_the_default_config_and_its_sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default store and spool are relative to the working directory
    health, ready = probe(create_app(load_config(None)))
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "request_log": request_log("sqlite")})


def test_counts_requests_through_the_openai_sdk_until_written(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/logs.db".replace(":///", ":////", 1)
    config = load_config_text(config_text(f'store: "{store}"\nspool_dir: "{tmp_path}/spool"'), environ={})
    with serve(create_app(config)) as url:
        chat(url)
        ready = ready_when(url, lambda log: log["written"] == REQUESTS)
    assert (ready.status_code, ready.json()) == (
        200, {"status": "ready", "request_log": request_log("sqlite", submitted=REQUESTS, written=REQUESTS)})


def test_a_refusing_store_is_ready_and_its_records_are_reported_spooled(tmp_path: Path) -> None:
    config = load_config_text(config_text(f'spool_dir: "{tmp_path}/spool"'), environ={})
    with serve(create_app(config, log_store=RefusingStore())) as url:
        chat(url)
        ready = ready_when(url, lambda log: log["spooled"] == REQUESTS)
    assert ready.status_code == 200  # the store answers its ping: ready, though it takes no write
    assert without_spool_bytes(ready.json()) == {"status": "ready", "request_log": request_log(
        "memory", submitted=REQUESTS, spooled=REQUESTS, spool_pending=True)}


def test_not_ready_while_the_store_is_unreachable(tmp_path: Path) -> None:
    config = load_config_text(config_text(f'spool_dir: "{tmp_path}/spool"'), environ={})
    app = create_app(config, log_store=UnreachableStore())
    health, ready = probe(app)
    assert health.status_code == 200
    assert (ready.status_code, ready.json()) == (
        503, {"status": "not_ready", "store": "unreachable", "request_log": request_log("memory")})
    with serve(create_app(config, log_store=UnreachableStore())) as url:
        chat(url)
        ready = ready_when(url, lambda log: log["spooled"] == REQUESTS)
    assert ready.status_code == 503
    assert without_spool_bytes(ready.json()) == {"status": "not_ready", "store": "unreachable", "request_log":
                                                 request_log("memory", submitted=REQUESTS, spooled=REQUESTS,
                                                             spool_pending=True)}


def test_records_lost_when_the_spool_fails_too_are_reported_not_made_a_503(tmp_path: Path) -> None:
    (tmp_path / "spool").write_text("a file where the spool directory should be")
    config = load_config_text(config_text(f'spool_dir: "{tmp_path}/spool"'), environ={})
    with serve(create_app(config, log_store=RefusingStore())) as url:
        chat(url)
        ready = ready_when(url, lambda log: log["dropped"] == REQUESTS)
    assert (ready.status_code, ready.json()) == (
        200, {"status": "ready", "request_log": request_log("memory", submitted=REQUESTS, dropped=REQUESTS)})


LOCK_HOLDER = """\
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@pytest.fixture
def locked_sqlite(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts another process that holds the SQLite file's write lock until told (a backup would)."""
    holders: list[subprocess.Popen[bytes]] = []

    def lock() -> subprocess.Popen[bytes]:
        holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "logs.db")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        return holder

    yield lock
    for holder in holders:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_locked_sqlite_store_answers_its_ping_so_spooling_shows_in_the_body_only(
    tmp_path: Path, locked_sqlite: Callable[[], subprocess.Popen[bytes]],
) -> None:
    """A real outage: SQLite's ``SELECT 1`` needs no lock, so the ping succeeds while every write
    fails (``database is locked``, after the 2 s busy timeout); then the spool is replayed."""
    store = f"sqlite:///{tmp_path}/logs.db".replace(":///", ":////", 1)
    config = load_config_text(config_text(f'store: "{store}"\nspool_dir: "{tmp_path}/spool"'), environ={})
    with serve(create_app(config)) as url:
        chat(url, 1)  # the database and its table exist before the lock is taken
        ready_when(url, lambda log: log["written"] == 1)
        holder = locked_sqlite()
        chat(url)
        ready = ready_when(url, lambda log: log["spooled"] == REQUESTS)
        assert ready.status_code == 200
        assert without_spool_bytes(ready.json()) == {"status": "ready", "request_log": request_log(
            "sqlite", submitted=REQUESTS + 1, written=1, spooled=REQUESTS, spool_pending=True)}
        assert holder.stdin is not None
        holder.stdin.write(b"go\n")
        holder.stdin.flush()
        assert holder.wait(timeout=10) == 0
        ready = ready_when(url, lambda log: log["replayed"] == REQUESTS and not log["spool_pending"], timeout=30)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "request_log": request_log(
        "sqlite", submitted=REQUESTS + 1, written=REQUESTS + 1, spooled=REQUESTS, replayed=REQUESTS)})


def test_ready_without_a_store() -> None:
    config = load_config_text(config_text("store: none"), environ={})
    with serve(create_app(config)) as url:
        assert httpx.get(url + "/readyz").json() == {"status": "ready", "request_log": request_log("none")}
        chat(url)
        ready = ready_when(url, lambda log: log["submitted"] == REQUESTS)
    assert (ready.status_code, ready.json()) == (
        200, {"status": "ready", "request_log": request_log("none", submitted=REQUESTS)})


def test_the_store_is_named_by_kind_never_by_its_url() -> None:
    """An unreachable PostgreSQL server (nothing listens on port 1): 503, and neither its address
    nor its password in the body."""
    config = load_config_text(config_text('store: "postgresql://gateway:pw-canary-31337@127.0.0.1:1/gateway"'),
                              environ={})
    _, ready = probe(create_app(config))
    assert (ready.status_code, ready.json()) == (
        503, {"status": "not_ready", "store": "unreachable", "request_log": request_log("postgresql")})
    assert "31337" not in ready.text and "127.0.0.1" not in ready.text


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
