"""The one redaction rule (``otel_gateway.redaction.Redactor``): by value in text, by name (and
value) in headers, query strings, URLs and metadata, and over nested JSON values."""

from __future__ import annotations

import pytest

from otel_gateway.config import load_config_text
from otel_gateway.redaction import Redactor, caller_credentials

SECRET = "configured-secret-value"
R = Redactor([SECRET], names=["X-Tenant-Ref"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("no key here at all", "no key here at all", id="nothing-to-scrub"),
        pytest.param("Incorrect API key provided: sk-proj-abc123XYZ.", "Incorrect API key provided: [REDACTED].",
                     id="openai-shaped"),
        pytest.param("bad x-api-key sk-ant-api03-Zz_9-8", "bad x-api-key [REDACTED]", id="anthropic-shaped"),
        pytest.param("task-abcdefgh and risk-management", "task-abcdefgh and risk-management", id="sk-inside-a-word"),
        pytest.param("sk-short", "sk-short", id="too-short-to-be-a-key"),
        pytest.param("the key is configured-secret-value!", "the key is [REDACTED]!", id="configured-secret"),
    ],
)
def test_text(text: str, expected: str) -> None:
    assert R.text(text) == expected
    assert R.holds_secret(text) is (text != expected)


def test_the_longest_secret_is_replaced_whole() -> None:
    assert Redactor(["abcd", "abcdefgh"]).text("x abcdefgh y abcd") == "x [REDACTED] y [REDACTED]"


def test_values_too_short_to_be_secrets_are_left_alone() -> None:
    assert Redactor(["abc"]).text("abc abcd") == "abc abcd"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("", "", id="empty"),
        pytest.param("key=sk-1&API_KEY=a&X-Tenant-Ref=t&my%5Ftoken=m&api-key=h&keep=yes&flag",
                     "key=[REDACTED]&API_KEY=[REDACTED]&X-Tenant-Ref=[REDACTED]&my%5Ftoken=[REDACTED]"
                     "&api-key=[REDACTED]&keep=yes&flag", id="by-name"),
        pytest.param(f"q={SECRET}&r=x%20{SECRET.replace('-', '%2D')}&s=sk-abcdefgh&t=plain",
                     "q=[REDACTED]&r=[REDACTED]&s=[REDACTED]&t=plain", id="by-value-percent-decoded"),
        pytest.param(f"{SECRET}", "[REDACTED]", id="a-bare-secret"),
    ],
)
def test_query(query: str, expected: str) -> None:
    assert R.query(query) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://api.example.com/v1/files?token=abc&limit=2#frag",
                     "https://api.example.com/v1/files?token=[REDACTED]&limit=2#frag", id="query"),
        pytest.param("https://user:pass@api.example.com/v1?x=1", "https://[REDACTED]@api.example.com/v1?x=1",
                     id="user-info"),
        pytest.param(f"/v1/files/{SECRET}?Signature=s", "/v1/files/[REDACTED]?Signature=[REDACTED]",
                     id="path-and-signature"),
        pytest.param("/v1/models", "/v1/models", id="nothing"),
        pytest.param("https://h/p?sig=REDACTED&a=b@c", "https://h/p?sig=[REDACTED]&a=b@c", id="at-in-query"),
    ],
)
def test_url(url: str, expected: str) -> None:
    assert R.url(url) == expected


def test_headers_and_metadata_by_name_and_by_value() -> None:
    fields = {"authorization": "Bearer x", "x-tenant-ref": "t", "x-goog-api-key": "g", "session_token": "s",
              "project_id": "p1", "note": f"mine is {SECRET}", "user": "sk-abcdefghij"}
    assert R.headers(fields) == {
        "authorization": "[REDACTED]", "x-tenant-ref": "[REDACTED]", "x-goog-api-key": "[REDACTED]",
        "session_token": "[REDACTED]", "project_id": "p1", "note": "mine is [REDACTED]", "user": "[REDACTED]",
    }


def test_value_redacts_nested_strings_and_keys_and_returns_a_clean_value_as_is() -> None:
    clean = {"a": [1, 2.5, None, {"b": "c"}], "d": True}
    assert R.value(clean) is clean
    dirty = {"messages": [{"role": "user", "content": f"x {SECRET}"}], SECRET: 1, "n": ("sk-abcdefgh", 3)}
    assert R.value(dirty) == {"messages": [{"role": "user", "content": "x [REDACTED]"}], "[REDACTED]": 1,
                              "n": ["[REDACTED]", 3]}


def test_a_secret_that_json_escapes_is_found_in_a_value() -> None:
    quoted = 'pa"ss\\word'
    assert Redactor([quoted]).value({"k": f"<{quoted}>"}) == {"k": "<[REDACTED]>"}


def test_with_secrets_adds_the_callers_key_and_keeps_the_names() -> None:
    caller = R.with_secrets(["caller-own-key"])
    assert caller.text(f"caller-own-key {SECRET}") == "[REDACTED] [REDACTED]"
    assert caller.secret_name("X-Tenant-Ref")
    assert R.with_secrets([SECRET, "ab"]) is R
    assert R.text("caller-own-key") == "caller-own-key"


def test_caller_credentials() -> None:
    assert caller_credentials({"authorization": "Bearer tok-123", "x-api-key": "xk-456", "api-key": "ab"}) \
        == ["tok-123", "xk-456"]


def test_for_config_takes_provider_and_gateway_keys_and_redact_headers() -> None:
    config = load_config_text(
        "type: gateway-providers-config\nproviders: [{name: o, type: openai, api_key: prov-secret-1, models: [m]}]\n"
        "---\ntype: gateway-auth-config\nkeys: [{name: k, key: gw-secret-2, subject: 'user:u', tenant: t}]\n"
        "---\ntype: gateway-logging-config\nstore: none\nredact_headers: [x-custom-auth]\n", environ={})
    redactor = Redactor.for_config(config)
    assert redactor.text("prov-secret-1 gw-secret-2") == "[REDACTED] [REDACTED]"
    assert redactor.headers({"x-custom-auth": "v", "x-other": "w"}) == {"x-custom-auth": "[REDACTED]", "x-other": "w"}
