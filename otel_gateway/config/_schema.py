"""Typed, frozen shapes of the configuration documents, validated once at load."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

ProviderType = Literal["openai", "azure-openai", "anthropic", "openai-compatible", "mock"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MockOptions(Model):
    """Behaviour of a ``mock`` provider; each can also be set per request by an ``x-mock-*`` header."""

    delay_ms: int = Field(0, ge=0)
    """Wait this long before answering (before the first chunk of a stream)."""
    fail_status: int | None = Field(None, ge=400, le=599)
    """Answer every request with this error status."""
    stream_chunks: int = Field(5, ge=1, le=10_000)
    """Split a streamed answer into this many content chunks."""
    chunk_delay_ms: int = Field(0, ge=0)
    """Wait this long between streamed chunks."""
    fail_after_chunks: int | None = Field(None, ge=0)
    """Cut the stream (connection drop) after this many chunks."""


class ProviderConfig(Model):
    name: str
    type: ProviderType
    base_url: str | None = None
    api_key: SecretStr | None = None
    models: Mapping[str, str]
    """Model name as addressed through the gateway -> name sent upstream (Azure: deployment)."""
    timeout_ms: int = Field(600_000, gt=0)
    max_concurrent_requests: int = Field(256, gt=0)
    """Requests in flight to this provider account at once (each holds a connection of its own pool
    until its answer is read or its stream ends); more wait for a slot."""
    queue_timeout_ms: int = Field(100, ge=0)
    """How long a request waits for one of those slots before it fails with 503 ``overloaded``."""
    api_version: str = "2024-10-21"
    """Azure OpenAI ``api-version`` query parameter."""
    anthropic_version: str = "2023-06-01"
    headers: Mapping[str, str] = Field(default_factory=dict)
    """Extra headers sent upstream on every request."""
    mock: MockOptions = Field(default_factory=MockOptions)

    @field_validator("api_version", "anthropic_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # YAML reads an unquoted 2024-10-21 as a date.
        return value.isoformat() if isinstance(value, datetime.date) else value

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be letters, digits, '.', '_' or '-' (it is the first part of model ids)")
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _models_list_or_map(cls, value: object) -> object:
        if isinstance(value, list):
            if not all(isinstance(item, str) and item for item in value):
                raise ValueError("a list of models must hold non-empty strings")
            return {item: item for item in value}
        return value

    @field_validator("models")
    @classmethod
    def _models_not_empty(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        if not value:
            raise ValueError("at least one model is required")
        return value

    @model_validator(mode="after")
    def _provider_requirements(self) -> ProviderConfig:
        if self.type in ("azure-openai", "openai-compatible") and not self.base_url:
            raise ValueError(f"base_url is required for type {self.type}")
        if self.type in ("openai", "azure-openai", "anthropic") and not (
            self.api_key and self.api_key.get_secret_value()
        ):
            raise ValueError(f"api_key is required for type {self.type}")
        base = self.base_url
        if base is not None and not base.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        # Every upstream URL is this origin and path, then segments: nothing in it may move the host.
        if base is not None and "@" in base:
            raise ValueError("base_url may not hold '@' (user:password@host): put credentials in api_key or headers")
        if base is not None and ("?" in base or "#" in base):
            raise ValueError("base_url may not hold a query ('?') or a fragment ('#')")
        if base is not None and re.search(r"[\\\s\x00-\x1f\x7f]|^https?://(/|$)", base):
            raise ValueError("base_url needs a host, and may not hold a backslash, spaces or control characters")
        if self.type == "azure-openai" and any(name in ("", ".", "..") for name in self.models.values()):
            raise ValueError("an azure-openai deployment (a value of models) cannot be empty, '.' or '..'")
        return self

    @property
    def url(self) -> str:
        """The base URL in use, without a trailing slash."""
        return (self.base_url or _DEFAULT_BASE_URLS.get(self.type, "http://mock.invalid")).rstrip("/")

    def secret(self) -> str:
        return self.api_key.get_secret_value() if self.api_key else ""


class ProvidersDocument(Model):
    type: Literal["gateway-providers-config"]
    providers: tuple[ProviderConfig, ...]


class ServerDocument(Model):
    """``gateway-server-config``: limits of the HTTP front."""

    type: Literal["gateway-server-config"]
    max_request_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_requests_in_flight: int = Field(2048, gt=0)
    """Requests the gateway serves at once; more are answered 503 ``overloaded`` before their body is
    read. The health probes do not count. Above every provider's ``max_concurrent_requests``, so that one
    provider's trouble fills its own cap first."""
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    """The request line and headers of one request, in bytes; longer is answered 431."""
    max_header_count: int = Field(256, gt=0)
    """Header fields of one request; more is answered 431."""
    header_timeout_ms: int = Field(10_000, gt=0)
    """From a connection's start, or from the first byte of its next request, until the headers are in;
    a client slower than that is answered 408 and disconnected."""
    body_idle_timeout_ms: int = Field(30_000, gt=0)
    """The longest pause between two pieces of a request body while the gateway waits for it; a longer
    one is answered 408 (or, once the answer started, the connection is closed)."""
