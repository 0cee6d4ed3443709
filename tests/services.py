"""Real services the tests may need (Redis, PostgreSQL), and machine capabilities (``chattr +i``)."""

from __future__ import annotations

import os

import pytest


def require_service(reason: str) -> None:
    """Skips a test whose service or capability is missing, except where ``GATEWAY_REQUIRE_SERVICES=1`` (CI)."""
    if os.environ.get("GATEWAY_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)
