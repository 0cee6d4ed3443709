"""Provider adapters, one module each, chosen by one registry lookup on the provider ``type``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from ..config import GatewayConfig, ProviderConfig, ProviderType
from ..errors import ModelNotFoundError, NotFoundError
from ._base import ProviderAdapter, StreamTranslator
from ._limit import LimitedTransport, Slots
from .anthropic import AnthropicAdapter
from .azure import AzureOpenAIAdapter
from .mock import MockAdapter
from .openai import OpenAIAdapter, OpenAICompatibleAdapter

__all__ = [
    "ADAPTERS", "LimitedTransport", "ProviderAdapter", "ProviderRegistry", "Route", "Slots", "StreamTranslator",
]

ADAPTERS: Mapping[ProviderType, type[ProviderAdapter]] = {
    "openai": OpenAIAdapter,
    "openai-compatible": OpenAICompatibleAdapter,
    "azure-openai": AzureOpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "mock": MockAdapter,
}


@dataclass(frozen=True, slots=True)
class Route:
    adapter: ProviderAdapter
    upstream_model: str
    model_id: str


class ProviderRegistry:
    """Every configured provider account, resolved from ``provider-account/model`` ids."""

    def __init__(
        self,
        config: GatewayConfig,
        transport_for: Callable[[ProviderConfig, httpx.AsyncBaseTransport | None], httpx.AsyncBaseTransport],
    ) -> None:
        """``transport_for(provider, own)`` gives the transport the provider account sends through:
        ``own`` (the adapter's own, if it has one) or the account's pool, with its cap and tracing."""
        self._routes: dict[str, Route] = {}
        self._adapters: dict[str, ProviderAdapter] = {}
        self._own: list[httpx.AsyncBaseTransport] = []
        for provider in config.providers:
            adapter_type = ADAPTERS[provider.type]
            own = adapter_type.own_transport(provider)
            transport = transport_for(provider, own)
            if own is not None:
                self._own.append(transport)
            adapter = self._adapters[provider.name] = adapter_type(provider, transport)
            for model, upstream_model in provider.models.items():
                model_id = f"{provider.name}/{model}"
                self._routes[model_id] = Route(adapter, upstream_model, model_id)

    def resolve(self, model_id: str) -> Route:
        route = self._routes.get(model_id)
        if route is None:
            raise ModelNotFoundError(
                f"The model '{model_id}' does not exist or you do not have access to it. "
                "Address models as 'provider-account/model'; GET /v1/models lists them.",
                param="model",
            )
        return route

    def provider(self, name: str) -> ProviderAdapter:
        """The adapter of the provider account ``name`` (for paths passed through to one provider)."""
        adapter = self._adapters.get(name)
        if adapter is None:
            raise NotFoundError(
                f"The provider account '{name}' does not exist. Name one of: {', '.join(self._adapters)}.",
                param="x-gateway-provider", code="provider_not_found",
            )
        return adapter

    def model_ids(self) -> list[str]:
        return list(self._routes)

    def owner(self, model_id: str) -> str:
        return self._routes[model_id].adapter.name

    async def aclose(self) -> None:
        """Closes the transports of adapters that have their own; the accounts' pools are the caller's."""
        for transport in self._own:
            await transport.aclose()
