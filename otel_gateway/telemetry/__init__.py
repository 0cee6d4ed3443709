"""Tracing: the SERVER span middleware, the ``chatCompletions`` lifecycle and that of other GenAI
calls, the upstream HTTP CLIENT span, the providers as the environment (passed in) says."""

from typing import TypeAlias

from ._client import traced_transport
from ._genai import TOOL_DEFINITIONS, ChatInvocation, NullInvocation, tool_definitions, tool_definitions_attribute
from ._operation import OperationInvocation
from ._server import ServerSpanMiddleware
from ._setup import (
    DEFAULT_SERVICE_NAME,
    capture_content,
    logger_provider_from_env,
    logs_enabled,
    resource_from,
    service_name,
    tracer_provider_from_env,
    tracing_enabled,
)

Invocation: TypeAlias = ChatInvocation | NullInvocation

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "TOOL_DEFINITIONS",
    "ChatInvocation",
    "Invocation",
    "NullInvocation",
    "OperationInvocation",
    "ServerSpanMiddleware",
    "capture_content",
    "logger_provider_from_env",
    "logs_enabled",
    "resource_from",
    "service_name",
    "tool_definitions",
    "tool_definitions_attribute",
    "traced_transport",
    "tracer_provider_from_env",
    "tracing_enabled",
]
