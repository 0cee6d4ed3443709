"""The identity and routing documents: auth, rate limiting, load balancing, fallback."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from ._schema import Model

_SUBJECT = re.compile(r"^(user|team|virtualaccount):.+$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _status_code(value: object) -> object:
    """Status codes are written as numbers or as strings (``"429"``); both mean the same."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


StatusCode = Annotated[int, BeforeValidator(_status_code), Field(ge=100, le=599)]


def _check_subject(value: str) -> str:
    if not _SUBJECT.match(value):
        raise ValueError(f"subject {value!r} must look like user:..., team:... or virtualaccount:...")
    return value


class When(Model):
    """Conditions of a rule, AND-ed; inside a list any element matches; absent matches all."""

    subjects: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    metadata: Mapping[str, str] | None = None

    @field_validator("subjects")
    @classmethod
    def _subjects(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            for subject in value:
                _check_subject(subject)
        return value


class FallbackWhen(When):
    response_status_codes: tuple[StatusCode, ...] | None = None


# --- gateway-auth-config -------------------------------------------------------------------


class AuthKey(Model):
    name: str
    key: SecretStr | None = None
    key_sha256: str | None = None
    subject: str
    tenant: str = "default"
    admin: bool = False

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return _check_subject(value)

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _HEX64.match(value):
            raise ValueError("must be the 64 hex digits of a SHA-256")
        return value.lower() if value else value

    @model_validator(mode="after")
    def _one_key(self) -> AuthKey:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key or key_sha256")
        if self.key is not None and not self.key.get_secret_value():
            raise ValueError("key is empty")
        return self

    def sha256(self) -> str:
        """The key's SHA-256 as lowercase hex, given plainly or as ``key_sha256``."""
        if self.key is not None:
            return hashlib.sha256(self.key.get_secret_value().encode()).hexdigest()
        return self.key_sha256 or ""


class AuthDocument(Model):
    type: Literal["gateway-auth-config"]
    keys: tuple[AuthKey, ...]

    @model_validator(mode="after")
    def _keys_are_unique(self) -> AuthDocument:
        """One key, one caller: a key listed twice (plainly or by its SHA-256) would leave who is
        calling to the order of the list. The message names the entries, never the key."""
        seen: dict[str, str] = {}
        for index, key in enumerate(self.keys):
            digest = key.sha256()
            if digest in seen:
                raise ValueError(f"keys[{index}] ({key.name!r}) is the same key as {seen[digest]}")
            seen[digest] = f"keys[{index}] ({key.name!r})"
        return self


# --- gateway-rate-limiting-config ----------------------------------------------------------

RateUnit = Literal[
    "requests_per_minute", "requests_per_hour", "requests_per_day",
    "tokens_per_minute", "tokens_per_hour", "tokens_per_day",
]


RULE_ID_PLACEHOLDERS = ("user", "model")
"""What a rate-limit rule id may hold in braces: ``{user}``, the caller's subject, and ``{model}``,
the model as asked. Any other brace in an id is refused at load; ``expand_rule_id`` fills them in."""
_BRACED = re.compile(r"\{([^{}]*)\}")
_ALLOWED = " and ".join(f"{{{name}}}" for name in RULE_ID_PLACEHOLDERS)


def expand_rule_id(rule_id: str, values: Mapping[str, str]) -> str:
    """``rule_id`` with each placeholder replaced by its value in ``values`` (keyed by name), in one
    pass: a value that holds a placeholder's text is not expanded again."""
    if "{" not in rule_id:
        return rule_id
    return _BRACED.sub(lambda match: values.get(match.group(1), match.group(0)), rule_id)


def _check_rule_id(value: str) -> str:
    if "{" not in value and "}" not in value:
        return value
    rest = _BRACED.sub("", value)
    if "{" in rest or "}" in rest:
        raise ValueError(f"unbalanced brace in {value!r}; the only placeholders are {_ALLOWED}")
    unknown = [match.group(0) for match in _BRACED.finditer(value) if match.group(1) not in RULE_ID_PLACEHOLDERS]
    if unknown:
        names = dict.fromkeys(unknown)
        what = "placeholder" if len(names) == 1 else "placeholders"
        raise ValueError(f"unknown {what} {', '.join(names)} in {value!r}; the only placeholders are {_ALLOWED}")
    return value


class RateLimitRule(Model):
    id: str = Field(min_length=1)
    """Names the rule's buckets; ``{user}`` and ``{model}`` (``RULE_ID_PLACEHOLDERS``) are filled in."""
    when: When = Field(default_factory=When)
    limit_to: int = Field(gt=0)
    unit: RateUnit

    @field_validator("id")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        return _check_rule_id(value)


class RateLimitDocument(Model):
    type: Literal["gateway-rate-limiting-config"]
    backend: str = "memory"
    """``memory``, or ``redis://host:port/db`` shared by every replica."""
    fail_closed: bool = False
    """When the backend is unreachable: refuse (true) or admit and say so (false)."""
    default_max_tokens: int = Field(1024, gt=0)
    """Output tokens reserved for a token limit when the request sets no ``max_tokens``."""
    rules: tuple[RateLimitRule, ...]

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be 'memory' or a redis:// URL")
        return value


# --- gateway-load-balancing-config ---------------------------------------------------------


class RetryConfig(Model):
    attempts: int = Field(1, ge=1, le=10)
    delay: int = Field(100, ge=0)
    """Milliseconds before the first retry; doubled each time, with jitter."""
    on_status_codes: tuple[StatusCode, ...] = (429, 500, 502, 503, 504)


class LoadBalanceTarget(Model):
    target: str
    weight: int | None = Field(None, ge=0, le=100)
    priority: int | None = Field(None, ge=0)
    retry_config: RetryConfig | None = None
    fallback_status_codes: tuple[StatusCode, ...] = ()
    fallback_candidate: bool = True
    """Whether this target may be tried when another target failed with a fallback status."""
    override_params: Mapping[str, object] = Field(default_factory=dict)


class LoadBalanceRule(Model):
    id: str = Field(min_length=1)
    type: Literal["weight-based-routing", "latency-based-routing", "priority-based-routing"]
    when: When = Field(default_factory=When)
    load_balance_targets: tuple[LoadBalanceTarget, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _weights_and_priorities(self) -> LoadBalanceRule:
        targets = self.load_balance_targets
        if self.type == "weight-based-routing":
            if any(t.weight is None for t in targets):
                raise ValueError("every target of a weight-based rule needs a weight")
            total = sum(t.weight or 0 for t in targets)
            if total != 100:
                raise ValueError(f"the weights of a weight-based rule must sum to 100, not {total}")
        if self.type == "priority-based-routing" and any(t.priority is None for t in targets):
            raise ValueError("every target of a priority-based rule needs a priority")
        return self


class LoadBalanceDocument(Model):
    type: Literal["gateway-load-balancing-config"]
    rules: tuple[LoadBalanceRule, ...]


# --- gateway-fallback-config ---------------------------------------------------------------


class FallbackModel(Model):
    target: str
    override_params: Mapping[str, object] = Field(default_factory=dict)


class FallbackRule(Model):
    id: str = Field(min_length=1)
    when: FallbackWhen = Field(default_factory=FallbackWhen)
    fallback_models: tuple[FallbackModel, ...] = Field(min_length=1)


class FallbackDocument(Model):
    type: Literal["gateway-fallback-config"]
    rules: tuple[FallbackRule, ...]
