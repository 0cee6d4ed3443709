"""otel-gateway: an OpenTelemetry-native, OpenAI-compatible AI gateway."""

from ._version import __version__
from .app import create_app
from .config import ConfigError, GatewayConfig, load_config
from .errors import GatewayError

__all__ = ["ConfigError", "GatewayConfig", "GatewayError", "__version__", "create_app", "load_config"]
