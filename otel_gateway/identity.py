"""Who is calling: bearer keys mapped to subjects and tenants, and the caller's metadata header.

A leaf: the types and the checks. The middleware that applies them is ``http._identity``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import orjson

from .config import AuthDocument
from .errors import AuthenticationError, InvalidRequestError

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
