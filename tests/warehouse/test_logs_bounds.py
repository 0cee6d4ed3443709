"""``GET /api/logs`` and ``otel-gateway logs`` answer every input with a result or a 4xx naming the
filter, never a 500, and SQLite and PostgreSQL answer alike: times beyond what both stores can
represent (years 1 to 9999 in UTC) are clamped to it, cursors beyond it and texts PostgreSQL cannot
hold (NUL, lone surrogates) are refused. The issue's examples, then a property over every parameter."""

from __future__ import annotations

import asyncio
import contextlib
import string
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stores import ids, record, running_gateway, store_url

from otel_gateway.cli import main
from otel_gateway.warehouse._store import Position, encode_cursor, store_for_url

SAMPLE = [
    record("r-first", datetime(1, 1, 1, tzinfo=UTC), metadata={"env": "prod"}),
    record("r1", 1, model="demo/echo", user="user:alice", project="proj_a", metadata={"env": "prod"}),
    record("r2", 2, model="demo/echo", user="user:bob", project="proj_b", status="error", metadata={"env": "dev"}),
    record("r3", 3, model="openai-main/gpt-4o", user="user:alice", project="proj_b", metadata={"env": "prod"}),
    record("r-last", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), status="cancelled"),
]
EVERY = ["r-last", "r3", "r2", "r1", "r-first"]

pytestmark = pytest.mark.asyncio(loop_scope="module")


def config_text(store: str, tmp_path: Path) -> str:
    return ("type: gateway-providers-config\nproviders:\n  - {name: demo, type: mock, models: [echo]}\n"
            f"---\ntype: gateway-logging-config\nstore: {store}\nspool_dir: {tmp_path / 'spool'}\n"
            "retention_days: null\n")  # the sample is older than any retention


@contextlib.asynccontextmanager
async def seeded_gateway(kind: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with store_url(kind, tmp_path / kind, prefix="test_bounds") as url:
        store = store_for_url(url)
        await store.write(SAMPLE)
        await store.aclose()
        async with running_gateway(config_text(url, tmp_path / kind)) as (client, _):
            yield client, url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateways(tmp_path_factory: pytest.TempPathFactory
                   ) -> AsyncIterator[dict[str, tuple[httpx.AsyncClient, str]]]:
    """A gateway over each store, seeded with :data:`SAMPLE`: one of each for the module (they are only read)."""
    tmp_path = tmp_path_factory.mktemp("bounds")
    async with seeded_gateway("sqlite", tmp_path) as sqlite, seeded_gateway("postgres", tmp_path) as postgres:
        yield {"sqlite": sqlite, "postgres": postgres}


@pytest.fixture(params=["sqlite", "postgres"])
def client(request: pytest.FixtureRequest, gateways: dict[str, tuple[httpx.AsyncClient, str]]) -> httpx.AsyncClient:
    return gateways[request.param][0]


def refused(param: str, message: str) -> dict[str, Any]:
    return {"error": {"message": f"Invalid filter {param!r}: {message}", "type": "invalid_request_error",
                      "code": "invalid_filter", "param": param}}


NOT_A_CURSOR = "not a cursor returned by this endpoint"


@pytest.mark.parametrize(("query", "expected"), [
    pytest.param({"until": "9999-12-31T23:59:59-14:00"}, EVERY, id="until-in-year-10000-utc"),
    pytest.param({"since": "0001-01-01T00:00:00+14:00"}, EVERY, id="since-in-year-0-utc"),
    pytest.param({"until": "0001-01-01T00:00:00+14:00"}, [], id="until-in-year-0-utc"),
    pytest.param({"since": "9999-12-31T23:59:59-14:00"}, [], id="since-in-year-10000-utc"),
    pytest.param({"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999Z"}, EVERY, id="the-range"),
    pytest.param({"until": "0001-01-01T00:00:00.000001Z"}, ["r-first"], id="until-just-after-the-first"),
    pytest.param({"since": "9999-12-31T23:59:59.000001Z"}, [], id="since-just-after-the-last"),
    pytest.param({"cursor": encode_cursor(Position(253402300799_999999, "~"))}, EVERY, id="cursor-at-the-end"),
])
async def test_times_beyond_the_stores_are_clamped(client: httpx.AsyncClient, query: dict[str, str],
                                                   expected: list[str]) -> None:
    response = await client.get("/api/logs", params=query)

    assert response.status_code == 200, response.text
    assert ids(response.json()["data"]) == expected


@pytest.mark.parametrize(("query", "param", "message"), [
    pytest.param({"cursor": encode_cursor(Position(10**18, "r1"))}, "cursor", NOT_A_CURSOR, id="cursor-time-1e18"),
    pytest.param({"cursor": encode_cursor(Position(-(10**18), "r1"))}, "cursor", NOT_A_CURSOR,
                 id="cursor-time-minus-1e18"),
    pytest.param({"cursor": encode_cursor(Position(2**64 - 1, "r1"))}, "cursor", NOT_A_CURSOR, id="cursor-time-2^64"),
    pytest.param({"cursor": encode_cursor(Position(0, "r\x001"))}, "cursor", NOT_A_CURSOR, id="cursor-id-with-nul"),
    pytest.param({"model": "demo/\x00"}, "model", "contains a NUL character", id="model-with-nul"),
    pytest.param({"user": "\x00"}, "user", "contains a NUL character", id="user-with-nul"),
    pytest.param({"project": "a\x00"}, "project", "contains a NUL character", id="project-with-nul"),
    pytest.param({"metadata.env": "\x00"}, "metadata.env", "contains a NUL character", id="metadata-value-with-nul"),
    pytest.param({"metadata.e\x00v": "prod"}, "metadata.e\x00v", "contains a NUL character",
                 id="metadata-key-with-nul"),
])
async def test_what_no_store_can_hold_is_400(client: httpx.AsyncClient, query: dict[str, str], param: str,
                                            message: str) -> None:
    response = await client.get("/api/logs", params=query)

    assert response.status_code == 400
    assert response.json() == refused(param, message)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_cli_takes_the_same_bounds(gateways: dict[str, tuple[httpx.AsyncClient, str]], kind: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = gateways[kind][1]
    async def logs(*args: str) -> tuple[int, str, str]:
        status = await asyncio.to_thread(main, ["logs", "--store", url, *args])
        out, err = capsys.readouterr()
        return status, out, err

    status, out, _ = await logs("--json", "--until", "9999-12-31T23:59:59-14:00")
    assert (status, [orjson.loads(line)["attributes"]["id"] for line in out.splitlines()]) == (0, EVERY)
    assert await logs("--model", "demo/\udcff") == (2, "", "otel-gateway logs: --model: is not valid UTF-8 text\n")
    assert await logs("--metadata", "env=\udcff") == (
        2, "", "otel-gateway logs: --metadata: is not valid UTF-8 text\n")
    assert await logs("--cursor", encode_cursor(Position(10**18, "r1"))) == (
        2, "", f"otel-gateway logs: --cursor: {NOT_A_CURSOR}\n")


# -- the property --------------------------------------------------------------------------------

EDGES = [datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999), datetime(2025, 3, 5, 16, 2)]
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
MOMENTS = st.one_of(
    st.datetimes(timezones=OFFSETS | st.none()),
    st.builds(lambda moment, tz: moment.replace(tzinfo=tz), st.sampled_from(EDGES), OFFSETS),
).map(datetime.isoformat)
DURATIONS = st.lists(st.tuples(st.integers(0, 10**12) | st.floats(0, 1e13, allow_nan=False),
                               st.sampled_from("smhdw")), min_size=1, max_size=3
                     ).map(lambda parts: "".join(f"{number}{unit}" for number, unit in parts))
TEXT = st.text(max_size=8) | st.text(string.digits + "-:.TZ+", max_size=30)
TIMES = MOMENTS | DURATIONS | TEXT
MICROS = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-62135596800_000000 - 5, -62135596800_000000 + 5),  # 0001-01-01T00:00:00Z
    st.integers(253402300799_999999 - 5, 253402300799_999999 + 5),  # 9999-12-31T23:59:59.999999Z
    st.integers(1741190400_000000, 1741190700_000000),  # the sample's minutes
)
CURSORS = st.builds(lambda ts, record_id: encode_cursor(Position(ts, record_id)), MICROS,
                    st.sampled_from(["r1", "r2", "r3", "~"]) | st.text(max_size=4)) | TEXT
