"""``store_for(url)``: the :class:`Store` a ``gateway-logging-config`` ``store`` URL names, or ``None``
for ``none``. The database stores come from :func:`._store.store_for_url`, which imports their
modules only when their URL is used (PostgreSQL needs ``asyncpg``)."""

from __future__ import annotations

from ._store import Store, store_for_url


def store_for(url: str) -> Store | None:
    """``sqlite:///path``, ``postgresql://...``, ``memory`` (this process only) or ``none``."""
    if url == "none":
        return None
    if url == "memory":
        from ._memory import MemoryStore

        return MemoryStore()
    return store_for_url(url)
