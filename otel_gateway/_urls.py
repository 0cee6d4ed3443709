"""URLs: where a provider account's requests go, built from parts and kept on its origin; and
URLs that carry credentials, made safe to print.

A provider's upstream URLs are never strings glued together. The base URL is parsed once; every
URL is that parse with only its path (the base path, then segments each checked or quoted to
stay one segment) and its query (escaped where needed) replaced, and is checked, by two parsers
and by the very string a transport sends, to keep the base's scheme, host and port: no path,
name or query can turn into userinfo, another host or a fragment.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from .errors import GatewayError, InvalidRequestError

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PCHAR = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:")
"""What a path segment may hold unescaped: RFC 3986 ``pchar`` without ``@`` (where userinfo ends)
and ``%`` (escapes are read apart)."""
_HEX = frozenset("0123456789abcdefABCDEF")
_REFUSED_ESCAPES = {"2f": "'/'", "5c": "'\\'", "40": "'@'", "25": "'%'"}
"""Escapes that would hide a separator or authority (``/``, ``\\``, ``@``) or a second encoding
(``%25``: ``%252F`` is refused, never decoded twice nor passed on for an upstream to decode twice)."""
_RAW_NAMES = {"@": "an '@'", "\\": "a '\\'", "#": "a '#'", "%": "a '%' that starts no escape"}
_QUERY_KEPT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:/?]|%[0-9A-Fa-f]{2})*")
_QUERY_ESCAPED = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9\-._~!$&'()*+,;=:/?%]")
_OFF_PATH = re.compile(r"[\\#@\s\x00-\x1f\x7f]")
"""Characters no URL the gateway sends holds after its origin (escaped, they are fine)."""


def redact_url(url: str) -> str:
    """The URL with its password, if any, replaced by ``***``: for logs, spans and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def passthrough_path(raw: str) -> str:
    """``raw``, a ``/v1/...`` path as the client sent it (still percent-encoded), if each of its
    segments stays one segment wherever it is appended; raises ``invalid_path`` (400) if not.

    Refused: encoded ``/``, ``\\``, ``@`` and ``%`` (double encoding), control characters raw or
    encoded, ``.`` and ``..`` segments raw or encoded, empty segments (``//``, a trailing ``/`` is
    kept), a ``%`` starting no escape, and any character outside RFC 3986's ``pchar`` unencoded
    (``@``, ``\\``, ``#``, spaces, non-ASCII). Everything else is passed on as sent, never decoded."""
    found = _path_problem(raw)
    if found is not None:
        raise InvalidRequestError(
            f"The path may not hold {found}: each part of a passed-through path must stay one segment of the "
            "provider's URL path.", code="invalid_path", param="path",
        )
    return raw


def _path_problem(raw: str) -> str | None:
    first, *segments = raw.split("/")
    if first:
        return "a path not starting with '/'"
    for index, segment in enumerate(segments):
        if segment:
            found = _segment_problem(segment)
            if found is not None:
                return found
        elif index < len(segments) - 1:
            return "an empty segment ('//')"
    return None if segments[:1] == ["v1"] else "a first segment other than 'v1'"


def _segment_problem(segment: str) -> str | None:
    decoded = bytearray()
    index = 0
    while index < len(segment):
        char = segment[index]
        if char in _PCHAR:
            decoded.append(ord(char))
            index += 1
            continue
        escape = segment[index + 1:index + 3]
        if char != "%" or len(escape) < 2 or not _HEX.issuperset(escape):
            return _RAW_NAMES.get(char) or f"the character {char!r} unencoded"
        byte = int(escape, 16)
        if byte < 0x20 or byte == 0x7F:
            return f"an encoded control character (%{escape})"
        if escape.lower() in _REFUSED_ESCAPES:
            return f"an encoded {_REFUSED_ESCAPES[escape.lower()]} (%{escape})"
        decoded.append(byte)
        index += 3
    return "a '.' or '..' segment" if decoded in (b".", b"..") else None


def encoded_query(raw: str) -> str:
    """``raw`` with every character a query may not hold as it is (``#``, ``@``, ``\\``, spaces,
    controls, non-ASCII, a ``%`` starting no escape) percent-encoded; escapes are kept, not decoded."""
    if _QUERY_KEPT.fullmatch(raw):
        return raw
    return _QUERY_ESCAPED.sub(_escaped, raw)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    data = char.encode("latin-1") if ord(char) < 256 else char.encode()
    return "".join(f"%{byte:02X}" for byte in data)


def path_segment(name: str) -> str:
    """``name`` (a model, a deployment, an endpoint) as one path segment, every reserved character quoted."""
    if name in ("", ".", ".."):
        raise GatewayError(f"'{name}' cannot be a segment of an upstream URL path.", code="invalid_upstream_path")
    return quote(name, safe="")


class Upstream:
    """The origin of one provider account: its base URL parsed once. Every URL is built from it,
    and every URL is checked against it before a request is made or sent."""

    def __init__(self, base_url: str, name: str) -> None:
        base = httpx.URL(base_url)
        if base.scheme not in _DEFAULT_PORTS or not base.raw_host or base.userinfo or base.query or base.fragment:
            raise ValueError(f"{redact_url(base_url)} is not a base URL (http(s)://host[:port][/path])")
        self.name = name
        self.scheme = base.scheme
        self.raw_host = base.raw_host
        self.port = base.port or _DEFAULT_PORTS[base.scheme]
        self.base_path = base.raw_path.decode("ascii").rstrip("/")
        self._base = base
        self._origin = f"{base.scheme}://{base.netloc.decode('ascii')}"
        """What the text of every URL starts with, followed by its path."""
        if _OFF_PATH.search(self.base_path):
            raise ValueError(f"the path of {redact_url(base_url)} holds '@', '\\', '#', a space or a control")

    def url(self, path: str, query: str = "") -> httpx.URL:
        """The URL of ``path`` (percent-encoded, from its first ``/``) after the base path, with
        ``query`` encoded; checked as :meth:`check` does, and parsed again from its text."""
        raw = (self.base_path + path or "/") + ("?" + encoded_query(query) if query else "")
        try:
            url = self._base.copy_with(raw_path=raw.encode("ascii"))
        except (httpx.InvalidURL, UnicodeEncodeError) as exc:
            raise self._refused() from exc
        self.check(url)
        reparsed = urlsplit(str(url))
        if ((reparsed.scheme, reparsed.hostname, reparsed.port or _DEFAULT_PORTS[self.scheme], reparsed.username)
                != (self.scheme, self.raw_host.decode("ascii").lower(), self.port, None)):
            raise self._refused()
        return url

    def check(self, url: httpx.URL) -> httpx.URL:
        """``url`` if it is on this origin: same scheme, host and port, no userinfo nor fragment,
        and its text (what a transport sends) this origin followed by a path free of ``@``, ``\\``,
        ``#``, spaces and controls. Raises if not: the request must not be sent."""
        text = str(url)
        if (url.scheme != self.scheme or url.raw_host != self.raw_host
                or (url.port or _DEFAULT_PORTS.get(url.scheme)) != self.port or url.userinfo or url.fragment
                or not text.startswith(self._origin) or text[len(self._origin):len(self._origin) + 1] not in ("/", "")
                or _OFF_PATH.search(text, len(self._origin))):
            raise self._refused()
        return url

    def _refused(self) -> GatewayError:
        return GatewayError(
            f"A request for the provider account '{self.name}' would have left the origin of its base URL; "
            "it was not sent.", code="upstream_origin_mismatch",
        )
