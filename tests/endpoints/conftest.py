"""Fixtures: one fake upstream and one gateway per test module, reset for each test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text

from .endpoint_fakes import ProxyUpstream, RecordingLog
from .harness import Gateway, providers_config


@pytest.fixture(scope="module")
def served_upstream() -> Iterator[tuple[ProxyUpstream, str]]:
    upstream = ProxyUpstream()
    with serve(upstream.app) as url:
        yield upstream, url


@pytest.fixture(scope="module")
def served_gateway(served_upstream: tuple[ProxyUpstream, str]) -> Iterator[Gateway]:
    upstream, url = served_upstream
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(load_config_text(providers_config(url)), tracer_provider=provider, capture_content=True)
    log = app.state.gateway.request_log = RecordingLog(app.state.gateway.request_log)
    with serve(app) as gateway_url:
        yield Gateway(gateway_url, upstream, url, log, exporter)
    provider.shutdown()


@pytest.fixture
def gateway(served_gateway: Gateway) -> Gateway:
    """The module's gateway, its upstream, log and spans reset for this test."""
    served_gateway.upstream.reset()
    served_gateway.log.drain()
    served_gateway.exporter.clear()
    return served_gateway


@pytest.fixture
def upstream(gateway: Gateway) -> ProxyUpstream:
    return gateway.upstream


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client
