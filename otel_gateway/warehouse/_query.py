"""Filters from user input, the same for ``otel-gateway logs`` and ``GET /api/logs``: each value
checked here, each mistake a :class:`FilterError` naming the filter, so the CLI prints it and
the HTTP endpoint answers 400 with it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import get_args

from ._exchange import Status
from ._store import DEFAULT_LIMIT, EARLIEST, LATEST, MAX_LIMIT, LogFilters, decode_cursor, to_micros

STATUSES: tuple[str, ...] = get_args(Status)
METADATA_PREFIX = "metadata."
QUERY_PARAMS = ("since", "until", "model", "user", "project", "status", "limit", "cursor")
"""The query parameters of ``GET /api/logs``, besides ``metadata.<key>``."""

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

_CURSOR_RANGE = range(to_micros(EARLIEST), to_micros(LATEST) + 1)


class FilterError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


def parse_time(value: str, *, param: str = "since", now: datetime | None = None) -> datetime:
    """A duration back from now (``90s``, ``30m``, ``1h``, ``2d``, ``1w``, ``1h30m``) or an ISO 8601
    date or date-time (``2025-03-05``, ``2025-03-05T16:00:00Z``; without an offset: UTC)."""
    text = value.strip()
    if _DURATION.fullmatch(text):
        seconds = sum(float(number) * _UNIT[unit] for number, unit in _PART.findall(text))
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        except OverflowError:
            raise FilterError(param, f"duration {value!r} is too long") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(param, f"{value!r} is neither a duration like 30m, 1h, 2d nor an ISO 8601 time "
                                 "like 2025-03-05T16:00:00Z") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    # 0001-01-01T00:00:00+14:00 is in year 0 in UTC, 9999-12-31T23:59:59-14:00 in year 10000.
    return EARLIEST if moment < EARLIEST else LATEST if moment > LATEST else moment


def parse_metadata_pair(text: str, *, param: str = "metadata") -> tuple[str, str]:
    """``key=value`` (the CLI's ``--metadata``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise FilterError(param, f"{text!r} is not key=value")
    return key.strip(), value


def build_filters(
    *,
    since: str | None = None,
    until: str | None = None,
    model: str | None = None,
    user: str | None = None,
    project: str | None = None,
    status: str | None = None,
    metadata: Iterable[tuple[str, str]] = (),
    limit: str | int | None = None,
    cursor: str | None = None,
    now: datetime | None = None,
) -> LogFilters:
    """Empty strings count as absent (an empty form field filters nothing)."""
    if status and status not in STATUSES:
        raise FilterError("status", f"{status!r} is not one of {', '.join(STATUSES)}")
    pairs = tuple(metadata)
    for name, value in (("model", model), ("user", user), ("project", project)):
        _check_text(name, value)
    for key, value in pairs:
        if not key:
            raise FilterError("metadata", "a metadata filter needs a key")
        _check_text(f"{METADATA_PREFIX}{key}", key)
        _check_text(f"{METADATA_PREFIX}{key}", value)
    if cursor:
        _check_cursor(cursor)
    return LogFilters(
        since=parse_time(since, param="since", now=now) if since else None,
        until=parse_time(until, param="until", now=now) if until else None,
        model=model or None,
        user=user or None,
        project=project or None,
        status=status or None,
        metadata=pairs,
        limit=_limit(limit),
        cursor=cursor or None,
    )


def filters_from_query(items: Iterable[tuple[str, str]], *, now: datetime | None = None) -> LogFilters:
    """``GET /api/logs`` query parameters: those of :data:`QUERY_PARAMS` once each, and any number of
    ``metadata.<key>=<value>``. An unknown parameter is an error, not silently ignored."""
    single: dict[str, str] = {}
    metadata: list[tuple[str, str]] = []
    for name, value in items:
        if name.startswith(METADATA_PREFIX):
            metadata.append((name[len(METADATA_PREFIX):], value))
        elif name not in QUERY_PARAMS:
            raise FilterError(name, f"unknown filter; use {', '.join(QUERY_PARAMS)} or metadata.<key>")
        elif name in single:
            raise FilterError(name, "given more than once")
        else:
            single[name] = value
    return build_filters(metadata=metadata, now=now, **single)


def _check_text(param: str, value: str | None) -> None:
    """A text both stores can compare: PostgreSQL's text holds no NUL character, and neither store
    a lone surrogate (which a command line's undecodable bytes become)."""
    if not value:
        return
    if "\x00" in value:
        raise FilterError(param, "contains a NUL character")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise FilterError(param, "is not valid UTF-8 text") from None


def _check_cursor(cursor: str) -> None:
    try:
        position = decode_cursor(cursor)
    except ValueError as exc:
        raise FilterError("cursor", str(exc)) from None
    if position.ts_us not in _CURSOR_RANGE or "\x00" in position.id:
        raise FilterError("cursor", "not a cursor returned by this endpoint")
    _check_text("cursor", position.id)


def _limit(value: str | int | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    digits = value.strip().lstrip("0") or "0" if isinstance(value, str) else ""
    if digits.isdigit():  # more digits than the maximum has are never handed to int()
        limit = MAX_LIMIT + 1 if len(digits) > len(str(MAX_LIMIT)) else int(digits)
    else:
        try:
            limit = int(value)
        except ValueError:
            raise FilterError("limit", f"{value!r} is not a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise FilterError("limit", f"must be between 1 and {MAX_LIMIT}")
    return limit
