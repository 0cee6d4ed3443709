"""Configuration: YAML documents with a ``type``, from a file or a directory, validated at load."""

from ._cache import CacheDocument
from ._exporters import ExporterConfig, ExportersDocument, LangfuseExporter, PareaExporter
from ._load import (
    BUILTIN_DEFAULT,
    DOCUMENT_TYPES,
    ConfigError,
    ConfigIssue,
    GatewayConfig,
    load_config,
    load_config_text,
)
from ._logging import DEFAULT_STORE, ModelPrice, PricingDocument
from ._mcp import McpServer, McpServersDocument
from ._routing import (
    RULE_ID_PLACEHOLDERS,
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
    expand_rule_id,
)
from ._schema import MockOptions, ProviderConfig, ProviderType, ServerDocument

__all__ = [
    "BUILTIN_DEFAULT",
    "DEFAULT_STORE",
    "DOCUMENT_TYPES",
    "RULE_ID_PLACEHOLDERS",
    "AuthDocument",
    "AuthKey",
    "CacheDocument",
    "ConfigError",
    "ConfigIssue",
    "ExporterConfig",
    "ExportersDocument",
    "FallbackDocument",
    "FallbackModel",
    "FallbackRule",
    "GatewayConfig",
    "LangfuseExporter",
    "LoadBalanceDocument",
    "LoadBalanceRule",
    "LoadBalanceTarget",
    "McpServer",
    "McpServersDocument",
    "MockOptions",
    "ModelPrice",
    "PareaExporter",
    "PricingDocument",
    "ProviderConfig",
    "ProviderType",
    "RateLimitDocument",
    "RateLimitRule",
    "RetryConfig",
    "ServerDocument",
    "When",
    "expand_rule_id",
    "load_config",
    "load_config_text",
]
