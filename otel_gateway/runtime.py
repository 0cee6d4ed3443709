"""Everything built from one configuration, and the swap to a new one on reload."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx
from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.trace import TracerProvider

from ._version import __version__
from .chat import ProviderSend, Scrubber
from .chat._types import Send
from .config import ConfigError, ConfigIssue, GatewayConfig, load_config
from .identity import Authenticator
from .providers import ProviderRegistry
from .routing import ChainServices, build_chain
from .transport import AiohttpTransport
from .warehouse import RequestLogPipeline, Store

logger = logging.getLogger("otel_gateway.runtime")


@dataclass(frozen=True)
class Runtime:
    config: GatewayConfig
    registry: ProviderRegistry
    authenticator: Authenticator
    send: Send


class Gateway:
    """Holds the current :class:`Runtime`. A request takes the runtime once, at its start, so a
    reload never changes the config of a request in flight. The upstream connection pool and
    the routing layers' shared state live here, across reloads."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        tracer_provider: TracerProvider | None,
        capture_content: bool,
        transport: httpx.AsyncBaseTransport | None = None,
        logger_provider: LoggerProvider | None = None,
        log_store: Store | None = None,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._capture_content = capture_content
        self._pool = transport or AiohttpTransport()
        tracer = tracer_provider.get_tracer("otel_gateway", __version__) if tracer_provider else None
        self.services = ChainServices(tracer=tracer)
        self._retired: list[Runtime] = []
        self.request_log = RequestLogPipeline.from_config(config, store=log_store, logger_provider=logger_provider)
        """The request warehouse's pipeline, across reloads; started and flushed by the app's lifespan."""
        self.current = self._build(config)

    def _transport_for(self, own: httpx.AsyncBaseTransport | None) -> httpx.AsyncBaseTransport:
        base = own or self._pool
        if self._tracer_provider is None:
            return base
        return AsyncOpenTelemetryTransport(base, tracer_provider=self._tracer_provider)

    def _build(self, config: GatewayConfig) -> Runtime:
        registry = ProviderRegistry(config, self._transport_for)
        send: Send = ProviderSend(
            registry,
            tracer=self.services.tracer,
            capture_content=self._capture_content,
            scrub=Scrubber(config.secrets()),
        )
        return Runtime(config, registry, Authenticator(config.auth), build_chain(config, send, self.services))

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
        self.request_log.reconfigure(config)
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
        await self._pool.aclose()
