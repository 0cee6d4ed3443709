"""The response cache document: ``gateway-cache-config`` (absent: nothing is cached)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ._routing import When
from ._schema import Model

_YEAR = 365 * 24 * 3600


class CacheDocument(Model):
    """Exact-match caching of chat completions, per tenant. ``when`` chooses the requests that
    are cached (models, subjects, metadata; AND-ed, absent matches all)."""

    type: Literal["gateway-cache-config"]
    backend: str = "memory"
    """``memory`` (this process, a bounded LRU), or ``redis://host:port/db`` shared by every replica."""
    ttl_seconds: int = Field(3600, gt=0, le=_YEAR)
    """How long an answer is served from the cache after it was stored."""
    max_entries: int = Field(1000, gt=0)
    """The memory backend's bound: the least recently used answer is dropped beyond it."""
    max_entry_bytes: int = Field(256 * 1024, gt=0)
    """Answers larger than this (as stored, in JSON) are not cached."""
    key_prefix: str = Field("otel_gateway:cache:", min_length=1)
    """Prefix of every key: separates gateways (or environments) that share one Redis."""
    when: When = Field(default_factory=When)

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be 'memory' or a redis:// URL")
        return value
