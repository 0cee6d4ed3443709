"""Records that the store could not take, kept on local disk until it can: JSONL files, fsync'd.

Blocking file I/O: call it off the event loop. Each process appends to its own file
(``pending-<pid>-<n>.jsonl``); a replay first seals it (``segment-...``), then claims sealed
segments one at a time by renaming them (``replaying-<pid>-...``), so that gateway workers sharing
a spool directory never replay the same file twice. Files left by a process that died are adopted
at start. A segment is deleted once all of it is stored; a replay that fails halfway sends part of
it again later, which the store ignores (writes are idempotent on the record id).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger("otel_gateway.warehouse")

_NAME = re.compile(r"^(pending|segment|replaying)-(\d+)-(.+)\.jsonl$")
SEGMENT_RECORDS = 2_000
"""A pending file is sealed after this many records, so a replay never holds more in memory."""


class Spool:
    def __init__(self, directory: str | os.PathLike[str], *, segment_records: int = SEGMENT_RECORDS) -> None:
        self.directory = Path(directory)
        self._segment_records = segment_records
        self._pid = os.getpid()
        self._serial = itertools.count()
        self._active: Path | None = None
        self._active_records = 0
        self._pending = self._adopt_orphans()

    @property
    def pending(self) -> bool:
        """Whether records wait to be replayed."""
        return self._pending

    def waiting_bytes(self) -> int:
        """The size of the files waiting in the directory to be replayed (every process's that
        shares it; set-aside ``*.failed`` files not counted). Blocking: a listing and a stat a file."""
        total = 0
        if not self.directory.is_dir():
            return 0
        for path in self.directory.iterdir():
            if _NAME.match(path.name):
                with contextlib.suppress(FileNotFoundError):  # claimed, sealed or replayed meanwhile
                    total += path.stat().st_size
        return total

    def append(self, records: list[dict[str, Any]]) -> None:
        """Appends and fsyncs; raises ``OSError`` (or ``TypeError`` for what is not JSON) on failure."""
        data = b"".join(orjson.dumps(r, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n" for r in records)
        if self._active is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._active = self.directory / f"pending-{self._pid}-{time.time_ns():020d}-{next(self._serial)}.jsonl"
            self._active_records = 0
        with open(self._active, "ab") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        self._pending = True
        self._active_records += len(records)
        if self._active_records >= self._segment_records:
            self._seal()

    def write_segment(self, records: list[dict[str, Any]]) -> Path:
        """Writes ``records`` as a sealed segment of their own (complete once it appears, fsync'd),
        beside the pending file another thread may be appending to; raises ``OSError`` on failure."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{self._pid}-{time.time_ns():020d}-{next(self._serial)}.jsonl"
        partial, segment = self.directory / f"writing-{name}", self.directory / f"segment-{name}"
        with open(partial, "wb") as file:
            file.write(b"".join(orjson.dumps(r, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n"
                                for r in records))
            file.flush()
            os.fsync(file.fileno())
        partial.rename(segment)
        self._pending = True
        return segment

    def claim(self) -> Path | None:
        """The oldest sealed segment, now this process's to replay; ``None`` when nothing waits
        (then :attr:`pending` is false)."""
        self._seal()
        for path in self._files("replaying"):  # one of ours, left by a replay that failed
            if _pid_of(path) == self._pid:
                return path
        for path in self._files("segment"):
            claimed = path.with_name(f"replaying-{self._pid}-{_rest_of(path)}.jsonl")
            try:
                path.rename(claimed)
            except FileNotFoundError:  # another worker claimed it first
                continue
            return claimed
        self._pending = False
        return None

    def read(self, path: Path, batch_size: int) -> Iterator[list[dict[str, Any]]]:
        """The segment's records in batches; a torn last line (a crash mid-append) is skipped."""
        batch: list[dict[str, Any]] = []
        with open(path, "rb") as file:
            for number, line in enumerate(file, 1):
                try:
                    batch.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    if line.strip():
                        logger.warning("spool %s line %d is not JSON; skipped", path, number)
                    continue
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def done(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def quarantine(self, path: Path) -> Path:
        """Sets aside a segment the store refuses for good, for a person to look at."""
        target = path.with_suffix(".failed")
        path.rename(target)
        return target

    def _seal(self) -> None:
        if self._active is not None and self._active.exists():
            self._active.rename(self._active.with_name("segment-" + self._active.name.removeprefix("pending-")))
        self._active = None
        self._active_records = 0

    def _files(self, kind: str) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.startswith(f"{kind}-") and _NAME.match(p.name))

    def _adopt_orphans(self) -> bool:
        """Seals the files of processes that are gone; true when anything waits."""
        for path in self._files("pending") + self._files("replaying"):
            pid = _pid_of(path)
            if pid == self._pid or not _alive(pid):  # our pid: a process before us had it
                with contextlib.suppress(FileNotFoundError):
                    path.rename(path.with_name(f"segment-{pid}-{_rest_of(path)}.jsonl"))
        return bool(self._files("segment"))


def _pid_of(path: Path) -> int:
    match = _NAME.match(path.name)
    return int(match[2]) if match else -1


def _rest_of(path: Path) -> str:
    """What follows the kind and the pid in a spool file's name: its time and serial."""
    match = _NAME.match(path.name)
    return match[3] if match else path.stem


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
