"""Who is calling: bearer keys mapped to subjects and tenants, and the caller's metadata header."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import AuthDocument
from .errors import AuthenticationError, GatewayError, InvalidRequestError
from .http._asgi import error_response, error_shape_for, headers_of

if TYPE_CHECKING:
    from .runtime import Gateway

IDENTITY = "otel_gateway.identity"
METADATA = "otel_gateway.metadata"
_MAX_METADATA_VALUE = 128
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    """``user:...``, ``team:...`` or ``virtualaccount:...``."""
    tenant: str
    admin: bool = False
    key_name: str | None = None

    @property
    def subject_type(self) -> str:
        return self.subject.partition(":")[0]

    @property
    def subject_slug(self) -> str:
        return self.subject.partition(":")[2]


ANONYMOUS = Identity(subject="user:anonymous", tenant="default")


class Authenticator:
    """Finds the key a bearer token belongs to. Every configured key is compared, in constant
    time, against the token's SHA-256, so neither timing nor early exit tells keys apart."""

    def __init__(self, auth: AuthDocument | None) -> None:
        self.enabled = auth is not None
        self._keys: list[tuple[bytes, Identity]] = []
        for key in auth.keys if auth else ():
            digest = (
                hashlib.sha256(key.key.get_secret_value().encode()).digest()
                if key.key is not None
                else bytes.fromhex(key.key_sha256 or "")
            )
            self._keys.append((digest, Identity(key.subject, key.tenant, key.admin, key.name)))

    def identify(self, authorization: str | None) -> Identity:
        if not self.enabled:
            return ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("Missing gateway key: send 'Authorization: Bearer <key>'.")
        digest = hashlib.sha256(token.strip().encode()).digest()
        found: Identity | None = None
        for candidate, identity in self._keys:
            if hmac.compare_digest(candidate, digest):
                found = identity
        if found is None:
            raise AuthenticationError("Invalid gateway key.")
        return found


def parse_metadata(value: str | None) -> Mapping[str, str]:
    """``x-gateway-metadata``: a JSON object of string keys and string values of at most 128 chars."""
    if value is None or not value.strip():
        return _EMPTY
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("x-gateway-metadata must be a JSON object.", param="x-gateway-metadata",
                                  code="invalid_metadata") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("x-gateway-metadata must be a JSON object.", param="x-gateway-metadata",
                                  code="invalid_metadata")
    for key, item in data.items():
        if not isinstance(item, str):
            raise InvalidRequestError(f"x-gateway-metadata value of {key!r} must be a string.",
                                      param="x-gateway-metadata", code="invalid_metadata")
        if len(item) > _MAX_METADATA_VALUE:
            raise InvalidRequestError(
                f"x-gateway-metadata value of {key!r} is longer than {_MAX_METADATA_VALUE} characters.",
                param="x-gateway-metadata", code="invalid_metadata")
    return MappingProxyType(data)


class IdentityMiddleware:
    """Plain ASGI: identifies the caller of every API path and parses its metadata header,
    answering 401 or 400 itself. Health probes pass without a key."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ("/healthz", "/readyz"):
            await self.app(scope, receive, send)
            return
        authorization = metadata = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-gateway-metadata":
                metadata = value.decode("utf-8", "replace")
        try:
            scope[IDENTITY] = self.gateway.current.authenticator.identify(authorization)
            scope[METADATA] = parse_metadata(metadata)
        except GatewayError as exc:
            await self._refuse(scope, receive, send, exc)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: GatewayError) -> None:
        """Answers ``error`` and logs the request: its body unread, its caller anonymous unless
        the key was good (a bad metadata header)."""
        from .http._logged import record_error, start_exchange  # _logged imports this module

        exchange = start_exchange(scope, headers_of(scope))
        record_error(exchange, error)
        try:
            await error_response(error, error_shape_for(scope["path"]))(scope, receive, send)
        finally:
            self.gateway.request_log.submit(exchange)
