"""From a call to the buckets it draws on: matching rules, ``{user}``/``{model}`` ids, token estimates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...calls import ChatCall
from ...chat import SPECS
from ...config import RateLimitDocument, RateLimitRule, expand_rule_id
from .._match import matches
from ._window import Kind, parse_unit


@dataclass(frozen=True, slots=True)
class Bucket:
    """One rule as it applies to one call: its own counter, named by tenant, expanded id and unit."""

    rule_id: str
    """The rule id with ``{user}`` and ``{model}`` filled in."""
    key: str
    limit: int
    window_ms: int
    kind: Kind
    unit: str
    cost: int
    """What this call takes from the bucket: 1 request, or the token reservation (at most ``limit``)."""


def expand(rule_id: str, call: ChatCall) -> str:
    """The rule id for this call: every name of ``RULE_ID_PLACEHOLDERS`` has its value here."""
    return expand_rule_id(rule_id, {"user": call.context.identity.subject, "model": call.model})


def buckets_for(config: RateLimitDocument, call: ChatCall) -> list[Bucket]:
    """Every rule that matches ``call``, as buckets. Two rules that land on the same counter are
    one bucket, held to the lower limit."""
    reservation: int | None = None
    found: dict[str, Bucket] = {}
    for rule in config.rules:
        if not matches(rule.when, call):
            continue
        kind, window_ms = parse_unit(rule.unit)
        if kind == "tokens" and reservation is None:
            reservation = estimate_tokens(call, config.default_max_tokens)
        bucket = _bucket(rule, call, kind, window_ms, reservation)
        if bucket.key not in found or bucket.limit < found[bucket.key].limit:
            found[bucket.key] = bucket
    return list(found.values())


def _bucket(rule: RateLimitRule, call: ChatCall, kind: Kind, window_ms: int, reservation: int | None) -> Bucket:
    rule_id = expand(rule.id, call)
    tenant = call.context.identity.tenant.replace("%", "%25").replace(":", "%3A")
    # A reservation larger than the whole limit could never pass; it may start on an empty bucket.
    cost = 1 if kind == "requests" else min(reservation or 0, rule.limit_to)
    return Bucket(rule_id, f"{tenant}:{rule_id}:{rule.unit}", rule.limit_to, window_ms, kind, rule.unit, cost)


def estimate_tokens(call: ChatCall, default_max_tokens: int) -> int:
    """A cheap upper-ish estimate of what a call will cost: its prompt as its endpoint counts it
    (``chat._specs``: chat ``messages``; ``system`` + ``messages``; ``input``), and the output it
    may produce (``default_max_tokens`` per choice when it does not say; none for embeddings)."""
    spec = SPECS[call.kind]
    output = spec.output_tokens(call)
    if output is None:
        output = default_max_tokens * (_positive_int(call.param("n")) or 1)
    return spec.prompt_tokens(call) + output


def usage_tokens(usage: Any) -> int | None:
    """``total_tokens`` of an OpenAI usage object (or the sum of its parts), if it has one."""
    if not isinstance(usage, Mapping):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return total
    parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    if all(isinstance(part, int) for part in parts):
        return sum(parts)  # type: ignore[arg-type]
    return None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None
