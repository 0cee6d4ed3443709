"""``otel-gateway logs``: query the request warehouse from a shell, as a table or JSON lines.

The store is ``--store URL`` if given, else the ``store`` of the configuration's
``gateway-logging-config`` document (``--config``, else ``./config`` if present), else
``sqlite:///./otel-gateway.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from .._urls import redact_url
from ..config import DEFAULT_STORE, ConfigError, load_config
from ._query import METADATA_PREFIX, STATUSES, FilterError, build_filters, parse_metadata_pair
from ._store import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    LogFilters,
    LogPage,
    Store,
    StoreUnavailable,
    record_time,
    store_for_url,
)

COLUMNS = ("TIME (UTC)", "STATUS", "MODEL", "USER", "LATENCY MS", "TOKENS", "COST", "ID")
_RIGHT = {"LATENCY MS", "TOKENS", "COST"}


def add_parser(commands: Any) -> None:
    """Adds ``logs`` to the ``otel-gateway`` subcommands (``commands``: argparse's subparsers)."""
    logs = commands.add_parser("logs", help="query the request warehouse",
                               description="Query the request warehouse, newest first.")
    logs.add_argument("--config", help="the gateway's config, for its logging store (default: ./config if present)")
    logs.add_argument("--store", help=f"a store URL instead: sqlite:///path or postgresql://... "
                                      f"(default: the config's, else {DEFAULT_STORE})")
    logs.add_argument("--since", help="30m, 1h, 2d, 1w, or an ISO 8601 time (UTC unless it has an offset)")
    logs.add_argument("--until", help="like --since: only records before this")
    logs.add_argument("--model", help="the model as the client asked for it")
    logs.add_argument("--user", help="the caller's subject, e.g. user:alice@example.com")
    logs.add_argument("--project")
    logs.add_argument("--status", help=", ".join(STATUSES))
    logs.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                      help="custom metadata equal to VALUE (repeatable)")
    logs.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"1-{MAX_LIMIT} (default {DEFAULT_LIMIT})")
    logs.add_argument("--cursor", help="continue after a previous page (printed at its end)")
    logs.add_argument("--json", action="store_true", help="one JSON record per line")


def run(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
        open_store: Callable[[str], Store] | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        filters = build_filters(
            since=args.since, until=args.until, model=args.model, user=args.user, project=args.project,
            status=args.status, metadata=[parse_metadata_pair(m) for m in args.metadata], limit=args.limit,
            cursor=args.cursor)
    except FilterError as exc:
        flag = "metadata" if exc.param.startswith(METADATA_PREFIX) else exc.param
        print(f"otel-gateway logs: --{flag}: {exc.message}", file=err)
        return 2
    url = args.store or _configured_store(args.config, err)
    if url is None:
        return 1
    try:
        store = (open_store or store_for_url)(url)
    except ValueError as exc:
        print(f"otel-gateway logs: {exc}", file=err)
        return 2
    try:
        page = asyncio.run(_query(store, filters))
    except StoreUnavailable as exc:
        print(f"otel-gateway logs: {exc}", file=err)
        return 1
    if args.json:
        for record in page.records:
            out.write(orjson.dumps(record).decode() + "\n")
    elif page.records:
        out.write(render_table(page.records))
    else:
        print(f"no log records match in {redact_url(url)}", file=err)
    if page.next_cursor:
        print(f"more records: add --cursor {page.next_cursor}", file=err)
    return 0


async def _query(store: Store, filters: LogFilters) -> LogPage:
    try:
        return await store.query(filters)
    finally:
        await store.aclose()


def _configured_store(path: str | None, err: TextIO) -> str | None:
    if path is None and not Path("config").is_dir():
        return DEFAULT_STORE
    try:
        config = load_config(path or "config")
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=err)
        return None
    if config.logging.store in ("none", "memory"):
        print(f"otel-gateway logs: the configured store is {config.logging.store!r}: no records to read", file=err)
        return None
    return config.logging.store


# -- the table -----------------------------------------------------------------------------------


def render_table(records: Sequence[Mapping[str, Any]]) -> str:
    rows = [COLUMNS, *(_cells(record) for record in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for row in rows:
        cells = [cell.rjust(width) if COLUMNS[i] in _RIGHT else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _cells(record: Mapping[str, Any]) -> tuple[str, ...]:
    attributes = record.get("attributes") or {}
    metadata = attributes.get("metadata") or {}
    tokens = metadata.get("tokens") or {}
    moment = record_time(record.get("timestamp"))
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if isinstance(moment, datetime) else "-",
        _show(metadata.get("status")),
        _show(attributes.get("model")),
        _show(attributes.get("user_id")),
        _number(metadata.get("latency"), "{:.0f}"),
        _number(tokens.get("total") if isinstance(tokens, Mapping) else None, "{:.0f}"),
        _cost(metadata.get("cost")),
        _show(attributes.get("id")),
    )


def _show(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _number(value: Any, template: str) -> str:
    return template.format(value) if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _cost(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"