KNOWN = st.fixed_dictionaries({}, optional={
    "since": TIMES, "until": TIMES, "cursor": CURSORS,
    "model": st.sampled_from(["demo/echo", "openai-main/gpt-4o"]) | TEXT,
    "user": st.sampled_from(["user:alice", "user:bob"]) | TEXT,
    "project": st.sampled_from(["proj_a", "proj_b"]) | TEXT,
    "status": st.sampled_from(["success", "error", "cancelled", "rate_limited"]) | TEXT,
    "limit": st.integers(-2, 1002).map(str) | TEXT,
})
QUERIES = st.builds(
    lambda known, metadata, extra: [*known.items(), *((f"metadata.{k}", v) for k, v in metadata), *extra],
    KNOWN,
    st.lists(st.tuples(st.sampled_from(["env"]) | st.text(max_size=4), st.sampled_from(["prod", "dev"]) | TEXT),
             max_size=2),
    st.lists(st.tuples(st.sampled_from(["limit", "bogus"]) | st.text(max_size=4), TEXT), max_size=1),
)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(query=QUERIES)
async def test_no_query_gets_a_500_and_both_stores_agree(
        gateways: dict[str, tuple[httpx.AsyncClient, str]], query: list[tuple[str, str]]) -> None:
    sqlite, postgres = gateways["sqlite"][0], gateways["postgres"][0]
    from_sqlite = await sqlite.get("/api/logs", params=query)
    from_postgres = await postgres.get("/api/logs", params=query)

    assert from_sqlite.status_code in (200, 400), from_sqlite.text
    assert (from_postgres.status_code, from_postgres.json()) == (from_sqlite.status_code, from_sqlite.json())
    if from_sqlite.status_code == 400:
        error = from_sqlite.json()["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_filter")
        assert error["param"] in {name for name, _ in query} | {"metadata"}
