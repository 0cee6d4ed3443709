"""``otel-gateway`` with its Redis rate-limit backend on a clock the test sets (tests only).

``python ratelimit_clocked_gateway.py CLOCK_FILE serve --config ...``: every check reads the time,
in seconds, from ``CLOCK_FILE`` (which the test rewrites, atomically) instead of Redis's ``TIME``,
so several gateway processes share one clock the test moves.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from otel_gateway.cli import main
from otel_gateway.routing.ratelimit import _redis


class FileClock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> float:
        return float(self.path.read_text())


def install(path: Path) -> None:
    base = _redis.RedisBackend

    class ClockedRedisBackend(base):  # type: ignore[valid-type,misc]
        def __init__(self, url: str, **options: Any) -> None:
            super().__init__(url, clock=FileClock(path), **options)

    _redis.RedisBackend = ClockedRedisBackend  # type: ignore[misc]


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    raise SystemExit(main(sys.argv[2:]))
