from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fakes import FakeUpstream
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import serve


@pytest.fixture(scope="session", autouse=True)
def scratch_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs the session in a scratch directory: gateways that default to ./otel-gateway.db and a
    spool next to it leave nothing in the checkout."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(scope="module")
def served_fake() -> Iterator[tuple[FakeUpstream, str]]:
    """One fake upstream server per test module (servers are slow to stop), with its base URL."""
    fake = FakeUpstream()
    with serve(fake.app) as url:
        yield fake, url


@pytest.fixture
def fake(served_fake: tuple[FakeUpstream, str]) -> FakeUpstream:
    """The module's fake upstream, reset for this test."""
    return served_fake[0].reset()


@pytest.fixture
def fake_url(served_fake: tuple[FakeUpstream, str], fake: FakeUpstream) -> str:
    """The base URL of the module's fake upstream, reset for this test (as ``fake``, which a module
    may override)."""
    return served_fake[1]


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()
