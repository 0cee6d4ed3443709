"""``otel-gateway logs``: the table and JSON lines, the filters, the store from ``--store``, from the
config or the default, and the errors (bad filter: exit 2, store unavailable: exit 1)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from stores import ids, postgres_schema, record, sqlite_url

from otel_gateway.cli import main
from otel_gateway.warehouse._postgres import PostgresStore
from otel_gateway.warehouse._sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[2]


def seed(path: Path, records: list[dict[str, Any]]) -> str:
    async def write() -> None:
        store = SQLiteStore(path)
        await store.write(records)
        await store.aclose()

    asyncio.run(write())
    return f"sqlite:///{path}" if not path.is_absolute() else f"sqlite:///{path}".replace(":///", ":////", 1)


SAMPLE = [
    record("req-1", 1, model="demo/echo", user="user:alice", status="success", latency=1234, cost=0.0456,
           tokens=(48, 865), metadata={"env": "prod"}),
    record("req-2", 2, model="openai-main/gpt-4o", user="user:bob", status="error", latency=87, cost=0,
           tokens=(0, 0)),
    record("req-3", 3, model="demo/echo", user="user:bob", project="proj_b", status="success", latency=5,
           cost=0.0000021, tokens=(3, 4), metadata={"env": "dev"}),
]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return seed(tmp_path / "logs.db", SAMPLE)


def test_table(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--store", url]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "TIME (UTC)           STATUS   MODEL               USER        LATENCY MS  TOKENS      COST  ID",
        "2025-03-05 16:03:00  success  demo/echo           user:bob             5       7  0.000002  req-3",
        "2025-03-05 16:02:00  error    openai-main/gpt-4o  user:bob            87       0         0  req-2",
        "2025-03-05 16:01:00  success  demo/echo           user:alice        1234     913    0.0456  req-1",
    ]
    assert err == ""


def test_json_lines_are_the_records(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--store", url, "--json"]) == 0
    out, _ = capsys.readouterr()
    assert [orjson.loads(line) for line in out.splitlines()] == SAMPLE[::-1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["--model", "demo/echo"], ["req-3", "req-1"], id="model"),
        pytest.param(["--user", "user:bob"], ["req-3", "req-2"], id="user"),
        pytest.param(["--status", "error"], ["req-2"], id="status"),
        pytest.param(["--project", "proj_b"], ["req-3"], id="project"),
        pytest.param(["--metadata", "env=prod"], ["req-1"], id="metadata"),
        pytest.param(["--metadata", "env=prod", "--metadata", "env=dev"], [], id="metadata-and"),
        pytest.param(["--since", "2025-03-05T16:02:00Z"], ["req-3", "req-2"], id="since-iso"),
        pytest.param(["--since", "2025-03-05T11:02:00-05:00", "--until", "2025-03-05T16:03:00"], ["req-2"],
                     id="since-offset-until-naive"),
        pytest.param(["--since", "1h"], [], id="since-relative"),
        pytest.param(["--model", "demo/echo", "--user", "user:bob"], ["req-3"], id="model-and-user"),
    ],
)
def test_filters(url: str, args: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--store", url, "--json", *args]) == 0
    out, _ = capsys.readouterr()
    assert ids([orjson.loads(line) for line in out.splitlines()]) == expected


def test_pages_with_limit_and_cursor(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--store", url, "--json", "--limit", "2"]) == 0
    out, err = capsys.readouterr()
    assert ids([orjson.loads(line) for line in out.splitlines()]) == ["req-3", "req-2"]
    assert err.startswith("more records: add --cursor ")
    cursor = err.split()[-1]
    assert main(["logs", "--store", url, "--json", "--limit", "2", "--cursor", cursor]) == 0
    out, err = capsys.readouterr()
    assert ids([orjson.loads(line) for line in out.splitlines()]) == ["req-1"]
    assert err == ""


def test_nothing_found_says_so_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = sqlite_url(tmp_path / "absent.db")
    assert main(["logs", "--store", url]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"no log records match in {url}\n"
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--since", "yesterday"], "--since: 'yesterday' is neither a duration", id="since"),
        pytest.param(["--status", "ok"], "--status: 'ok' is not one of success, error, rate_limited, cancelled",
                     id="status"),
        pytest.param(["--metadata", "env"], "--metadata: 'env' is not key=value", id="metadata"),
        pytest.param(["--limit", "0"], "--limit: must be between 1 and 1000", id="limit"),
        pytest.param(["--cursor", "garbage"], "--cursor: not a cursor returned by this endpoint", id="cursor"),
    ],
)
def test_bad_filters_exit_2(url: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--store", url, *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"otel-gateway logs: {message}")


def test_unsupported_store_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--store", "mysql://user:secret@db/x"]) == 2
    _, err = capsys.readouterr()
    assert "unsupported store URL" in err
    assert "secret" not in err


def test_unreachable_store_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--store", "postgresql://nobody:pw@127.0.0.1:1/none"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("otel-gateway logs: querying PostgreSQL failed")
    assert "pw" not in err


def test_store_from_the_logging_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    url = seed(tmp_path / "configured.db", SAMPLE[:1])
    config = tmp_path / "gw.yaml"
    config.write_text("type: gateway-providers-config\nproviders:\n  - {name: demo, type: mock, models: [echo]}\n"
                      f"---\ntype: gateway-logging-config\nstore: {url}\n")
    assert main(["logs", "--config", str(config), "--json"]) == 0
    out, _ = capsys.readouterr()
    assert ids([orjson.loads(line) for line in out.splitlines()]) == ["req-1"]


@pytest.mark.parametrize("store", ["none", "memory"])
def test_a_config_without_a_readable_store_exits_1(tmp_path: Path, store: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("type: gateway-providers-config\nproviders:\n  - {name: demo, type: mock, models: [echo]}\n"
                      f"---\ntype: gateway-logging-config\nstore: {store}\n")
    assert main(["logs", "--config", str(config)]) == 1
    _, err = capsys.readouterr()
    assert err == f"otel-gateway logs: the configured store is {store!r}: no records to read\n"


def test_default_store_is_in_the_working_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seed(Path("otel-gateway.db"), SAMPLE[1:2])
    assert main(["logs", "--json"]) == 0
    out, _ = capsys.readouterr()
    assert ids([orjson.loads(line) for line in out.splitlines()]) == ["req-2"]


def test_a_bad_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("type: gateway-nope\n")
    assert main(["logs", "--config", str(config)]) == 1
    _, err = capsys.readouterr()
    assert "unknown document type 'gateway-nope'" in err


async def test_postgres_store(capsys: pytest.CaptureFixture[str]) -> None:
    # The CLI's store lives in the default table; a schema of the test's own keeps it apart.
    async with postgres_schema("test_cli") as (dsn, _, schema):
        url = f"{dsn}?search_path={schema}"
        store = PostgresStore(url)
        await store.write(SAMPLE)
        await store.aclose()
        code = await asyncio.to_thread(main, ["logs", "--store", url, "--json", "--model", "demo/echo"])
        assert code == 0
        out, _ = capsys.readouterr()
        assert ids([orjson.loads(line) for line in out.splitlines()]) == ["req-3", "req-1"]


def test_the_installed_command(url: str) -> None:
    result = subprocess.run([sys.executable, "-m", "otel_gateway", "logs", "--store", url, "--status", "error"],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].endswith("req-2")
