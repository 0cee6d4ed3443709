"""``memory``: a store in this process, for trying the gateway out and for tests. Records live as
long as the process; the same filters and pages as the database stores."""

from __future__ import annotations

import time
from typing import Any

from ._store import LogFilters, LogPage, Position, Row, decode_cursor, encode_cursor, to_micros, to_row


class MemoryStore:
    kind = "memory"
    """What ``/readyz`` calls this store."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[Row, dict[str, Any]]] = {}
        self.writes = 0
        """Batches written (a test can tell batching from it)."""

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every record, in the order they were first written."""
        return [record for _, record in self._rows.values()]

    async def write(self, records: list[dict[str, Any]]) -> None:
        self.writes += 1
        for record in records:
            row = to_row(record)
            if row is not None and row.id not in self._rows:
                self._rows[row.id] = (row, record)

    async def query(self, filters: LogFilters) -> LogPage:
        rows = sorted((entry for entry in self._rows.values() if _matches(entry, filters)),
                      key=lambda entry: (entry[0].ts_us, entry[0].id), reverse=True)
        if filters.cursor is not None:
            after = decode_cursor(filters.cursor)
            rows = [e for e in rows if (e[0].ts_us, e[0].id) < (after.ts_us, after.id)]
        page = rows[:filters.limit]
        cursor = None
        if len(rows) > filters.limit:
            last = page[-1][0]
            cursor = encode_cursor(Position(last.ts_us, last.id))
        return LogPage([record for _, record in page], cursor)

    async def prune(self, older_than_seconds: float) -> int:
        cutoff = int((time.time() - older_than_seconds) * 1_000_000)
        old = [key for key, (row, _) in self._rows.items() if row.ts_us < cutoff]
        for key in old:
            del self._rows[key]
        return len(old)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def _matches(entry: tuple[Row, dict[str, Any]], filters: LogFilters) -> bool:
    row, record = entry
    if filters.since is not None and row.ts_us < to_micros(filters.since):
        return False
    if filters.until is not None and row.ts_us >= to_micros(filters.until):
        return False
    for value, wanted in ((row.model, filters.model), (row.user_id, filters.user),
                          (row.project_id, filters.project), (row.status, filters.status)):
        if wanted is not None and value != wanted:
            return False
    metadata = (record.get("attributes") or {}).get("metadata") or {}
    return all(metadata.get(key) == value for key, value in filters.metadata)

