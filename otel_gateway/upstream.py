"""The boundary where provider and transport failures become ``GatewayError``s.

Every endpoint that talks to a provider (the chat attempt, embeddings and moderations, the
Messages API, the proxy) converts an upstream error answer or a transport failure here, with
every credential scrubbed from whatever text the provider sent back (by the one rule of
:mod:`otel_gateway.redaction`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import orjson

from .errors import UpstreamConnectionError, UpstreamError, UpstreamStatusError, UpstreamTimeoutError
from .redaction import Redactor

if TYPE_CHECKING:
    from .calls import Outcome
    from .providers import ProviderAdapter, Route

__all__ = [
    "close", "json_object", "note_attempt", "read", "request_id_of", "status_error", "transport_error",
]


async def status_error(adapter: ProviderAdapter, response: httpx.Response, redact: Redactor) -> UpstreamStatusError:
    """The error for an upstream answer with an error status; reads its body (the caller closes it)."""
    body = await read(response)
    message = redact.text(adapter.error_message(response.status_code, body))
    retry_after = response.headers.get("retry-after")
    return UpstreamStatusError(
        f"{adapter.name}: {message}", upstream_status=response.status_code, provider=adapter.name,
        headers={"retry-after": retry_after} if retry_after else None,
    )


def transport_error(adapter: ProviderAdapter, exc: httpx.HTTPError, redact: Redactor) -> UpstreamError:
    """The error for a request that got no answer: 504 on a timeout, else 502."""
    detail = redact.text(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        seconds = adapter.config.timeout_ms / 1000
        return UpstreamTimeoutError(
            f"{adapter.name}: the upstream did not answer in time ({seconds:g} s): {detail}", provider=adapter.name
        )
    return UpstreamConnectionError(f"{adapter.name}: could not reach the upstream: {detail}", provider=adapter.name)


def request_id_of(response: httpx.Response) -> str | None:
    headers = response.headers
    return headers.get("x-request-id") or headers.get("request-id") or headers.get("apim-request-id")


async def read(response: httpx.Response) -> bytes:
    """The whole body, read straight off the transport's stream (requests ask for no encoding)."""
    try:
        return response.content  # an in-process transport (the mock) answers with it read
    except httpx.ResponseNotRead:
        pass
    chunks = [chunk async for chunk in response.aiter_raw()]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def close(response: httpx.Response | None) -> None:
    if response is not None:
        await response.aclose()


def json_object(adapter: ProviderAdapter, raw: bytes) -> dict[str, Any]:
    """An answer's body that must be a JSON object; anything else is the upstream's failure."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        message = f"{adapter.name}: the upstream answered with a body that is not JSON"
        raise UpstreamError(message, provider=adapter.name)
    return data


def note_attempt(outcome: Outcome, adapter: ProviderAdapter, route: Route | None = None) -> None:
    """Records in the request's outcome that ``adapter`` (at ``route``) is being tried; the last try answers."""
    outcome.attempts += 1
    outcome.provider = adapter.name
    outcome.provider_type = adapter.gen_ai_provider
    outcome.upstream_model = route.upstream_model if route else None
    outcome.model_id = route.model_id if route else None
    outcome.provider_request_id = None
