"""``otel-gateway check-config``: exit 0 and a summary, or exit 1 and every error line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_gateway.cli import main
from otel_gateway.config import DOCUMENT_TYPES

REPO = Path(__file__).resolve().parents[1]


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("""\
type: gateway-providers-config
providers:
  - {name: demo, type: mock, models: [echo, echo2]}
  - {name: local, type: openai-compatible, base_url: 'http://localhost:8000/v1', models: {m: upstream-m}}
""")
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"ok: 2 provider(s), 3 model(s) from {path}\n"
    assert err == ""


def test_check_config_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text(
        "type: gateway-providers-config\nproviders:\n  - {name: a, type: mock, models: [x]}\n"
    )
    (tmp_path / "b.yaml").write_text("type: gateway-server-config\n")
    assert main(["check-config", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert out == f"ok: 1 provider(s), 1 model(s) from {tmp_path / 'a.yaml'}, {tmp_path / 'b.yaml'}\n"


def test_check_config_prints_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GW_CLI_TEST_KEY", raising=False)
    (tmp_path / "a.yaml").write_text("""\
type: gateway-providers-config
providers:
  - name: demo
    type: mock
    models: [echo]
    extra: true
  - name: oa
    type: openai
    api_key: ${GW_CLI_TEST_KEY}
    models: [gpt-4o]
""")
    (tmp_path / "b.yaml").write_text("type: gateway-nope\n")
    (tmp_path / "c.yaml").write_text("type: [\n")
    assert main(["check-config", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    a, b, c = (tmp_path / name for name in ("a.yaml", "b.yaml", "c.yaml"))
    assert out == ""
    assert err.splitlines() == [
        f"{a}: providers[1].api_key: environment variable GW_CLI_TEST_KEY is not set "
        "(use ${GW_CLI_TEST_KEY:-default} for a default)",
        f"{a}: providers[0].extra: unknown key",
        f"{a}: providers[1]: api_key is required for type openai",
        f"{b}: type: unknown document type 'gateway-nope'; expected one of: {', '.join(sorted(DOCUMENT_TYPES))}",
        f"{c}: line 2, column 1: invalid YAML: expected the node content, but found '<stream end>'",
        "5 error(s)",
    ]


def test_check_config_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "absent")]) == 1
    _, err = capsys.readouterr()
    assert err.splitlines() == [f"{tmp_path / 'absent'}: no such file or directory", "1 error(s)"]


def test_check_config_needs_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["check-config"])
    assert exit_.value.code == 2
    assert "path" in capsys.readouterr().err


def test_python_dash_m_check_config_of_the_shipped_config() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ENABLE_OTEL"))}
    result = subprocess.run(
        [sys.executable, "-m", "otel_gateway", "check-config", "config"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")
    assert "model(s) from config" in result.stdout


def test_the_served_app_tunes_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from otel_gateway import cli
    from otel_gateway.config import load_config_text

    monkeypatch.delenv("ENABLE_OTEL_TRACING", raising=False)
    before = gc.get_threshold()
    try:
        cli._app(load_config_text("type: gateway-providers-config\nproviders: [{name: d, type: mock, models: [e]}]\n",
                                  environ={}))
        assert gc.get_threshold() == cli.GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
