"""``otel-gateway check-config``: exit 0 and a summary, or exit 1 and every error line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from uvicorn.logging import AccessFormatter

from otel_gateway import cli
from otel_gateway.cli import AccessLogRedaction, main
from otel_gateway.config import DOCUMENT_TYPES, GatewayConfig, load_config_text
from otel_gateway.redaction import Redactor
from otel_gateway.warehouse import Exchange
from otel_gateway.warehouse._record import RecordBuilder

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


ACCESS_FORMAT = '%s - "%s %s HTTP/%s" %d'
"""uvicorn's access log call (``h11_impl``, ``httptools_impl``): client, method, path?query, version, status."""


def access_record(path: str) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, "h11_impl.py", 477, ACCESS_FORMAT,
                             ("127.0.0.1:51234", "POST", path, "1.1", 200), None)


def logging_config(redact: str) -> GatewayConfig:
    return load_config_text("type: gateway-providers-config\nproviders: [{name: d, type: mock, models: [e]}]\n"
                            f"---\ntype: gateway-logging-config\nstore: none\nredact_headers: [{redact}]\n",
                            environ={})


def test_the_access_log_filter_redacts_the_query_by_the_request_logs_rule() -> None:
    configs = [logging_config("x-tenant-ref")]
    redaction = AccessLogRedaction(lambda: Redactor.for_config(configs[-1]))
    query = "key=sk-1&API_KEY=a&X-Tenant-Ref=t&my%5Ftoken=m&api-key=h&keep=yes&flag"
    record = access_record(f"/v1/chat/completions?{query}")
    assert redaction.filter(record) is True
    redacted = "key=[REDACTED]&API_KEY=[REDACTED]&X-Tenant-Ref=[REDACTED]&my%5Ftoken=[REDACTED]" \
               "&api-key=[REDACTED]&keep=yes&flag"
    assert record.getMessage() == f'127.0.0.1:51234 - "POST /v1/chat/completions?{redacted} HTTP/1.1" 200'
    assert AccessFormatter('%(client_addr)s "%(request_line)s" %(status_code)s', use_colors=False).format(record) \
        == f'127.0.0.1:51234 "POST /v1/chat/completions?{redacted} HTTP/1.1" 200 OK'
    built = RecordBuilder(configs[-1]).build(Exchange(request_id="r", endpoint="/v1/chat/completions", query=query))
    assert built["attributes"]["query"] == redacted  # the request log's record of the same request

    configs.append(logging_config("x-other"))  # a reload
    again = access_record(f"/v1/chat/completions?{query}")
    redaction.filter(again)
    assert again.args == ("127.0.0.1:51234", "POST", "/v1/chat/completions?" + redacted.replace(
        "X-Tenant-Ref=[REDACTED]", "X-Tenant-Ref=t"), "1.1", 200)


@pytest.mark.parametrize("args", [
    pytest.param(("127.0.0.1:51234", "GET", "/v1/models", "1.1", 200), id="no-query"),
    pytest.param(("something else",), id="another-shape"),
])
def test_the_access_log_filter_leaves_other_records_alone(args: tuple[object, ...]) -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "x.py", 1, "%s " * len(args), args, None)
    assert AccessLogRedaction(lambda: Redactor.for_config(logging_config("x-other"))).filter(record) is True
    assert record.args == args


def test_the_served_app_redacts_the_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENABLE_OTEL_TRACING", raising=False)
    access = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(access, "filters", [])
    monkeypatch.setattr(cli, "_tune_gc", lambda: None)
    cli._app(logging_config("x-tenant-ref"))
    cli._app(logging_config("x-tenant-ref"))  # another app replaces the first one's filter
    (redaction,) = access.filters
    record = access_record("/v1/embeddings?x-tenant-ref=t")
    assert isinstance(redaction, AccessLogRedaction) and redaction.filter(record)
    assert record.args[2] == "/v1/embeddings?x-tenant-ref=[REDACTED]"
