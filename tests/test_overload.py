"""One provider's trouble stays its own: each provider account has its own pool and cap on
concurrent requests (503 ``overloaded`` beyond it, a fallback moves on), the gateway a cap on
requests in flight, and every slot comes back however its request ended."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from fakes import FakeUpstream, Reply, openai_completion, openai_stream
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from servers import finished_spans, free_port, port_of, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text
from otel_gateway.runtime import Gateway

MESSAGES = [{"role": "user", "content": "hello"}]


class HungUpstream:
    """An upstream that takes every request and answers none until :meth:`release` (an
    ``asyncio.Event`` of its server's loop, set at the end of each test)."""

    def __init__(self) -> None:
        self.url = ""
        self.arrived = 0
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        await request.body()
        if self._release is None:
            self._loop, self._release = asyncio.get_running_loop(), asyncio.Event()
        self.arrived += 1
        await self._release.wait()
        return Response(orjson.dumps(openai_completion()), media_type="application/json")

    def release(self) -> None:
        loop, event, self._release = self._loop, self._release, None
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)
        self.arrived = 0


@pytest.fixture(scope="module")
def served_hung() -> Iterator[tuple[HungUpstream, str]]:
    upstream = HungUpstream()
    with serve(upstream.app) as url:
        upstream.url = url
        yield upstream, url


@pytest.fixture
def hung(served_hung: tuple[HungUpstream, str]) -> Iterator[HungUpstream]:
    yield served_hung[0]
    served_hung[0].release()


def config_text(hung_url: str, fake_url: str, a: str = "", b: str = "", extra: str = "") -> str:
    return f"""\
type: gateway-providers-config
providers:
  - {{name: a, type: openai-compatible, base_url: "{hung_url}/v1", models: [m]{a}}}
  - {{name: b, type: openai-compatible, base_url: "{fake_url}/v1", models: [m]{b}}}
  - {{name: down, type: openai-compatible, base_url: "http://127.0.0.1:{free_port()}/v1", models: [m],
      max_concurrent_requests: 2, queue_timeout_ms: 0}}
{extra}"""


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **extra}


def eventually(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.01)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """:func:`eventually`, for a test whose own loop must keep running meanwhile."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)


def overloaded_body(provider: str, capacity: int, wait_ms: int) -> dict[str, Any]:
    return {"error": {
        "message": f"{provider}: the provider account has {capacity} requests in flight, its max_concurrent_requests, "
                   f"and none ended within its queue_timeout_ms ({wait_ms} ms); retry after 1 s.",
        "type": "service_unavailable_error", "code": "overloaded", "param": None}}


class Answer:
    """An HTTP/1.1 answer read off a raw connection."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


async def raw_post(port: int, body: dict[str, Any]) -> Answer:
    """``POST /v1/chat/completions`` on a connection of its own, with no client library: a thousand
    of these at once cost the test little besides the sockets."""
    content = orjson.dumps(body)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(content), content))
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
        return Answer(int(head[0].split()[1]), headers, await reader.readexactly(int(headers["content-length"])))
    finally:
        writer.close()


async def test_a_thousand_requests_hung_on_one_provider_leave_another_answering_at_once(
    hung: HungUpstream, served_fake: tuple[FakeUpstream, str]
) -> None:
    """The defaults: 256 in flight per provider account, 100 ms for a slot, 2048 in the gateway."""
    fake, fake_url = served_fake
    fake.reset(Reply(json=openai_completion()))
    app = create_app(load_config_text(config_text(hung.url, fake_url)))
    turned_away: list[Answer] = []
    excess_answered = asyncio.Event()

    async def to_a(port: int) -> Answer:
        answer = await raw_post(port, chat("a/m"))
        if answer.status != 200:
            turned_away.append(answer)
            if len(turned_away) == 1000 - 256:
                excess_answered.set()
        return answer

    with serve(app) as url:
        port = port_of(url)
        hung_requests = [asyncio.create_task(to_a(port)) for _ in range(1000)]
        try:
            await asyncio.wait_for(excess_answered.wait(), timeout=20)
        except TimeoutError:
            raise AssertionError(f"only {len(turned_away)} of A's requests were answered; the rest hang") from None
        started = time.monotonic()
        answer = await asyncio.wait_for(raw_post(port, chat("b/m")), timeout=5)
        took = time.monotonic() - started
        assert (answer.status, took < 0.5) == (200, True), f"B answered {answer.status} in {took:.2f} s"
        gateway: Gateway = app.state.gateway
        assert gateway.slots("a").in_use == 256
        await until(lambda: hung.arrived == 256, "A's 256 requests reached it")
        assert {(a.status, a.headers["retry-after"], a.body) for a in turned_away} == {
            (503, "1", orjson.dumps(overloaded_body("a", 256, 100)))}
        hung.release()
        assert [a.status for a in await asyncio.gather(*hung_requests)].count(200) == 256
    assert (gateway.slots("a").in_use, gateway.slots("b").in_use) == (0, 0)


SMALL_A = ", max_concurrent_requests: 2, queue_timeout_ms: 0"


