"""Request ids: unique, 32 hex digits, in arrival order (the log store's id index grows at its end)."""

import time

from otel_gateway.http._asgi import new_request_id


def test_request_ids_are_hex_unique_and_ordered_by_time() -> None:
    first = [new_request_id() for _ in range(1000)]
    time.sleep(0.002)
    later = new_request_id()
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in first)
    assert len(set(first)) == 1000
    assert later > max(first)
    assert int(later[:12], 16) <= time.time_ns() // 1_000_000
