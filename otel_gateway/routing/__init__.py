"""Routing layers: small wrappers around the same ``send``, each owning its span.

The chain, outermost first: rate limiting -> response cache -> load balancing -> fallback ->
retries of the target -> health observation -> the provider attempt (``chat.ProviderSend``).
The cache sits below rate limiting (a hit still counts as a request) and above load balancing
(a hit costs no upstream call); see ``cache._layer``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from opentelemetry.trace import Tracer

from ..calls import Send
from ..config import GatewayConfig
from ..redaction import Redactor
from .cache import CacheBackends, ResponseCache
from .fallback import Fallback
from .health import HealthObserver, HealthRegistry
from .loadbalance import LoadBalancer
from .ratelimit import Backends, RateLimiter
from .retry import RetryLayer


@dataclass(frozen=True)
class ChainServices:
    """Long-lived collaborators the layers share, kept across config reloads."""

    tracer: Tracer | None
    health: HealthRegistry = field(default_factory=HealthRegistry)
    """Upstream targets' health and latency, learned from every attempt; read by load balancing."""
    rng: random.Random = field(default_factory=random.Random)
    """Randomness of load balancing and retry jitter (seed it for reproducible runs)."""
    rate_limit_backends: Backends = field(default_factory=Backends)
    """Rate-limit counters (memory) and Redis pools, one per backend, surviving reloads."""
    cache_backends: CacheBackends = field(default_factory=CacheBackends)
    """Cached answers (memory) and Redis pools, one per backend, surviving reloads."""

    async def aclose(self) -> None:
        try:
            await self.rate_limit_backends.aclose()
        finally:
            await self.cache_backends.aclose()


def build_chain(
    config: GatewayConfig, provider_send: Send, services: ChainServices, *, redactor: Redactor | None = None
) -> Send:
    """``redactor``: the configuration's, for what the layers' spans show of the request."""
    send = provider_send
    if config.load_balancing is not None:
        send = RetryLayer(HealthObserver(send, services.health), rng=services.rng)
    if config.fallback is not None:
        send = Fallback(send, config.fallback, tracer=services.tracer)
    if config.load_balancing is not None:
        send = LoadBalancer(
            send, config.load_balancing, health=services.health, rng=services.rng, tracer=services.tracer
        )
    if config.cache is not None:
        send = ResponseCache(send, config.cache, services.cache_backends.get(config.cache), tracer=services.tracer)
    if config.rate_limiting is not None:
        backend = services.rate_limit_backends.get(config.rate_limiting)
        send = RateLimiter(send, config.rate_limiting, backend, tracer=services.tracer, redactor=redactor)
    return send
