"""Where log records are kept: the :class:`Store` protocol every backend implements, the filters a
query takes, the page it returns, and the columns every backend derives from a record.

A store is the last step of the write pipeline and the source of ``otel-gateway logs`` and
``GET /api/logs``. Writes are idempotent on the record id (``attributes.id``, the request id), so
a batch replayed from the spool after an outage never duplicates a row. Queries return the
newest records first, a page at a time, with an opaque keyset cursor for the next page.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from .._urls import redact_url

logger = logging.getLogger("otel_gateway.warehouse")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
"""The instants both stores can represent (SQLite keeps µs in an integer; a PostgreSQL parameter is
a Python datetime): a record's time outside is stored clamped to them, a query's time too, since no
record can lie beyond, and a cursor outside is refused (no page ends there)."""


class StoreUnavailable(Exception):
    """The store could not be reached or written (connection lost, file locked or unwritable).
    Raised from :meth:`Store.write` so the pipeline spools the batch and replays it later."""


@dataclass(frozen=True, slots=True)
class LogFilters:
    """What a query asks for; every field given must match (AND). Built from user input by
    :func:`otel_gateway.warehouse._query.build_filters`, which validates each value."""

    since: datetime | None = None
    """Records at or after this instant (timezone-aware)."""
    until: datetime | None = None
    """Records before this instant (timezone-aware)."""
    model: str | None = None
    user: str | None = None
    project: str | None = None
    status: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    """``attributes.metadata.<key>`` equals the string ``value``, for each pair."""
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    """``LogPage.next_cursor`` of the previous page."""

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {self.limit}")


@dataclass(frozen=True, slots=True)
class LogPage:
    records: list[dict[str, Any]]
    """Newest first."""
    next_cursor: str | None
    """Pass as ``LogFilters.cursor`` for the next (older) page; ``None`` on the last page."""


class Store(Protocol):
    async def write(self, records: list[dict[str, Any]]) -> None:
        """Stores a batch in one transaction; records whose id is already stored are skipped.
        Raises :class:`StoreUnavailable` when the store cannot be written; a later call retries."""
        ...

    async def query(self, filters: LogFilters) -> LogPage: ...

    async def prune(self, older_than_seconds: float) -> int:
        """Deletes the records older than that; returns how many."""
        ...

    async def ping(self) -> bool:
        """True when the store answers (for ``/readyz``); never raises."""
        ...

    async def aclose(self) -> None: ...


def store_for_url(url: str) -> Store:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``postgresql://...`` (``postgres://``
    too); ``ValueError`` for anything else. The modules of the stores are imported on demand."""
    if url.startswith("sqlite:///"):
        from ._sqlite import SQLiteStore

        path = url.removeprefix("sqlite:///")
        if not path:
            raise ValueError(f"no file in store URL {url!r}; use sqlite:///path/to/file.db")
        return SQLiteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported store URL {redact_url(url)!r}; use sqlite:///path or postgresql://...")


# -- cursors -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the last record's time (µs since the epoch) and id."""

    ts_us: int
    id: str


def encode_cursor(position: Position) -> str:
    raw = orjson.dumps([position.ts_us, position.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """Raises ``ValueError`` on anything :func:`encode_cursor` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts_us, record_id = orjson.loads(raw)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
        raise ValueError("not a cursor returned by this endpoint") from None
    if not isinstance(ts_us, int) or isinstance(ts_us, bool) or not isinstance(record_id, str):
        raise ValueError("not a cursor returned by this endpoint")
    return Position(ts_us, record_id)


# -- the columns of a record ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """The indexed columns of one record, beside the record itself (``record_json``)."""

    id: str
    ts_us: int
    model: str | None
    user_id: str | None
    project_id: str | None
    status: str | None
    provider: str | None
    latency_ms: float | None
    cost: float | None
    tokens: int | None
    record_json: str


def to_micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us // 1_000_000, UTC).replace(microsecond=ts_us % 1_000_000)


def record_time(value: Any) -> datetime | None:
    """A record's ``timestamp``: ISO 8601 (``Z`` or an offset; naive means UTC) or Unix time
    in seconds or milliseconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return None
        seconds = value / 1000 if abs(value) > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return None


def to_row(record: Mapping[str, Any]) -> Row | None:
    """The columns of ``record``, or ``None`` (logged) when it has no id: such a record could
    never be stored idempotently, and raising would make the pipeline retry it forever."""
    attributes = _mapping(record.get("attributes"))
    record_id = attributes.get("id")
    if not isinstance(record_id, str) or not record_id:
        logger.error("dropping a log record without attributes.id (keys: %s)", sorted(record)[:10])
        return None
    metadata = _mapping(attributes.get("metadata"))
    moment = record_time(record.get("timestamp"))
    if moment is None:
        logger.warning("log record %s has no valid timestamp; indexed at the time it was stored", record_id)
        moment = datetime.now(UTC)
    # 0001-01-01T00:00:00+14:00 is in year 0 in UTC, which a PostgreSQL timestamptz parameter refuses.
    moment = EARLIEST if moment < EARLIEST else LATEST if moment > LATEST else moment
    return Row(
        id=_no_nul(record_id),
        ts_us=to_micros(moment),
        model=_text(attributes.get("model")),
        user_id=_text(attributes.get("user_id")),
        project_id=_text(attributes.get("project_id")) or _text(metadata.get("projectId")),
        status=_text(metadata.get("status")),
        provider=_text(attributes.get("provider")),
        latency_ms=_number(metadata.get("latency")),
        cost=_number(metadata.get("cost")),
        tokens=_integer(_mapping(metadata.get("tokens")).get("total")),
        record_json=dump_record(record),
    )


def dump_record(record: Mapping[str, Any]) -> str:
    """JSON text that both SQLite and PostgreSQL's ``jsonb`` accept: values orjson cannot
    encode become strings, and NUL characters (which ``jsonb`` refuses) become U+FFFD."""
    try:
        text = orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        text = orjson.dumps(_clean(record), default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    if "\\u0000" in text:
        text = orjson.dumps(_clean(record), default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    if isinstance(value, Mapping):
        return {str(_clean(key)): _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def _mapping(value: Any) -> Mapping[str, Any]:
    # dict first: an ABC check costs more than the rest of this function.
    return value if isinstance(value, dict | Mapping) else {}


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return _no_nul(value)
    if value is None or isinstance(value, dict | list | Mapping):
        return None
    return _no_nul(str(value))


def _no_nul(text: str) -> str:
    """PostgreSQL's text refuses NUL (and the whole batch with it), so every column gets U+FFFD for it,
    as ``record_json`` does; a lone surrogate, which no UTF-8 store takes, becomes ``?``."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    number = _number(value)
    return None if number is None or abs(number) > 2**62 else int(number)
