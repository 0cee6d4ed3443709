"""Identity: gateway keys (plain or by SHA-256) map to a subject and tenant; unknown keys get 401;
without an auth document everyone is user:anonymous in tenant default; x-gateway-metadata is a
JSON object of short strings or a 400."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import AuthDocument, load_config_text
from otel_gateway.errors import AuthenticationError
from otel_gateway.identity import ANONYMOUS, Authenticator, Identity, parse_metadata

ALICE, BOB = "sk-alice-identity-0001", "sk-bob-identity-0002"
PROVIDERS = """
type: gateway-providers-config
providers: [{name: demo, type: mock, models: [echo]}]
"""
AUTH = f"""
---
type: gateway-auth-config
keys:
  - {{name: alice-laptop, key: {ALICE}, subject: "user:alice@example.com", tenant: acme}}
  - {{name: bob-ci, key_sha256: {hashlib.sha256(BOB.encode()).hexdigest()}, subject: "team:ml", admin: true}}
"""
HI = [{"role": "user", "content": "hi"}]


def authenticator() -> Authenticator:
    return Authenticator(AuthDocument.model_validate({"type": "gateway-auth-config", "keys": [
        {"name": "alice-laptop", "key": ALICE, "subject": "user:alice@example.com", "tenant": "acme"},
        {"name": "bob-ci", "key_sha256": hashlib.sha256(BOB.encode()).hexdigest(), "subject": "team:ml",
         "admin": True},
    ]}))


@pytest.mark.parametrize(("authorization", "identity"), [
    pytest.param(f"Bearer {ALICE}", Identity("user:alice@example.com", "acme", False, "alice-laptop"), id="plain-key"),
    pytest.param(f"bearer {BOB}", Identity("team:ml", "default", True, "bob-ci"), id="sha256-key"),
])
def test_a_key_identifies_its_subject(authorization: str, identity: Identity) -> None:
    assert authenticator().identify(authorization) == identity


@pytest.mark.parametrize(("authorization", "message"), [
    pytest.param(None, "Missing gateway key: send 'Authorization: Bearer <key>'.", id="missing"),
    pytest.param("Basic abc", "Missing gateway key: send 'Authorization: Bearer <key>'.", id="not-bearer"),
    pytest.param("Bearer ", "Missing gateway key: send 'Authorization: Bearer <key>'.", id="empty"),
    pytest.param("Bearer sk-nobody", "Invalid gateway key.", id="unknown"),
    pytest.param(f"Bearer {ALICE}x", "Invalid gateway key.", id="prefix-of-a-key"),
])
def test_a_bad_key_is_refused(authorization: str | None, message: str) -> None:
    with pytest.raises(AuthenticationError) as raised:
        authenticator().identify(authorization)
    assert raised.value.message == message


def test_without_auth_everyone_is_anonymous() -> None:
    assert Authenticator(None).identify(None) == ANONYMOUS == Identity("user:anonymous", "default")
    assert (ANONYMOUS.subject_type, ANONYMOUS.subject_slug) == ("user", "anonymous")


@pytest.mark.parametrize(("header", "expected"), [
    pytest.param(None, {}, id="absent"),
    pytest.param("  ", {}, id="blank"),
    pytest.param('{"project_id": "p1", "env": "prod"}', {"project_id": "p1", "env": "prod"}, id="object"),
    pytest.param('{"k": "' + "x" * 128 + '"}', {"k": "x" * 128}, id="128-chars"),
])
def test_metadata_header(header: str | None, expected: dict[str, str]) -> None:
    assert dict(parse_metadata(header)) == expected


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    with serve(create_app(load_config_text(PROVIDERS + AUTH))) as url:
        yield url


def chat(url: str, key: str | None, **headers: str) -> httpx.Response:
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(url + "/v1/chat/completions", json={"model": "demo/echo", "messages": HI}, headers=headers)


def test_the_sdk_with_a_good_key_is_answered(gateway: str) -> None:
    client = openai.OpenAI(base_url=gateway + "/v1", api_key=ALICE, max_retries=0)
    reply = client.chat.completions.create(model="demo/echo", messages=HI)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "hi"


def test_the_sdk_with_a_bad_key_gets_401(gateway: str) -> None:
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="demo/echo", messages=HI)  # type: ignore[arg-type]
    assert raised.value.body == {"message": "Invalid gateway key.", "type": "authentication_error",
                                 "code": "invalid_api_key", "param": None}


@pytest.mark.parametrize(("key", "status"), [
    pytest.param(None, 401, id="no-key"), pytest.param("sk-wrong", 401, id="wrong"), pytest.param(BOB, 200, id="bob"),
])
def test_every_api_path_checks_the_key(gateway: str, key: str | None, status: int) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    assert httpx.get(gateway + "/v1/models", headers=headers).status_code == status
    assert chat(gateway, key).status_code == status


BAD_METADATA: list[Any] = [
    pytest.param("{not json", "x-gateway-metadata must be a JSON object.", id="not-json"),
    pytest.param('["a"]', "x-gateway-metadata must be a JSON object.", id="not-an-object"),
    pytest.param('{"n": 1}', "x-gateway-metadata value of 'n' must be a string.", id="number-value"),
    pytest.param('{"k": "' + "x" * 129 + '"}', "x-gateway-metadata value of 'k' is longer than 128 characters.",
                 id="too-long"),
]


@pytest.mark.parametrize(("header", "message"), BAD_METADATA)
def test_bad_metadata_is_a_400(gateway: str, header: str, message: str) -> None:
    response = chat(gateway, ALICE, **{"x-gateway-metadata": header})
    assert response.status_code == 400
    assert response.json() == {"error": {"message": message, "type": "invalid_request_error",
                                         "code": "invalid_metadata", "param": "x-gateway-metadata"}}


def test_the_key_is_never_echoed(gateway: str) -> None:
    response = chat(gateway, ALICE + "-typo")
    assert response.status_code == 401
    assert ALICE not in response.text
