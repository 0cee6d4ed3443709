"""The one redaction rule for everything that leaves the gateway: request log records, spans and
their events, log lines and error bodies.

Two halves, one :class:`Redactor` built once per configuration (:meth:`Redactor.for_config`):

- **by value**: every configured credential (the providers' API keys, the gateway's own keys) and
  anything shaped like a key (``sk-...``, ``sk-ant-...``) reads ``[REDACTED]`` wherever it occurs
  in text;
- **by name**: the value of a header, query parameter or ``x-gateway-metadata`` key named like a
  credential reads ``[REDACTED]``: ``authorization``, ``proxy-authorization``, ``x-api-key``,
  ``api-key``, ``cookie``, ``key``, ``api_key``, ``token``, ``secret``, ``password``, ``sig``, ...,
  any name ending in ``key``, ``token`` or ``secret`` (in any case), and the configuration's
  ``redact_headers``.

A leaf module: it imports nothing of the gateway's at run time, so anything may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import orjson

if TYPE_CHECKING:
    from .config import GatewayConfig

__all__ = ["ALWAYS_REDACTED", "REDACTED", "SECRET_NAMES", "Redactor", "caller_credentials"]

REDACTED = "[REDACTED]"
ALWAYS_REDACTED = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"})
"""Header names whose values are credentials, whatever the configuration says."""
SECRET_NAMES = ALWAYS_REDACTED | frozenset({
    "key", "api_key", "apikey", "access_token", "token", "secret", "password", "sig", "signature", "code",
    "client_secret",
})
"""Names (of headers, query parameters, metadata keys) whose values are credentials."""
_SECRET_SUFFIXES = ("key", "token", "secret")
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*]{6,}")
"""Anything shaped like an OpenAI or Anthropic (``sk-ant-...``) key."""
_KEY_MARK = "sk-"
_MIN_SECRET = 4
"""Shorter configured values are not scrubbed by value: they would blank out ordinary words."""


class Redactor:
    """Redacts credentials by value (``secrets``, key-shaped text) and by name (``names``, plus
    :data:`SECRET_NAMES`). Immutable; cheap where there is nothing to redact."""

    __slots__ = ("_names", "_needles", "_secrets")

    def __init__(self, secrets: Iterable[str] = (), names: Iterable[str] = ()) -> None:
        self._secrets = frozenset(s for s in secrets if len(s) >= _MIN_SECRET)
        self._names = SECRET_NAMES | frozenset(n.lower() for n in names)
        needles = set(self._secrets)
        needles.update(orjson.dumps(s).decode()[1:-1] for s in self._secrets)  # as they read inside JSON text
        # Longest first: a secret that contains a shorter one is replaced whole.
        self._needles = tuple(sorted(needles, key=len, reverse=True))

    @classmethod
    def for_config(cls, config: GatewayConfig) -> Redactor:
        """The configuration's rule: its providers' and gateway keys' credentials, its ``redact_headers``."""
        keys = (k.key.get_secret_value() for k in (config.auth.keys if config.auth else ()) if k.key is not None)
        return cls((*config.secrets(), *keys), config.logging.redact_headers)

    def with_secrets(self, secrets: Iterable[str]) -> Redactor:
        """This rule, plus ``secrets`` (a caller's own key, say); ``self`` when they add nothing."""
        extra = {s for s in secrets if len(s) >= _MIN_SECRET} - self._secrets
        if not extra:
            return self
        redactor = Redactor((*self._secrets, *extra))
        redactor._names = self._names
        return redactor

    # -- by value ---------------------------------------------------------------------------------

    def text(self, text: str) -> str:
        """``text`` with every secret and key-shaped word ``[REDACTED]``."""
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, REDACTED)
        # The regex tries every position of the text; a substring test skips it where no key can be.
        return _KEY_LIKE.sub(REDACTED, text) if _KEY_MARK in text else text

    def holds_secret(self, text: str) -> bool:
        """Whether :meth:`text` would change ``text``; cheaper than calling it and comparing."""
        for needle in self._needles:
            if needle in text:
                return True
        return _KEY_MARK in text and _KEY_LIKE.search(text) is not None

    def value(self, value: Any) -> Any:
        """A JSON-like value (dicts, lists, strings, numbers) with :meth:`text` applied to every
        string, keys included; the value itself when there is nothing to redact."""
        dumped = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return value if self.text(dumped) == dumped else self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self._walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(v) for v in value]
        return value

    # -- by name (and value) ----------------------------------------------------------------------

    def secret_name(self, name: str) -> bool:
        """Whether a header, query parameter or metadata key of this name holds a credential."""
        lowered = name.lower()
        return lowered in self._names or lowered.endswith(_SECRET_SUFFIXES)

    def headers(self, fields: Mapping[str, str]) -> dict[str, str]:
        """Names to values (headers, ``x-gateway-metadata``): a secret name's value ``[REDACTED]``,
        every other value by :meth:`text`."""
        return {name: REDACTED if self.secret_name(name) else self.text(value) for name, value in fields.items()}

    def query(self, query: str) -> str:
        """A query string with the value of every parameter named like a credential, or holding
        one (percent-decoded), ``[REDACTED]``; everything else as it was."""
        if not query:
            return ""
        parts = []
        for part in query.split("&"):
            name, sep, raw = part.partition("=")
            if sep and (self.secret_name(unquote_plus(name)) or self.holds_secret(unquote_plus(raw))):
                part = f"{self.text(name)}={REDACTED}"
            else:
                part = self.text(part)
            parts.append(part)
        return "&".join(parts)

    def url(self, url: str) -> str:
        """A URL with its user info and its query (:meth:`query`) redacted, and :meth:`text` over the rest."""
        rest, hash_sign, fragment = url.partition("#")
        base, question, query = rest.partition("?")
        scheme, slashes, authority = base.partition("://")
        if slashes and "@" in authority.partition("/")[0]:
            base = f"{scheme}://{REDACTED}@{authority.partition('@')[2]}"
        if question:
            base = f"{base}?{self.query(query)}"
        return self.text(base) + hash_sign + (self.text(fragment) if hash_sign else "")



def caller_credentials(headers: Mapping[str, str]) -> list[str]:
    """The credentials a client presented (``Authorization``'s token, ``x-api-key``, ``api-key``);
    headers' names lower-cased."""
    presented = (headers.get("authorization", "").partition(" ")[2].strip(), headers.get("x-api-key", ""),
                 headers.get("api-key", ""))
    return [secret for secret in presented if len(secret) >= _MIN_SECRET]
