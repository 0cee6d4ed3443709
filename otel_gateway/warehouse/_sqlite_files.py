"""The SQLite store's guard against the one store fault that kills a process: in WAL mode, SQLite
maps the ``-shm`` file (the WAL index) into memory, shared by every connection to the database in
the process, and writes through the mapping (on every read and write, and on close). If that file
can no longer be written (made immutable, its file system remounted read-only) or is truncated,
the next store through the mapping faults with SIGBUS: no error code, no exception, no log line,
the process is gone with what it had queued. (Closing a connection touches the mapping too.)

So before a connection is used or closed, :meth:`SQLiteFiles.check` asks whether the database,
its WAL and its ``-shm`` may be written (``access(2)``, which refuses an immutable file to root
too) and compares the ``-shm`` size with what the mapping may cover; a
failure raises :class:`StoreUnavailable` naming the file and the cause (the pipeline spools the
records), and the connections are set aside unclosed, to be closed once the files are writable
again. A connection still set aside when the store closes is left open for good: the process ends
without closing it (the operating system releases it), rather than by a SIGBUS.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sqlite3
import threading
from pathlib import Path

from ._store import StoreUnavailable

logger = logging.getLogger("otel_gateway.warehouse")


class SQLiteFiles:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._shm = path.with_name(path.name + "-shm")
        self._files = (path, path.with_name(path.name + "-wal"), self._shm)
        self._shm_floor = 0
        """The ``-shm`` size seen while connections were open: SQLite never shrinks it meanwhile."""
        self._aside: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._failing: str | None = None

    def check(self) -> None:
        """Raises :class:`StoreUnavailable` when a connection to the database must not be used now."""
        try:
            self._check()
        except StoreUnavailable as exc:
            if self._failing is None:
                logger.error("the request log store cannot be written, records are spooled until it can: %s", exc)
            self._failing = str(exc)
            raise
        if self._failing is not None:
            logger.warning("the request log database %s is writable again", self.path)
            self._failing = None
        self._close_aside()

    def _check(self) -> None:
        # access() and stat(), never open(): closing any descriptor of a file drops every POSIX
        # lock the process holds on it, SQLite's included (another process could then checkpoint
        # and delete the WAL under our connection).
        for path in self._files:
            try:
                size = os.stat(path).st_size
            except (FileNotFoundError, NotADirectoryError):  # not made yet: opening the database says why
                continue
            except OSError as exc:
                raise StoreUnavailable(f"{path} cannot be read ({exc.strerror}){_why(path == self._shm)}") from exc
            if not os.access(path, os.W_OK):
                raise StoreUnavailable(f"{path} is not writable ({_cause(path)}){_why(path == self._shm)}")
            if path == self._shm:
                if size < self._shm_floor:
                    raise StoreUnavailable(f"{path} was truncated (from {self._shm_floor} to {size} bytes)"
                                           f"{_why(True)}")
                self._shm_floor = size

    def release(self, conn: sqlite3.Connection | None, *, last: bool) -> None:
        """Closes ``conn``, or sets it aside while its files fail :meth:`check`. ``last``: no other
        connection of this store is open (then the ``-shm`` may be deleted and made anew)."""
        if conn is None:
            return
        try:
            self.check()
        except StoreUnavailable:
            with self._lock:
                self._aside.append(conn)
            return
        try:
            conn.close()
        except sqlite3.Error:
            logger.debug("closing a SQLite connection failed", exc_info=True)
        if last:
            self._shm_floor = 0

    def _close_aside(self) -> None:
        with self._lock:
            aside, self._aside = self._aside, []
        for conn in aside:
            try:
                conn.close()
            except sqlite3.Error:
                logger.debug("closing a SQLite connection set aside failed", exc_info=True)

    def abandon(self) -> None:
        """At close: the connections still set aside are never closed (nor freed)."""
        with self._lock:
            aside, self._aside = self._aside, []
        for conn in aside:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))
        if aside:
            logger.warning("left %d connection(s) to %s open: its files are still not writable", len(aside), self.path)


def _cause(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "immutable, or no write permission"


def _why(mapped: bool) -> str:
    if not mapped:
        return ""
    return ("; SQLite maps this file into memory and would crash the process (SIGBUS) writing through it, "
            "so the store is not used until the file is writable again")
