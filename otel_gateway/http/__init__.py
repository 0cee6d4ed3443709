"""The HTTP front: the endpoints, the middlewares and the ASGI helpers they share."""

from ._asgi import RequestIdMiddleware, gateway_error_handler, http_error_handler, internal_error_handler
from ._dispatch import GatewayApp
from ._identity import IdentityMiddleware
from ._limits import InFlightLimit
from ._protocol import http_protocol

__all__ = [
    "GatewayApp",
    "IdentityMiddleware",
    "InFlightLimit",
    "RequestIdMiddleware",
    "gateway_error_handler",
    "http_error_handler",
    "http_protocol",
    "internal_error_handler",
]
