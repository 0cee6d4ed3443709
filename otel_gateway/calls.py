"""What flows through the ``send`` chain: one call in, a completion or a chunk stream out."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol, TypeAlias

from .config import RetryConfig
from .identity import ANONYMOUS, Identity

_EMPTY: Mapping[str, Any] = MappingProxyType({})

Kind: TypeAlias = Literal["chat", "messages", "embeddings", "moderations"]
"""The endpoint a call came in on; ``chat._specs.SPECS`` says what differs between them."""

_STREAMING = frozenset({"chat", "messages"})
PATHS: Mapping[Kind, str] = MappingProxyType({
    "chat": "/v1/chat/completions", "messages": "/v1/messages", "embeddings": "/v1/embeddings",
    "moderations": "/v1/moderations",
})


@dataclass(slots=True)
class Outcome:
    """What the layers learned while serving a request, for its log record. Mutable: the
    attempt that answers writes the provider fields last."""

    provider: str | None = None
    """The provider account of the last attempt."""
    provider_type: str | None = None
    """Its ``gen_ai.provider.name`` (``openai``, ``anthropic``...)."""
    upstream_model: str | None = None
    model_id: str | None = None
    """The ``provider-account/model`` of the last attempt."""
    provider_request_id: str | None = None
    """The provider's id of its answer (``x-request-id``, ``request-id``, else the response id)."""
    attempts: int = 0
    cache_status: str | None = None
    """``HIT`` or ``MISS`` when a response cache applies, else None."""


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Per-request facts every layer may read."""

    request_id: str
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """The client's request headers, names lower-cased."""
    ttft_timeout: float | None = None
    """Seconds allowed until the first streamed chunk (``x-gateway-ttft-timeout-ms``)."""
    identity: Identity = ANONYMOUS
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """The caller's ``x-gateway-metadata``."""
    deadline: float | None = None
    """Event-loop time by which the whole request must be answered (``x-gateway-request-timeout``)."""
    response_headers: dict[str, str] = field(default_factory=dict)
    """Headers layers add to the client's response (``x-ratelimit-*``)."""
    outcome: Outcome = field(default_factory=Outcome)


@dataclass(frozen=True, slots=True)
class ChatCall:
    """One model call as a layer sees it, whichever endpoint it came in on (``kind``). The
    client's body is never mutated: layers that change the target or the parameters make a new
    call with :meth:`retarget`."""

    body: Mapping[str, Any]
    model: str
    """The model this call is for: ``provider-account/model``, or a virtual name before routing."""
    context: RequestContext
    kind: Kind = "chat"
    overrides: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    """Parameters a routing rule sets over the client's (``override_params``)."""
    retry: RetryConfig | None = None
    """How to retry this call's target (a load-balancing target's ``retry_config``)."""
    via: str | None = None
    """The routing rule that chose :attr:`model` (``the fallback rule 'x'``), for messages that name it."""

    @property
    def requested_model(self) -> str:
        return str(self.body["model"])

    @property
    def path(self) -> str:
        """The gateway path the call arrived on."""
        return PATHS[self.kind]

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True and self.kind in _STREAMING

    @property
    def include_usage(self) -> bool:
        """Whether the client asked for the usage chunk at the end of a chat stream."""
        if self.kind != "chat":
            return False
        options = self.body.get("stream_options")
        return isinstance(options, Mapping) and bool(options.get("include_usage"))

    def param(self, name: str) -> Any:
        return self.overrides[name] if name in self.overrides else self.body.get(name)

    def params(self) -> dict[str, Any]:
        """The body with overrides applied: a fresh dict, safe to change."""
        return {**self.body, **self.overrides} if self.overrides else dict(self.body)

    def retarget(
        self, model: str, overrides: Mapping[str, Any] | None = None, retry: RetryConfig | None = None,
        via: str | None = None,
    ) -> ChatCall:
        return dataclasses.replace(self, model=model, overrides=overrides or _EMPTY, retry=retry,
                                   via=via or self.via)


@dataclass(slots=True)
class Completion:
    """A whole JSON answer: an OpenAI ``chat.completion``, or the endpoint's own answer (an
    embedding list, a moderation, an Anthropic message)."""

    data: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    raw: bytes | None = None
    """The body exactly as the provider sent it, when the client gets it unchanged."""


class ChunkStream(Protocol):
    """OpenAI ``chat.completion.chunk`` dicts. The first one has already arrived when a
    ``send`` returns the stream, so failures before the first byte raise from ``send``."""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self) -> None:
        """Release the stream; before its end this cancels the attempt. Idempotent."""
        ...


ChatResult: TypeAlias = "Completion | ChunkStream"
Send: TypeAlias = Callable[[ChatCall], Awaitable["Completion | ChunkStream"]]
