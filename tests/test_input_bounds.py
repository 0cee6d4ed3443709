"""Every header the gateway parses answers a bad value with a 400 naming it, never a 500: the
timeout headers (whole milliseconds, ASCII digits only, at most 24 h), the mock provider's
``x-mock-*`` headers (the same digits, in the ranges of its ``mock:`` options), the metadata and
cache headers, and a ``content-length`` of any length. Examples from the issue, then properties."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes import FakeUpstream, Reply, openai_completion
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text
from otel_gateway.http._asgi import read_body

BODY = {"model": "oai/gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
MAX_TIMEOUT_MS = 86_400_000
"""24 h: the longest timeout a header may ask for."""
TIMEOUTS = ("x-gateway-request-timeout", "x-gateway-ttft-timeout-ms")
NOT_A_NUMBER = "{} must be a positive whole number of milliseconds."
TOO_LARGE = "{} must be at most 86400000 milliseconds (24 hours)."


@pytest.fixture(scope="module")
def gateway(served_fake: tuple[FakeUpstream, str]) -> Iterator[str]:
    config = load_config_text(f"""
type: gateway-providers-config
providers:
  - {{name: oai, type: openai, base_url: "{served_fake[1]}/v1", api_key: sk-test, models: [gpt-4o]}}
  - {{name: demo, type: mock, models: [echo], timeout_ms: 20}}
