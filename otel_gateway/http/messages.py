"""``POST /v1/messages``: Anthropic's Messages API through the one chain (``_messages_endpoint``)."""

from __future__ import annotations

from ..runtime import Gateway
from ._endpoint import ModelEndpoint
from ._messages_endpoint import MESSAGES_ENDPOINT


def MessagesEndpoint(gateway: Gateway) -> ModelEndpoint:
    return ModelEndpoint(gateway, MESSAGES_ENDPOINT)
