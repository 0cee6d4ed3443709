"""Load balancing through the app, driven by the real ``openai`` SDK over HTTP, in front of mock
providers and scripted fake upstreams: weights, ejection of a failing target, latency routing,
and the request deadline bounding retries and fail-over."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator

import openai
import pytest
from fakes import FakeUpstream, Reply, openai_completion
from servers import serve
from starlette.applications import Starlette

from otel_gateway.app import create_app
from otel_gateway.config import GatewayConfig, load_config_text

MESSAGES = [{"role": "user", "content": "hi there"}]  # type: ignore[var-annotated]
UPSTREAM_ERROR = {"error": {"message": "boom", "type": "server_error", "code": None, "param": None}}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[tuple[FakeUpstream, str], tuple[FakeUpstream, str]]]:
    """Two fake upstreams for the module (servers are slow to stop); reset for each test."""
    first, second = FakeUpstream(), FakeUpstream()
    with serve(first.app) as first_url, serve(second.app) as second_url:
        yield (first, first_url), (second, second_url)


@pytest.fixture
def fakes(upstreams: tuple[tuple[FakeUpstream, str], tuple[FakeUpstream, str]]) -> tuple[FakeUpstream, FakeUpstream]:
    for fake, _ in upstreams:
        fake.reply = Reply(json=openai_completion())
        fake.requests.clear()
    return upstreams[0][0], upstreams[1][0]


@pytest.fixture
def urls(upstreams: tuple[tuple[FakeUpstream, str], tuple[FakeUpstream, str]], fakes: object) -> tuple[str, str]:
    return upstreams[0][1], upstreams[1][1]


Serve = Callable[[GatewayConfig], tuple[openai.OpenAI, Starlette]]


@pytest.fixture
def gateway() -> Iterator[Serve]:
    """``gateway(config)`` serves a gateway and gives an SDK client for it and the app."""
    with contextlib.ExitStack() as stack:

        def start(config: GatewayConfig) -> tuple[openai.OpenAI, Starlette]:
            app = create_app(config)
            url = stack.enter_context(serve(app))
            client = stack.enter_context(openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=10))
            return client, app

        yield start


def two_upstreams(urls: tuple[str, str], balancing: str, timeout_ms: int = 10_000) -> GatewayConfig:
    first, second = urls
    return load_config_text(f"""\
type: gateway-providers-config
providers:
  - {{name: first, type: openai-compatible, base_url: "{first}/v1", models: [gpt-4o], timeout_ms: {timeout_ms}}}
  - {{name: second, type: openai-compatible, base_url: "{second}/v1", models: [gpt-4o], timeout_ms: {timeout_ms}}}
---
type: gateway-load-balancing-config
rules:
{balancing}
""", environ={})


def test_weighted_routing_over_a_thousand_requests(gateway: Serve) -> None:
    config = load_config_text("""\
type: gateway-providers-config
providers:
  - {name: mock-a, type: mock, models: [echo-a]}
  - {name: mock-b, type: mock, models: [echo-b]}
  - {name: mock-c, type: mock, models: [echo-c]}
---
type: gateway-load-balancing-config
rules:
  - id: split
    type: weight-based-routing
    when: {models: [chat]}
    load_balance_targets:
      - {target: mock-a/echo-a, weight: 60}
      - {target: mock-b/echo-b, weight: 30}
      - {target: mock-c/echo-c, weight: 10}
""", environ={})
    client, app = gateway(config)
    app.state.gateway.services.rng.seed(1000)
    served = Counter(client.chat.completions.create(model="chat", messages=MESSAGES).model for _ in range(1000))
    assert served.keys() == {"echo-a", "echo-b", "echo-c"}
    assert abs(served["echo-a"] / 10 - 60) <= 5
    assert abs(served["echo-b"] / 10 - 30) <= 5
    assert abs(served["echo-c"] / 10 - 10) <= 5


def test_virtual_names_are_listed(gateway: Serve, urls: tuple[str, str]) -> None:
    client, _ = gateway(two_upstreams(urls, """\
  - id: split
    type: priority-based-routing
    when: {models: [gpt-4o-virtual]}
    load_balance_targets: [{target: first/gpt-4o, priority: 0}, {target: second/gpt-4o, priority: 1}]
"""))
    assert [model.id for model in client.models.list()] == ["first/gpt-4o", "second/gpt-4o", "gpt-4o-virtual"]


def test_a_target_failing_every_request_is_cooled_down_and_its_traffic_moves(
    gateway: Serve, urls: tuple[str, str], fakes: tuple[FakeUpstream, FakeUpstream]
) -> None:
    failing, healthy = fakes
    failing.reply = Reply(status=500, json=UPSTREAM_ERROR)
    client, app = gateway(two_upstreams(urls, """\
  - id: split
    type: weight-based-routing
    when: {models: [gpt-4o]}
    load_balance_targets:
      - {target: first/gpt-4o, weight: 50, fallback_status_codes: [500]}
      - {target: second/gpt-4o, weight: 50, fallback_status_codes: [500]}
"""))
    app.state.gateway.services.rng.seed(5)
    answers = [client.chat.completions.create(model="gpt-4o", messages=MESSAGES) for _ in range(60)]
    assert [answer.choices[0].message.content for answer in answers] == ["Hello there"] * 60
    assert len(failing.requests) == 3  # then ejected for its cooldown
    assert len(healthy.requests) == 60
    assert app.state.gateway.services.health.ejected("first/gpt-4o")


def test_latency_routing_moves_traffic_to_the_faster_upstream(
    gateway: Serve, urls: tuple[str, str], fakes: tuple[FakeUpstream, FakeUpstream]
) -> None:
    fast, slow = fakes
    slow.reply = Reply(json=openai_completion(), delay=0.1)
    client, _ = gateway(two_upstreams(urls, """\
  - id: fastest
    type: latency-based-routing
    when: {models: [gpt-4o]}
    load_balance_targets: [{target: first/gpt-4o}, {target: second/gpt-4o}]
"""))
    for _ in range(30):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    # three requests each to learn them, then the fast one only
    assert (len(fast.requests), len(slow.requests)) == (27, 3)


def test_the_request_timeout_bounds_retries_and_fail_over(
    gateway: Serve, urls: tuple[str, str], fakes: tuple[FakeUpstream, FakeUpstream]
) -> None:
    first, second = fakes
    first.reply = Reply(status=503, json=UPSTREAM_ERROR, delay=0.05)
    second.reply = Reply(status=503, json=UPSTREAM_ERROR, delay=0.05)
    client, _ = gateway(two_upstreams(urls, """\
  - id: patient
    type: priority-based-routing
    when: {models: [gpt-4o]}
    load_balance_targets:
      - target: first/gpt-4o
        priority: 0
        retry_config: {attempts: 10, delay: 100, on_status_codes: [503]}
        fallback_status_codes: [503]
      - target: second/gpt-4o
        priority: 1
        retry_config: {attempts: 10, delay: 100, on_status_codes: [503]}
"""))
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                       extra_headers={"x-gateway-request-timeout": "300"})
    assert raised.value.status_code == 504
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "request_timeout"
    assert raised.value.body["type"] == "timeout_error"
    assert 1 <= len(first.requests) < 10
    assert len(second.requests) == 0
