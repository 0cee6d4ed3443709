"""The SQL both stores share: the table's columns, its indexes, and a query's ``WHERE``, ``ORDER BY``
and ``LIMIT`` built from :class:`LogFilters`. A :class:`Dialect` supplies the few differences
(placeholders, column types, the time column's values, how a metadata key is matched)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._store import LogFilters, Position, Row, decode_cursor, to_micros

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,50}")
PRUNE_CHUNK = 5000

INDEXED = {
    "ts": ("ts", "id"),
    "model": ("model", "ts", "id"),
    "user": ("user_id", "ts", "id"),
    "project": ("project_id", "ts", "id"),
    "status": ("status", "ts", "id"),
}
"""Index name suffix -> columns. Each filter column is followed by ``ts, id``, so an equality filter
reads its rows already in page order and the cursor's keyset condition is an index range."""


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"invalid table name {name!r}: letters, digits and _ only")
    return name


@dataclass(frozen=True)
class Dialect:
    placeholder: Callable[[int], str]
    """The ``n``-th (1-based) parameter marker; numbered, so one parameter can be used twice."""
    types: dict[str, str]
    """Column -> SQL type, for the columns whose type differs between databases."""
    time_value: Callable[[int], Any]
    """µs since the epoch -> the value bound to the ``ts`` column."""
    metadata_match: Callable[[str, str, Callable[[Any], str]], str]
    """(key, value, bind) -> a condition on ``record``; ``bind`` adds a parameter, returns its marker."""


def create_table(table: str, dialect: Dialect) -> list[str]:
    t = dialect.types
    statements = [
        f"CREATE TABLE IF NOT EXISTS {table} ("
        f"id TEXT PRIMARY KEY, ts {t['ts']} NOT NULL, model TEXT, user_id TEXT, project_id TEXT, "
        f"status TEXT, provider TEXT, latency_ms {t['float']}, cost {t['float']}, tokens {t['int']}, "
        f"record {t['record']} NOT NULL)"
    ]
    statements += [
        f"CREATE INDEX IF NOT EXISTS {table}_{name}_idx ON {table} ({', '.join(columns)})"
        for name, columns in INDEXED.items()
    ]
    return statements


COLUMNS = ("id", "ts", "model", "user_id", "project_id", "status", "provider", "latency_ms", "cost", "tokens", "record")


def insert_statement(table: str, dialect: Dialect, record_cast: str = "") -> str:
    markers = [dialect.placeholder(i + 1) for i in range(len(COLUMNS))]
    markers[-1] += record_cast
    return (f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join(markers)}) "
            "ON CONFLICT (id) DO NOTHING")


def row_values(row: Row, dialect: Dialect) -> tuple[Any, ...]:
    return (row.id, dialect.time_value(row.ts_us), row.model, row.user_id, row.project_id, row.status,
            row.provider, row.latency_ms, row.cost, row.tokens, row.record_json)


def select_page(table: str, filters: LogFilters, dialect: Dialect) -> tuple[str, list[Any]]:
    """``SELECT ts, id, record`` for one page plus one row (which tells whether there is a next
    page), newest first, ties broken by id so the keyset cursor is exact."""
    params: list[Any] = []

    def bind(value: Any) -> str:
        params.append(value)
        return dialect.placeholder(len(params))

    where: list[str] = []
    if filters.since is not None:
        where.append(f"ts >= {bind(dialect.time_value(to_micros(filters.since)))}")
    if filters.until is not None:
        where.append(f"ts < {bind(dialect.time_value(to_micros(filters.until)))}")
    for column, value in (("model", filters.model), ("user_id", filters.user),
                          ("project_id", filters.project), ("status", filters.status)):
        if value is not None:
            where.append(f"{column} = {bind(value)}")
    for key, value in filters.metadata:
        where.append(dialect.metadata_match(key, value, bind))
    if filters.cursor is not None:
        position: Position = decode_cursor(filters.cursor)
        ts = bind(dialect.time_value(position.ts_us))
        where.append(f"(ts < {ts} OR (ts = {ts} AND id < {bind(position.id)}))")
    sql = f"SELECT ts, id, record FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY ts DESC, id DESC LIMIT {bind(filters.limit + 1)}"
    return sql, params


def prune_statement(table: str, dialect: Dialect) -> str:
    """Deletes at most :data:`PRUNE_CHUNK` rows older than the bound time; run until it deletes
    fewer, so no single transaction holds the write lock for long."""
    p = dialect.placeholder(1)
    return (f"DELETE FROM {table} WHERE id IN "
            f"(SELECT id FROM {table} WHERE ts < {p} ORDER BY ts LIMIT {PRUNE_CHUNK})")