def test_every_slot_comes_back_however_its_request_ended(
    hung: HungUpstream, fake: FakeUpstream, fake_url: str
) -> None:
    """Two slots per account, no wait: a slot that did not come back turns the next request away."""
    app = create_app(load_config_text(config_text(hung.url, fake_url, a=SMALL_A, b=SMALL_A)))
    gateway: Gateway = app.state.gateway
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        def answers(model: str, count: int = 2, **extra: Any) -> list[int]:
            return [client.post("/v1/chat/completions", json=chat(model, **extra)).status_code for _ in range(count)]

        fake.reset(Reply(json=openai_completion()))
        assert answers("b/m") == [200, 200]  # success
        fake.reset(Reply(status=500, json={"error": {"message": "boom"}}))
        assert answers("b/m") == [502, 502]  # an upstream error
        assert answers("down/m") == [502, 502]  # no connection
        fake.reset(Reply(events=openai_stream(["one ", "two"])))
        assert answers("b/m", stream=True) == [200, 200]  # a stream read to its end
        fake.reset(Reply(events=openai_stream([f"w{i} " for i in range(200)]), event_delay=0.02))
        for _ in range(3):  # streams the client leaves after their first event
            with client.stream("POST", "/v1/chat/completions", json=chat("b/m", stream=True)) as response:
                assert next(response.iter_lines()).startswith("data: ")
        eventually(lambda: fake.stream_abandoned.is_set() and gateway.slots("b").in_use == 0, "b's slots back")
        for _ in range(2):  # requests the client gives up on while the upstream has not answered
            with pytest.raises(httpx.ReadTimeout):
                client.post("/v1/chat/completions", json=chat("a/m"), timeout=0.3)
        eventually(lambda: gateway.slots("a").in_use == 0, "a's slots back")
        assert hung.arrived == 2
        fake.reset(Reply(json=openai_completion()))
        assert answers("b/m") == [200, 200]
    assert [gateway.slots(name).in_use for name in ("a", "b", "down")] == [0, 0, 0]


@contextlib.contextmanager
def holding(url: str, model: str, count: int, hung: HungUpstream) -> Iterator[None]:
    """``count`` requests for ``model`` on ``hung``, in threads of their own, left waiting there
    until the block ends: then ``hung`` answers them."""
    def post() -> None:
        httpx.post(f"{url}/v1/chat/completions", json=chat(model), timeout=10)

    threads = [threading.Thread(target=post, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        eventually(lambda: hung.arrived == count, f"{count} requests waiting upstream")
        yield
    finally:
        hung.release()
        for thread in threads:
            thread.join(timeout=5)


def test_an_overloaded_provider_fails_its_chat_span_and_sends_nothing_upstream(
    hung: HungUpstream, fake_url: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    app = create_app(load_config_text(config_text(hung.url, fake_url, a=", max_concurrent_requests: 1, "
                                                                        "queue_timeout_ms: 20")),
                     tracer_provider=tracer_provider, capture_content=False)
    with serve(app) as url, holding(url, "a/m", 1, hung):
        response = httpx.post(f"{url}/v1/chat/completions", json=chat("a/m", temperature=0.5), timeout=5)
        assert (response.status_code, response.headers["retry-after"], response.json()) == (
            503, "1", overloaded_body("a", 1, 20))
        spans = finished_spans(span_exporter, "chatCompletions", "POST /v1/chat/completions")
    (span,) = [s for s in spans if s.name == "chatCompletions"]
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "a/m",
        "gen_ai.request.stream": False,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.prompt.0.role": "user",
        "server.address": "127.0.0.1",
        "server.port": port_of(hung.url),
        "error.type": "overloaded",
    }
    assert [s.name for s in spans if s.parent and s.parent.span_id == span.context.span_id] == []  # no HTTP span


def test_a_fallback_moves_on_from_an_overloaded_provider(
    hung: HungUpstream, fake: FakeUpstream, fake_url: str
) -> None:
    fake.reset(Reply(json=openai_completion("from b")))
    fallback = """\
---
type: gateway-fallback-config
rules:
  - {id: a-to-b, when: {models: [a/m], response_status_codes: [500]}, fallback_models: [{target: b/m}]}
"""
    app = create_app(load_config_text(config_text(hung.url, fake_url, a=SMALL_A, extra=fallback)))
    with serve(app) as url, holding(url, "a/m", 2, hung):
        response = httpx.post(f"{url}/v1/chat/completions", json=chat("a/m"), timeout=5)
        assert (response.status_code, response.json()["choices"][0]["message"]["content"]) == (200, "from b")
        assert [r.path for r in fake.requests] == ["/v1/chat/completions"]


def test_the_gateway_turns_away_requests_over_its_cap_before_reading_them_and_keeps_its_probes(
    hung: HungUpstream, fake: FakeUpstream, fake_url: str
) -> None:
    fake.reset(Reply(json=openai_completion()))
    server = "---\ntype: gateway-server-config\nmax_requests_in_flight: 3\n"
    app = create_app(load_config_text(config_text(hung.url, fake_url, extra=server)))
    with serve(app) as url:
        with holding(url, "a/m", 3, hung):
            over = httpx.post(f"{url}/v1/chat/completions", content=b"not even JSON", timeout=5)
            assert (over.status_code, over.headers["retry-after"], over.json()) == (503, "1", {"error": {
                "message": "The gateway is serving 3 requests, its max_requests_in_flight; retry after 1 s.",
                "type": "service_unavailable_error", "code": "overloaded", "param": None}})
            probes = [httpx.get(f"{url}{probe}", timeout=5).status_code for probe in ("/healthz", "/readyz")]
            assert probes == [200, 200]
        answers = [httpx.post(f"{url}/v1/chat/completions", json=chat("b/m"), timeout=5).status_code for _ in range(4)]
        assert answers == [200] * 4
