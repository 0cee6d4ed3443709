"""Config reload: POST /admin/reload for admin keys, SIGHUP for the operator; a bad config is
refused and the old one kept; a request in flight finishes on the config it started with."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_port, serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config

ADMIN, USER = "sk-admin-reload-0001", "sk-user-reload-0001"


def write_config(directory: Path, models: list[str], delay_ms: int = 0) -> None:
    (directory / "gateway.yaml").write_text(f"""
type: gateway-providers-config
providers:
  - name: demo
    type: mock
    models: {models}
    mock: {{delay_ms: {delay_ms}}}
---
type: gateway-auth-config
keys:
  - {{name: ops, key: {ADMIN}, subject: "user:ops", tenant: acme, admin: true}}
  - {{name: dev, key: {USER}, subject: "user:dev", tenant: acme}}
""")


def model_ids(url: str, key: str = USER) -> list[str]:
    response = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {key}"})
    return [model["id"] for model in response.json()["data"]]


def reload(url: str, key: str) -> httpx.Response:
    return httpx.post(url + "/admin/reload", headers={"authorization": f"Bearer {key}"})


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    write_config(tmp_path, ["echo"])
    return tmp_path


@pytest.fixture
def gateway(config_dir: Path) -> Iterator[str]:
    with serve(create_app(load_config(config_dir))) as url:
        yield url


def test_admin_reload_swaps_the_config(gateway: str, config_dir: Path) -> None:
    write_config(config_dir, ["echo", "echo2"])
    response = reload(gateway, ADMIN)
    assert response.status_code == 200
    assert response.json() == {"status": "reloaded", "sources": [str(config_dir / "gateway.yaml")],
                               "providers": ["demo"]}
    assert model_ids(gateway) == ["demo/echo", "demo/echo2"]


def test_reload_needs_an_admin_key(gateway: str, config_dir: Path) -> None:
    write_config(config_dir, ["echo", "echo2"])
    response = reload(gateway, USER)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "admin_required"
    assert model_ids(gateway) == ["demo/echo"]


def test_a_bad_config_is_refused_and_the_old_one_kept(gateway: str, config_dir: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="otel_gateway")
    source = config_dir / "gateway.yaml"
    source.write_text("type: gateway-providers-config\nproviders:\n  - name: x\n"
                      "  - {name: y, type: mock, models: [a], bogus: 1}\n")
    response = reload(gateway, ADMIN)
    assert response.status_code == 400
    issues = [f"{source}: providers[0].type: Field required", f"{source}: providers[0].models: Field required",
              f"{source}: providers[1].bogus: unknown key"]
    assert response.json()["error"] == {
        "message": "The new configuration was refused; the current one stays. " + "; ".join(issues),
        "type": "invalid_request_error", "code": "invalid_config", "param": None}
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("otel_gateway")] == [
        ("otel_gateway.admin", "ERROR", "configuration reload refused; keeping the current one:\n" + "\n".join(issues))]
    assert model_ids(gateway) == ["demo/echo"]


def test_a_request_in_flight_finishes_on_its_config(config_dir: Path) -> None:
    write_config(config_dir, ["slow"], delay_ms=1500)
    with serve(create_app(load_config(config_dir))) as url, httpx.Client(base_url=url, timeout=10) as client:
        result: dict[str, Any] = {}
        body = {"model": "demo/slow", "messages": [{"role": "user", "content": "still here"}]}
        headers = {"authorization": f"Bearer {USER}"}
        thread = threading.Thread(target=lambda: result.update(
            response=client.post("/v1/chat/completions", json=body, headers=headers)))
        thread.start()
        time.sleep(0.3)  # the request has begun (and taken its config) well before the mock answers at 1.5 s
        write_config(config_dir, ["fast"])
        assert reload(url, ADMIN).status_code == 200
        thread.join()
        assert result["response"].status_code == 200
        assert result["response"].json()["choices"][0]["message"]["content"] == "still here"
        assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 404


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_sighup_reloads_the_served_config(config_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("log") / "gateway.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "otel_gateway", "serve", "--config", str(config_dir), "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "ENABLE_OTEL_TRACING": "false"},
        )
    try:
        wait_until(lambda: httpx.get(url + "/healthz").status_code == 200)
        write_config(config_dir, ["echo", "echo3"])
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: model_ids(url) == ["demo/echo", "demo/echo3"])
        (config_dir / "gateway.yaml").write_text("not: [valid")
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: b"configuration reload refused; keeping the current one" in log.read_bytes())
        assert model_ids(url) == ["demo/echo", "demo/echo3"]
    finally:
        process.terminate()
        process.wait(timeout=10)
