"""What one request did, as its endpoint saw it: the raw material of one log record.

Endpoints fill an :class:`Exchange` while they serve and hand it to the warehouse when the
request is over (answered, failed, refused or abandoned). Building the record, redacting it,
counting tokens and pricing happen later, off the request path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..calls import Outcome
from ..identity import ANONYMOUS, Identity

Status = Literal["success", "error", "rate_limited", "cancelled"]
CLIENT_CLOSED_REQUEST = 499
"""The status a cancelled request is recorded with (nginx's "client closed request")."""


@dataclass(slots=True)
class Exchange:
    request_id: str
    endpoint: str
    """The route, e.g. ``/v1/chat/completions``."""
    method: str = "POST"
    started_at: float = field(default_factory=time.time)
    """Wall-clock seconds when the request arrived."""
    started_monotonic: float = field(default_factory=time.monotonic)
    identity: Identity = ANONYMOUS
    metadata: Mapping[str, str] = field(default_factory=dict)
    request_headers: Mapping[str, str] = field(default_factory=dict)
    """As received, names lower-cased; redacted when the record is built."""
    query: str = ""
    """The raw query string; keys in it are redacted too."""
    request: Any = None
    """The parsed request body (None where only metadata is logged)."""
    model: str | None = None
    """The model as the client asked for it."""
    stream: bool = False
    response: Any = None
    """The whole answer; for streams the message assembled from the chunks."""
    streamed_data: list[dict[str, Any]] | None = None
    """Every chunk of a stream, in order."""
    usage: Mapping[str, Any] | None = None
    """Usage as the provider reported it (OpenAI shape), if it did."""
    status: Status = "success"
    http_status: int = 200
    error: Mapping[str, Any] | None = None
    """The OpenAI-shaped error body the client got."""
    outcome: Outcome = field(default_factory=Outcome)
    trace_id: str | None = None
    span_id: str | None = None
    finished_monotonic: float | None = None

    def finish(self) -> None:
        if self.finished_monotonic is None:
            self.finished_monotonic = time.monotonic()

    @property
    def latency_ms(self) -> int:
        end = self.finished_monotonic if self.finished_monotonic is not None else time.monotonic()
        return round((end - self.started_monotonic) * 1000)


class RequestLog(Protocol):
    """Where endpoints hand finished exchanges. ``submit`` never blocks and never raises."""

    def submit(self, exchange: Exchange) -> None: ...
