"""Configuration: YAML documents with a ``type``, from a file or a directory, validated at load."""

from ._load import BUILTIN_DEFAULT, ConfigError, ConfigIssue, GatewayConfig, load_config, load_config_text
from ._schema import DOCUMENT_TYPES, MockOptions, ProviderConfig, ProviderType, ServerDocument

__all__ = [
    "BUILTIN_DEFAULT",
    "DOCUMENT_TYPES",
    "ConfigError",
    "ConfigIssue",
    "GatewayConfig",
    "MockOptions",
    "ProviderConfig",
    "ProviderType",
    "ServerDocument",
    "load_config",
    "load_config_text",
]
