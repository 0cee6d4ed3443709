"""What makes two requests the same question: the cache key, and the client's ``x-gateway-cache`` header.

The key is the SHA-256 of the canonical JSON (orjson, sorted keys) of the model as requested and
every body field except those known not to change the answer (:data:`IGNORED`). Fields are left
out by name rather than picked, so a parameter this gateway does not know (``top_k`` to an
OpenAI-compatible server, a new OpenAI parameter) still tells requests apart: an unknown parameter
costs a miss, never a wrong answer. Top-level ``null`` values are dropped (``"temperature": null``
is the default, as is no temperature). ``stream`` and ``stream_options`` are left out, so a
streamed and a non-streamed request share one entry, and so is ``user``: it names the end user
for the provider's abuse monitoring and does not change the answer; tenants never share entries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from ...calls import ChatCall
from ...errors import InvalidRequestError

HEADER = "x-gateway-cache"
NO_CACHE = "no-cache"
NO_STORE = "no-store"

IGNORED = frozenset({
    "model",  # keyed as the call's model, below
    "stream",
    "stream_options",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "metadata",
    "store",
    "service_tier",
})
"""Body fields that do not change the answer (or say how it is delivered, tracked or billed)."""


def cache_key(call: ChatCall, prefix: str) -> tuple[str, str] | None:
    """``(key, digest)``: the full key, ``{prefix}{tenant}:{digest}``, and the SHA-256 hex digest of the
    normalized request. ``None`` when the body cannot be serialized canonically (then it is not cached)."""
    digest = request_digest(call.model, call.params(), None if call.kind == "chat" else call.kind)
    if digest is None:
        return None
    tenant = call.context.identity.tenant.replace("%", "%25").replace(":", "%3A")
    return f"{prefix}{tenant}:{digest}", digest


def request_digest(model: str, params: Mapping[str, Any], endpoint: str | None = None) -> str | None:
    """``endpoint``: the kind of a call other than chat (``embeddings``), so that no two endpoints share a key."""
    normalized = {name: value for name, value in params.items() if name not in IGNORED and value is not None}
    normalized["model"] = model
    if endpoint is not None:
        normalized[" endpoint"] = endpoint  # not a body field name: the space keeps it apart
    try:
        canonical = orjson.dumps(normalized, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return hashlib.sha256(canonical).hexdigest()


def directives(headers: Mapping[str, str]) -> frozenset[str]:
    """The ``x-gateway-cache`` directives: ``no-cache`` and/or ``no-store``, comma-separated, any
    case. Anything else is a 400: a mistyped ``no-store`` must not store silently."""
    value = headers.get(HEADER)
    if value is None:
        return frozenset()
    found = {part.strip().lower() for part in value.split(",") if part.strip()}
    unknown = sorted(found - {NO_CACHE, NO_STORE})
    if unknown:
        raise InvalidRequestError(
            f"{HEADER}: unknown directive {unknown[0]!r}; expected no-cache and/or no-store, comma-separated.",
            param=HEADER, code="invalid_header",
        )
    return frozenset(found)
