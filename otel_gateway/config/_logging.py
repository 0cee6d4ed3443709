"""The request warehouse's documents: ``gateway-logging-config`` (where records go, how they are
batched, spooled, kept and redacted) and ``gateway-pricing-config`` (model prices, the shipped
table is ``config/pricing.yaml``)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, field_validator

from ._schema import Model

_STORE = re.compile(r"^(none|memory|sqlite:///.+|postgres(ql)?://.+)$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
DEFAULT_STORE = "sqlite:///./otel-gateway.db"


class ModelPrice(Model):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    """Prompt tokens read from the provider's prompt cache; absent: priced as ``input``."""


class LoggingDocument(Model):
    """``gateway-logging-config``: absent, every default below applies (records go to SQLite)."""

    type: Literal["gateway-logging-config"]
    store: str = DEFAULT_STORE
    """``sqlite:///path`` | ``postgresql://user:pass@host/db`` | ``memory`` (this process only) | ``none``."""
    jsonl: str | None = None
    """Also append every record, one JSON object a line, to this file."""
    spool_dir: str = "./otel-gateway-spool"
    """Where records wait (JSONL, fsync'd) while the store cannot be written."""
    retention_days: int | None = Field(30, ge=1)
    """Records older than this are pruned from the store; null keeps them forever."""
    queue_size: int = Field(10_000, ge=1)
    """Finished requests waiting to be written; past this they are dropped and counted."""
    batch_size: int = Field(200, ge=1, le=10_000)
    flush_interval_ms: int = Field(1000, ge=1)
    """A batch is written when full or when this much time has passed."""
    write_timeout_ms: int = Field(10_000, ge=1)
    """A store write taking longer counts as failed: its batch is spooled."""
    redact_headers: tuple[str, ...] = ()
    """Request headers (and query parameters) whose values read ``[REDACTED]``, beside
    ``authorization``, ``proxy-authorization``, ``x-api-key``, ``api-key`` and ``cookie``."""
    pricing: Mapping[str, ModelPrice] = Field(default_factory=dict)
    """Prices over the shipped table, by model: ``provider-account/model``, a virtual model name,
    or the provider's model name (``gpt-4o``; dated versions such as ``gpt-4o-2024-08-06`` match it)."""
    environment: str = "production"
    """The records' ``deployment.environment``."""

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if not _STORE.match(value):
            raise ValueError("must be sqlite:///path, postgresql://..., memory or none")
        return value

    @field_validator("redact_headers")
    @classmethod
    def _header_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _HEADER.match(name):
                raise ValueError(f"{name!r} is not a header name")
        return tuple(name.lower() for name in value)


class PricingDocument(Model):
    """``gateway-pricing-config``: list prices per provider, US dollars per million tokens."""

    type: Literal["gateway-pricing-config"]
    as_of: str
    """The date the prices reflect."""
    currency: Literal["USD"] = "USD"
    providers: Mapping[str, Mapping[str, ModelPrice]]
    """Vendor (``openai``, ``azure``, ``anthropic``, ``groq``, ``together``...) -> model -> price.
    A provider account's vendor is its type, or for ``openai-compatible`` the vendor named in its
    base URL's host."""

    @field_validator("as_of", mode="before")
    @classmethod
    def _date_as_text(cls, value: object) -> object:
        # YAML reads an unquoted 2025-11-15 as a date.
        return value.isoformat() if isinstance(value, datetime.date) else value
