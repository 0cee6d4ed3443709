"""The gateway's one error tree.

Every failure a client can see is a ``GatewayError``; each knows its HTTP status and renders
OpenAI's error shape ``{"error": {"message", "type", "code", "param"}}``. Provider and
transport failures are converted into this tree at one boundary (``otel_gateway.upstream``)
with ``raise ... from``, and rendered at one boundary (``http._asgi``).

    GatewayError                      500 internal_error
    ├── InvalidRequestError           400 invalid_request_error
    │   └── MalformedJSONError        400 (code: invalid_json)
    ├── AuthenticationError           401 authentication_error
    ├── PermissionDeniedError         403 permission_error
    ├── NotFoundError                 404 not_found_error
    │   └── ModelNotFoundError        404 (code: model_not_found)
    ├── MethodNotAllowedError         405 invalid_request_error (code: http_405)
    ├── RequestTimeoutError           408 timeout_error (time to first token exceeded; code body_timeout or
    │                                     header_timeout: the client sent too slowly)
    ├── PayloadTooLargeError          413 invalid_request_error
    ├── HeadersTooLargeError          431 invalid_request_error (code: request_header_fields_too_large)
    ├── RateLimitError                429 rate_limit_error (+ Retry-After)
    ├── ServiceUnavailableError       503 service_unavailable_error (a store or backend the gateway needs is down)
    │   └── OverloadedError           503 (code: overloaded, + Retry-After): the gateway's cap on requests in
    │                                     flight, or a provider account's cap on concurrent requests, is reached
    └── UpstreamError                 502 upstream_error
        ├── UpstreamStatusError       the upstream's 4xx as is, 5xx as 502/503/504
        ├── UpstreamConnectionError   502 (connection refused, reset, DNS)
        ├── UpstreamTimeoutError      504
        └── UpstreamStreamError       502 (stream cut or malformed after it started)

Anthropic's API (``/v1/messages``) answers errors in its own shape, ``{"type": "error", "error":
{"type", "message"}}``, its ``type`` chosen by the status alone (:data:`ANTHROPIC_ERROR_TYPES`), so
that the anthropic SDK raises its own class for each. :meth:`GatewayError.shaped` renders either
shape; which one a path gets is decided in one place (``otel_gateway.http._asgi.error_shape_for``).
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "AuthenticationError",
    "ErrorShape",
    "GatewayError",
    "HeadersTooLargeError",
    "InvalidRequestError",
    "MalformedJSONError",
    "MethodNotAllowedError",
    "ModelNotFoundError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "ServiceUnavailableError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamStatusError",
    "UpstreamStreamError",
    "UpstreamTimeoutError",
    "anthropic_error_type",
    "internal_error",
]


class ErrorShape(enum.Enum):
    """The shape of an error body: OpenAI's (every path but Anthropic's) or Anthropic's."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
"""Anthropic's error type for each status it documents (its API reference, "Errors"), and 503 (the
gateway's overloaded and unavailable answers) as its 529; any other 4xx is ``invalid_request_error``
and any other 5xx ``api_error`` (:func:`anthropic_error_type`)."""


def anthropic_error_type(status: int) -> str:
    kind = ANTHROPIC_ERROR_TYPES.get(status)
    if kind is not None:
        return kind
    return "invalid_request_error" if status < 500 else "api_error"


class GatewayError(Exception):
    status: int = 500
    type: str = "internal_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers: dict[str, str] = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        """Anthropic's error shape: the anthropic SDK raises the class of :attr:`status` with
        :attr:`message` as its ``api_message``. Also the ``data`` of a stream's ``error`` event.
        The gateway's ``param``, when set, extends the error object (as Anthropic reserves the
        right to), so that an input error still names its parameter."""
        error: dict[str, Any] = {"type": anthropic_error_type(self.status), "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        return {"type": "error", "error": error}

    def shaped(self, shape: ErrorShape) -> dict[str, Any]:
        return self.anthropic_body() if shape is ErrorShape.ANTHROPIC else self.body()


class InvalidRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"


class MalformedJSONError(InvalidRequestError):
    code = "invalid_json"


class AuthenticationError(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    type = "permission_error"


class NotFoundError(GatewayError):
    status = 404
    type = "not_found_error"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class MethodNotAllowedError(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "http_405"


class RequestTimeoutError(GatewayError):
    status = 408
    type = "timeout_error"
    code = "ttft_timeout"


class PayloadTooLargeError(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class HeadersTooLargeError(GatewayError):
    """The request line and headers are longer, or the headers more, than the gateway takes. The
    HTTP front answers it before any of the request reaches the app (``otel_gateway.http._protocol``)."""

    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class RateLimitError(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailableError(GatewayError):
    status = 503
    type = "service_unavailable_error"


class OverloadedError(ServiceUnavailableError):
    """Too much in flight: the gateway's ``max_requests_in_flight``, or the ``max_concurrent_requests``
    of the provider account ``provider`` (no slot came free within its ``queue_timeout_ms``). It says
    when to try again in ``Retry-After``; a fallback chain moves on to its next model."""

    code = "overloaded"

    def __init__(self, message: str, *, provider: str = "", retry_after: int = 1, **kwargs: Any) -> None:
        super().__init__(message, headers={"retry-after": str(retry_after)}, **kwargs)
        self.provider = provider


class UpstreamError(GatewayError):
    """A provider could not give an answer. ``provider`` names the provider account."""

    status = 502
    type = "upstream_error"

    def __init__(self, message: str, *, provider: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.provider = provider


class UpstreamStatusError(UpstreamError):
    """The provider answered with an error status, kept in ``upstream_status``.

    The client sees the upstream's 4xx as is (its request was at fault), except 401 and 403,
    which mean the gateway's own provider credentials were refused and become 502. A 5xx
    becomes 502, except 503 and 504, which keep their meaning.
    """

    def __init__(self, message: str, *, upstream_status: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.upstream_status = upstream_status
        if upstream_status in (401, 403):
            self.status, self.code = 502, "upstream_authentication_failed"
        elif 400 <= upstream_status < 500:
            self.status = upstream_status
            self.type = "rate_limit_error" if upstream_status == 429 else "invalid_request_error"
        elif upstream_status in (503, 504):
            self.status = upstream_status
        else:
            self.status = 502
        if self.code is None:
            self.code = f"upstream_{upstream_status}"


class UpstreamConnectionError(UpstreamError):
    code = "upstream_connection_error"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamStreamError(UpstreamError):
    code = "upstream_stream_error"


def internal_error() -> GatewayError:
    """What a client gets for a bug in the gateway: a 500 that tells nothing of it (the logs do)."""
    return GatewayError("The gateway failed to handle this request; see its logs.", code="internal_error")
