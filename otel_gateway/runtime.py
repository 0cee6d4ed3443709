"""Everything built from one configuration, and the swap to a new one on reload."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.trace import TracerProvider

from ._version import __version__
from .calls import Send
from .chat import ProviderSend
from .config import ConfigError, ConfigIssue, GatewayConfig, ProviderConfig, load_config
from .identity import Authenticator
from .providers import LimitedTransport, ProviderRegistry, Slots
from .redaction import Redactor
from .routing import ChainServices, build_chain
from .telemetry import DEFAULT_SERVICE_NAME, traced_transport
from .transport import AiohttpTransport
from .warehouse import RequestLogPipeline, Store

logger = logging.getLogger("otel_gateway.runtime")


@dataclass(frozen=True)
class Runtime:
    config: GatewayConfig
    registry: ProviderRegistry
    authenticator: Authenticator
    send: Send
    redactor: Redactor
    """The configuration's one redaction rule: records, spans, log lines, error bodies."""


class Gateway:
    """Holds the current :class:`Runtime`. A request takes the runtime once, at its start, so a
    reload never changes the config of a request in flight. The upstream connection pools (one per
    provider account), the accounts' concurrency slots and the routing layers' shared state live
    here, across reloads."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        tracer_provider: TracerProvider | None,
        capture_content: bool,
        transport: httpx.AsyncBaseTransport | None = None,
        logger_provider: LoggerProvider | None = None,
        log_store: Store | None = None,
        service_name: str = DEFAULT_SERVICE_NAME,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._capture_content = capture_content
        self._shared = transport
        """A transport given in place of the pools (tests), shared by every provider account."""
        self._pools: dict[str, httpx.AsyncBaseTransport] = {}
        self._slots: dict[str, Slots] = {}
        tracer = tracer_provider.get_tracer("otel_gateway", __version__) if tracer_provider else None
        self.services = ChainServices(tracer=tracer)
        self._retired: list[Runtime] = []
        self.current = self._build(config)
        self.request_log = RequestLogPipeline.from_config(
            config, store=log_store, logger_provider=logger_provider, service_name=service_name,
            redactor=self.current.redactor,
        )
        """The request warehouse's pipeline, across reloads; started and flushed by the app's lifespan."""

    def _transport_for(
        self, provider: ProviderConfig, own: httpx.AsyncBaseTransport | None
    ) -> httpx.AsyncBaseTransport:
        """``provider``'s transport: ``own`` or the account's pool, traced, under the account's cap.
        The cap is outside the tracing, so a request turned away makes no HTTP client span."""
        base = own or self._shared or self._pool(provider.name)
        if self._tracer_provider is not None:
            base = traced_transport(base, self._tracer_provider, lambda: self.current.redactor)
        slots = self._slots.get(provider.name)
        if slots is None:
            slots = self._slots[provider.name] = Slots(provider.max_concurrent_requests)
        elif slots.capacity != provider.max_concurrent_requests:
            slots.resize(provider.max_concurrent_requests)
        return LimitedTransport(base, slots, wait=provider.queue_timeout_ms / 1000, provider=provider.name)

    def _pool(self, name: str) -> httpx.AsyncBaseTransport:
        """The provider account ``name``'s own connection pool: one account's hung upstream cannot
        take the connections the others need."""
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = AiohttpTransport(max_connections=0)  # bounded by the slots
        return pool

    def slots(self, provider: str) -> Slots:
        """The concurrency slots of the provider account ``provider`` (what is in flight there)."""
        return self._slots[provider]

    def _build(self, config: GatewayConfig) -> Runtime:
        registry = ProviderRegistry(config, self._transport_for)
        redactor = Redactor.for_config(config)
        send: Send = ProviderSend(
            registry,
            tracer=self.services.tracer,
            capture_content=self._capture_content,
            redactor=redactor,
        )
        chain = build_chain(config, send, self.services, redactor=redactor)
        return Runtime(config, registry, Authenticator(config.auth), chain, redactor)

    async def reload(self) -> GatewayConfig:
        """Reads the config from where it came from again and swaps it in; on any error the
        current one stays and :class:`ConfigError` says why."""
        origin = self.current.config.origin
        if origin is None:
            raise ConfigError([ConfigIssue("<built-in default>", "", "nothing to reload: started without --config")])
        config = await asyncio.to_thread(load_config, origin)
        runtime = self._build(config)
        self._retired.append(self.current)
        self.current = runtime
        self.request_log.reconfigure(config, runtime.redactor)
        logger.info("configuration reloaded from %s", origin)
        return config

    async def reload_logged(self) -> None:
        try:
            await self.reload()
        except ConfigError as exc:
            logger.error("configuration reload refused; keeping the current one:\n%s", exc)

    async def start(self) -> None:
        await self.request_log.start()

    async def aclose(self) -> None:
        await self.request_log.aclose()  # first: what is queued is written before anything closes
        for runtime in (*self._retired, self.current):
            await runtime.registry.aclose()
        await self.services.aclose()
        for pool in (*self._pools.values(), *([self._shared] if self._shared else [])):
            await pool.aclose()