---
type: gateway-cache-config
""", environ={})
    with serve(create_app(config)) as url:
        yield url


@pytest.fixture(scope="module")
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0, timeout=10) as client:
        yield client


@pytest.fixture
def fake(fake: FakeUpstream) -> FakeUpstream:
    return fake.reset(Reply(json=openai_completion()))


def header_error(message: str, header: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_header", "param": header}}


@pytest.mark.parametrize("header", TIMEOUTS)
@pytest.mark.parametrize(("value", "message"), [
    pytest.param(b"\xb2", NOT_A_NUMBER, id="superscript-two"),  # latin-1 '²': str.isdigit() takes it, int() not
    pytest.param(b"\xb9\xb3", NOT_A_NUMBER, id="superscripts"),
    pytest.param(b"9" * 5000, TOO_LARGE, id="5000-digits"),
    pytest.param(b"9" * 400, TOO_LARGE, id="400-nines"),
    pytest.param(str(MAX_TIMEOUT_MS + 1).encode(), TOO_LARGE, id="a-day-and-a-millisecond"),
    pytest.param(b"0" * 5000, NOT_A_NUMBER, id="5000-zeros"),
    pytest.param(b"+5", NOT_A_NUMBER, id="plus-sign"),
])
def test_a_bad_timeout_header_is_400(http: httpx.Client, fake: FakeUpstream, header: str, value: bytes,
                                     message: str) -> None:
    response = http.post("/v1/chat/completions", json=BODY, headers=[(header.encode(), value)])

    assert response.status_code == 400
    assert response.json() == header_error(message.format(header), header)
    assert fake.requests == []


@pytest.mark.parametrize("header", TIMEOUTS)
@pytest.mark.parametrize("value", [str(MAX_TIMEOUT_MS), "0" * 5000 + "60000"], ids=["a-day", "leading-zeros"])
def test_a_timeout_up_to_a_day_is_taken(sdk: openai.OpenAI, fake: FakeUpstream, header: str, value: str) -> None:
    messages = [{"role": "user", "content": f"{header}: {value[-8:]}"}]  # not in the cache
    completion = sdk.chat.completions.create(model="oai/gpt-4o", messages=messages,  # type: ignore[arg-type]
                                             extra_headers={header: value})

    assert completion.choices[0].message.content == "Hello there"
    assert len(fake.requests) == 1


def expected_timeout(value: str) -> int:
    """The status the gateway must answer a timeout header with."""
    if not value or not all("0" <= c <= "9" for c in value):
        return 400
    return 200 if 1 <= int(value.lstrip("0") or "0") <= MAX_TIMEOUT_MS else 400


# What an HTTP/1.1 header value may hold: visible latin-1 characters, spaces and tabs (not at its ends).
LATIN1 = st.characters(codec="latin-1", exclude_categories=("Cc",)) | st.sampled_from("\t²³¹")
HEADER_VALUES = st.one_of(
    st.text(LATIN1, max_size=20),
    st.text("0123456789", min_size=1, max_size=30),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.integers(min_value=0, max_value=2 * MAX_TIMEOUT_MS).map(str),
    st.tuples(st.integers(0, 3000), st.integers(0, 3000)).map(lambda t: "0" * t[0] + "9" * t[1]),
).map(lambda value: value.strip(" \t"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.sampled_from(TIMEOUTS), value=HEADER_VALUES)
def test_any_timeout_header_value_is_200_or_400(http: httpx.Client, fake: FakeUpstream, header: str,
                                                value: str) -> None:
    fake.reset(Reply(json=openai_completion()))
    response = http.post("/v1/chat/completions", json=BODY, headers=[(header.encode(), value.encode("latin-1"))])

    expected = expected_timeout(value)
    if expected == 200 and response.status_code == 504:  # a deadline of a few ms can pass before the answer
        assert (header, response.json()["error"]["code"]) == ("x-gateway-request-timeout", "request_timeout")
        assert int(value) < 1000
    else:
        assert response.status_code == expected, response.text
    if response.status_code == 400:
        assert response.json()["error"]["param"] == header
        assert response.json()["error"]["code"] == "invalid_header"
        assert fake.requests == []


MOCK_BODY = {"model": "demo/echo", "messages": [{"role": "user", "content": "one two three"}], "stream": True}
NO_CACHE = (b"x-gateway-cache", b"no-cache, no-store")
MOCK_RANGES = {
    "x-mock-delay-ms": (0, MAX_TIMEOUT_MS),
    "x-mock-status": (400, 599),
    "x-mock-stream-chunks": (1, 10_000),
    "x-mock-chunk-delay-ms": (0, MAX_TIMEOUT_MS),
    "x-mock-fail-after-chunks": (0, 10_000),
}
"""The range of each ``x-mock-*`` header, as ``MockOptions`` has them (delays up to 24 h)."""


@pytest.mark.parametrize(("header", "value", "message"), [
    pytest.param("x-mock-delay-ms", b"9" * 400, "x-mock-delay-ms must be at most 86400000 milliseconds (24 hours).",
                 id="delay-400-digits"),  # was a 500: too large to convert to seconds
    pytest.param("x-mock-delay-ms", b"\xb2", "x-mock-delay-ms must be a whole number of milliseconds.",
                 id="delay-superscript-two"),
    pytest.param("x-mock-chunk-delay-ms", b"-1", "x-mock-chunk-delay-ms must be a whole number of milliseconds.",
                 id="chunk-delay-negative"),
    pytest.param("x-mock-status", b"abc", "x-mock-status must be a whole number from 400 to 599.", id="status-abc"),
    pytest.param("x-mock-status", b"200", "x-mock-status must be a whole number from 400 to 599.", id="status-200"),
    pytest.param("x-mock-status", b"600", "x-mock-status must be at most 599.", id="status-600"),
    pytest.param("x-mock-stream-chunks", b"0", "x-mock-stream-chunks must be a positive whole number of chunks.",
                 id="chunks-zero"),
    pytest.param("x-mock-stream-chunks", b"10001", "x-mock-stream-chunks must be at most 10000 chunks.",
                 id="chunks-10001"),
    pytest.param("x-mock-fail-after-chunks", b"1.5", "x-mock-fail-after-chunks must be a whole number of chunks.",
                 id="fail-after-fraction"),
])
def test_a_bad_mock_header_is_400_naming_it(http: httpx.Client, header: str, value: bytes, message: str) -> None:
    response = http.post("/v1/chat/completions", json=MOCK_BODY, headers=[(header.encode(), value), NO_CACHE])

    assert response.status_code == 400
    assert response.json() == header_error(message, header)


def test_a_bad_mock_header_on_embeddings_is_400_naming_it(http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", json={"model": "demo/echo", "input": "hi"},
                         headers=[(b"x-mock-delay-ms", b"9" * 400)])

    assert response.status_code == 400
    assert response.json() == header_error("x-mock-delay-ms must be at most 86400000 milliseconds (24 hours).",
                                           "x-mock-delay-ms")


@pytest.mark.parametrize(("header", "value", "status"), [
    pytest.param("x-mock-status", "418", 418, id="status-418"),
    pytest.param("x-mock-status", "0" * 5000 + "503", 503, id="status-leading-zeros"),
    pytest.param("x-mock-delay-ms", "0" * 5000, 200, id="delay-zero"),
    pytest.param("x-mock-delay-ms", str(MAX_TIMEOUT_MS), 504, id="delay-a-day"),  # the provider's 20 ms run out
    pytest.param("x-mock-stream-chunks", "10000", 200, id="chunks-10000"),
])
def test_a_mock_header_in_range_is_taken(http: httpx.Client, header: str, value: str, status: int) -> None:
    response = http.post("/v1/chat/completions", json=MOCK_BODY, headers=[(header.encode(), value.encode()), NO_CACHE])

    assert response.status_code == status, response.text
    if status == 200:
        assert response.text.endswith("data: [DONE]\n\n")


def expected_mock(header: str, value: str) -> set[int]:
    """The statuses the gateway may answer an ``x-mock-*`` header with (a mock stream answers 200)."""
    low, high = MOCK_RANGES[header]
    digits = value.lstrip("0") or "0"
    if not value or not all("0" <= c <= "9" for c in value) or len(digits) > 9 or not low <= int(digits) <= high:
        return {400}
    if header == "x-mock-status":
        number = int(digits)
        return {502 if number >= 500 and number not in (503, 504) else 502 if number in (401, 403) else number}
    if header == "x-mock-delay-ms":
        return {200, 504}  # longer than the provider's timeout_ms (20 ms): a 504
    if header == "x-mock-fail-after-chunks":
        return {200, 502}  # cut before the answer is whole (fewer chunks than it has): 502, as told
    return {200}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.sampled_from(sorted(MOCK_RANGES)), value=HEADER_VALUES | st.integers(0, 12_000).map(str))
def test_any_mock_header_value_is_answered_never_500(http: httpx.Client, header: str, value: str) -> None:
    response = http.post("/v1/chat/completions", json=MOCK_BODY,
                         headers=[(header.encode(), value.encode("latin-1")), NO_CACHE])

    assert response.status_code in expected_mock(header, value), response.text
    if header != "x-mock-status" and response.status_code == 400:
        assert response.json()["error"]["param"] == header
        assert response.json()["error"]["code"] == "invalid_header"
    if header == "x-mock-status" and expected_mock(header, value) == {400}:
        assert response.json() == header_error(response.json()["error"]["message"], header)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(
    HEADER_VALUES,
    st.dictionaries(st.text(max_size=5), st.text(max_size=130) | st.integers() | st.none(), max_size=3).map(json.dumps),
    st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                 max_leaves=8).map(json.dumps),
))
def test_any_metadata_header_is_200_or_400(http: httpx.Client, fake: FakeUpstream, value: str) -> None:
    fake.reset(Reply(json=openai_completion()))
    raw = value.encode("utf-8") if not value.isascii() else value.encode()
    response = http.post("/v1/chat/completions", json=BODY, headers=[(b"x-gateway-metadata", raw.strip(b" \t"))])

    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"]["param"] == "x-gateway-metadata"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=HEADER_VALUES | st.lists(st.sampled_from(["no-cache", "no-store", "NO-STORE", " ", "", "x"]),
                                       max_size=4).map(lambda parts: ",".join(parts).strip()))
def test_any_cache_header_is_200_or_400(http: httpx.Client, fake: FakeUpstream, value: str) -> None:
    fake.reset(Reply(json=openai_completion()))
    response = http.post("/v1/chat/completions", json=BODY, headers=[(b"x-gateway-cache", value.encode("latin-1"))])

    directives = {part.strip().lower() for part in value.split(",") if part.strip()}
    assert response.status_code == (200 if directives <= {"no-cache", "no-store"} else 400), response.text
    if response.status_code == 400:
        assert response.json()["error"] == {
            "message": response.json()["error"]["message"], "type": "invalid_request_error",
            "code": "invalid_header", "param": "x-gateway-cache"}


@pytest.mark.parametrize(("length", "too_large"), [
    pytest.param(b"9" * 5000, True, id="5000-digits"),
    pytest.param(b"0" * 5000 + b"10", False, id="leading-zeros"),
    pytest.param(b"101", True, id="just-over"),
    pytest.param(b"100", False, id="at-the-limit"),
    pytest.param(b"\xb2", False, id="not-ascii-digits"),
])
async def test_read_body_judges_any_content_length(length: bytes, too_large: bool) -> None:
    """Under a server that lets any ``content-length`` through (uvicorn's refuses malformed ones)."""
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {"type": "http", "headers": [(b"content-length", length)]}
    if too_large:
        with pytest.raises(Exception, match="larger than the gateway's limit of 100 bytes") as raised:
            await read_body(scope, receive, 100)
        assert getattr(raised.value, "status", None) == 413
    else:
        assert await read_body(scope, receive, 100) == b"{}"
