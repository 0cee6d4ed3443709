"""Tracing: the SERVER span middleware, the ``chatCompletions`` lifecycle and that of other GenAI
calls, the upstream HTTP CLIENT span, setup from the environment."""

from typing import TypeAlias

from ._client import traced_transport
from ._genai import ChatInvocation, NullInvocation
from ._operation import OperationInvocation
from ._server import ServerSpanMiddleware
from ._setup import capture_content, tracer_provider_from_env, tracing_enabled

Invocation: TypeAlias = ChatInvocation | NullInvocation

__all__ = [
    "ChatInvocation",
    "Invocation",
    "NullInvocation",
    "OperationInvocation",
    "ServerSpanMiddleware",
    "capture_content",
    "traced_transport",
    "tracer_provider_from_env",
    "tracing_enabled",
]
