"""Log lines for failures that can repeat on every request: one per interval, with a count."""

from __future__ import annotations

import logging
import math
import time


class ThrottledLog:
    """Logs at most one line per ``every`` seconds at ``level``, saying how many were held back."""

    def __init__(self, logger: logging.Logger, *, every: float = 30.0, level: int = logging.WARNING) -> None:
        self._logger = logger
        self._every = every
        self._level = level
        self._logged_at = -math.inf
        self._held_back = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._logged_at < self._every:
            self._held_back += 1
            return
        held_back, self._held_back, self._logged_at = self._held_back, 0, now
        if held_back:
            message += " [%d similar messages held back]"
            args = (*args, held_back)
        self._logger.log(self._level, message, *args)
