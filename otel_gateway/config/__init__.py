"""Configuration: YAML documents with a ``type``, from a file or a directory, validated at load."""

from ._load import (
    BUILTIN_DEFAULT,
    DOCUMENT_TYPES,
    ConfigError,
    ConfigIssue,
    GatewayConfig,
    load_config,
    load_config_text,
)
from ._routing import (
    AuthDocument,
    AuthKey,
    FallbackDocument,
    FallbackModel,
    FallbackRule,
    LoadBalanceDocument,
    LoadBalanceRule,
    LoadBalanceTarget,
    RateLimitDocument,
    RateLimitRule,
    RetryConfig,
    When,
)
from ._schema import MockOptions, ProviderConfig, ProviderType, ServerDocument

__all__ = [
    "BUILTIN_DEFAULT",
    "DOCUMENT_TYPES",
    "AuthDocument",
    "AuthKey",
    "ConfigError",
    "ConfigIssue",
    "FallbackDocument",
    "FallbackModel",
    "FallbackRule",
    "GatewayConfig",
    "LoadBalanceDocument",
    "LoadBalanceRule",
    "LoadBalanceTarget",
    "MockOptions",
    "ProviderConfig",
    "ProviderType",
    "RateLimitDocument",
    "RateLimitRule",
    "RetryConfig",
    "ServerDocument",
    "When",
    "load_config",
    "load_config_text",
]
