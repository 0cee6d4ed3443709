"""Every endpoint that calls a model goes through the one chain: rate limits, load balancing and
fallback proven on ``/v1/messages`` (the anthropic SDK) and ``/v1/embeddings`` (the openai SDK),
moderations through the chain too, the 400 for a rule sending ``/v1/messages`` to a provider that
does not speak it, and ``provider_request_id`` from the provider's header or the answer's id."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import anthropic
import openai
import pytest
from fakes import FakeUpstream, Reply, anthropic_message, anthropic_text_stream
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text

from .endpoint_fakes import RecordingLog

ERROR_500 = {"error": {"message": "boom", "type": "server_error"}}
EMBEDDING = {"object": "list", "model": "text-embedding-3-small",
             "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
             "usage": {"prompt_tokens": 2, "total_tokens": 2}}
MODERATION = {"id": "modr-1", "model": "omni-moderation-latest",
              "results": [{"flagged": False, "categories": {}, "category_scores": {}}]}
HELLO = [{"role": "user", "content": "hi"}]


def config_text(a: str, b: str) -> str:
    return f"""\
type: gateway-providers-config
providers:
  - {{name: anth-a, type: anthropic, base_url: "{a}", api_key: sk-ant-a-0123456789, models: [claude, limited, solo]}}
  - {{name: anth-b, type: anthropic, base_url: "{b}", api_key: sk-ant-b-0123456789, models: [claude]}}
  - {{name: oai-a, type: openai, base_url: "{a}/v1", api_key: sk-oai-a-0123456789,
      models: [embed, limited-embed, gpt-4o, omni]}}
  - {{name: oai-b, type: openai, base_url: "{b}/v1", api_key: sk-oai-b-0123456789, models: [embed]}}
---
type: gateway-rate-limiting-config
rules:
  - {{id: "{{model}}-rpm", limit_to: 2, unit: requests_per_minute,
      when: {{models: [anth-a/limited, oai-a/limited-embed]}}}}
---
type: gateway-load-balancing-config
rules:
  - id: spread-claude
    type: weight-based-routing
    when: {{models: [claude-any]}}
    load_balance_targets: [{{target: anth-a/claude, weight: 50}}, {{target: anth-b/claude, weight: 50}}]
  - id: spread-embed
    type: weight-based-routing
    when: {{models: [embed-any]}}
    load_balance_targets: [{{target: oai-a/embed, weight: 50}}, {{target: oai-b/embed, weight: 50}}]
  - id: claude-to-openai
    type: weight-based-routing
    when: {{models: [claude-wrong]}}
    load_balance_targets: [{{target: oai-a/gpt-4o, weight: 100}}]
---
type: gateway-fallback-config
rules:
  - id: claude-fallback
    when: {{models: [anth-a/claude]}}
    fallback_models: [{{target: anth-b/claude}}]
  - id: embed-fallback
    when: {{models: [oai-a/embed]}}
    fallback_models: [{{target: oai-b/embed}}]
  - id: solo-to-openai
    when: {{models: [anth-a/solo]}}
    fallback_models: [{{target: oai-a/gpt-4o}}]
"""


@dataclass
class Served:
    url: str
    a: FakeUpstream
    b: FakeUpstream
    log: RecordingLog
    exporter: InMemorySpanExporter
    app: object

    def messages(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key="client-key", max_retries=0, timeout=10)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="client-key", max_retries=0, timeout=10)

    def spans(self, name: str) -> list[dict[str, object]]:
        return [dict(s.attributes or {}) for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    a, b = FakeUpstream(), FakeUpstream()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with serve(a.app) as a_url, serve(b.app) as b_url:
        app = create_app(load_config_text(config_text(a_url, b_url), environ={}), tracer_provider=provider)
        log = app.state.gateway.request_log = RecordingLog(app.state.gateway.request_log)
        with serve(app) as url:
            yield Served(url, a, b, log, exporter, app)
    provider.shutdown()


@pytest.fixture
def gw(served: Served) -> Served:
    served.a.reset()
    served.b.reset()
    served.log.drain()
    served.exporter.clear()
    served.app.state.gateway.services.rng.seed(7)  # type: ignore[attr-defined]
    return served


# -- rate limits ---------------------------------------------------------------------------------

def test_a_rate_limit_holds_on_messages(gw: Served) -> None:
    gw.a.reply = Reply(json=anthropic_message([{"type": "text", "text": "ok"}]))
    client = gw.messages()
    for _ in range(2):
        client.messages.create(model="anth-a/limited", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as raised:
        client.messages.create(model="anth-a/limited", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert "Rate limit exceeded: rule 'anth-a/limited-rpm' allows 2 requests per minute." in str(raised.value)
    assert len(gw.a.requests) == 2


def test_a_rate_limit_holds_on_embeddings(gw: Served) -> None:
    gw.a.reply = Reply(json=EMBEDDING)
    client = gw.openai()
    for _ in range(2):
        client.embeddings.create(model="oai-a/limited-embed", input="hi")
    with pytest.raises(openai.RateLimitError) as raised:
        client.embeddings.create(model="oai-a/limited-embed", input="hi")
    assert raised.value.body == {  # type: ignore[comparison-overlap]
        "message": "Rate limit exceeded: rule 'oai-a/limited-embed-rpm' allows 2 requests per minute. "
                   f"Retry after {raised.value.response.headers['retry-after']} s.",
        "type": "rate_limit_error", "code": "rate_limit_exceeded", "param": None,
    }
    assert len(gw.a.requests) == 2


# -- load balancing ------------------------------------------------------------------------------

def test_a_load_balancing_rule_spreads_messages(gw: Served) -> None:
    gw.a.reply = gw.b.reply = Reply(json=anthropic_message([{"type": "text", "text": "ok"}]))
    client = gw.messages()
    for _ in range(12):
        client.messages.create(model="claude-any", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert gw.a.requests and gw.b.requests and len(gw.a.requests) + len(gw.b.requests) == 12
    assert {r.path for r in gw.a.requests + gw.b.requests} == {"/v1/messages"}
    assert {r.body["model"] for r in gw.a.requests + gw.b.requests} == {"claude"}
    spans = gw.spans("loadBalanceMiddleware")
    assert len(spans) == 12
    assert spans[0] == {
        "load_balance.http.url": "/v1/messages", "load_balance.http.method": "POST", "user.tenantName": "default",
        "load_balance.requested_model": "claude-any", "load_balance.resolved_model": spans[0][
            "load_balance.resolved_model"],
    }
    assert {s["load_balance.resolved_model"] for s in spans} == {"anth-a/claude", "anth-b/claude"}
    assert len(gw.spans("messages")) == 12


def test_a_load_balancing_rule_spreads_embeddings(gw: Served) -> None:
    gw.a.reply = gw.b.reply = Reply(json=EMBEDDING)
    client = gw.openai()
    for _ in range(12):
        assert client.embeddings.create(model="embed-any", input="hi").data[0].embedding == [0.25, -0.5]
    assert gw.a.requests and gw.b.requests and len(gw.a.requests) + len(gw.b.requests) == 12
    assert {r.path for r in gw.a.requests + gw.b.requests} == {"/v1/embeddings"}
    spans = gw.spans("loadBalanceMiddleware")
    assert len(spans) == 12
    resolved = spans[0]["load_balance.resolved_model"]
    assert spans[0] == {
        "load_balance.http.url": "/v1/embeddings", "load_balance.http.method": "POST", "user.tenantName": "default",
        "load_balance.requested_model": "embed-any", "load_balance.resolved_model": resolved,
    }
    assert {s["load_balance.resolved_model"] for s in spans} == {"oai-a/embed", "oai-b/embed"}


# -- fallback ------------------------------------------------------------------------------------

def test_a_fallback_rule_applies_to_messages(gw: Served) -> None:
    gw.a.reply = Reply(status=500, json=ERROR_500)
    gw.b.reply = Reply(json=anthropic_message([{"type": "text", "text": "from b"}]))
    answer = gw.messages().messages.create(model="anth-a/claude", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert answer.content[0].text == "from b"  # type: ignore[union-attr]
    assert (len(gw.a.requests), len(gw.b.requests)) == (1, 1)
    assert gw.spans("fallbackRequest") == [{
        "fallback.http.url": "/v1/messages", "fallback.http.method": "POST",
        "fallback.requested_model": "anth-a/claude", "fallback.resolved_model": "anth-b/claude",
        "fallback.config_id": "claude-fallback", "fallback.max_tokens": 5,
    }]
    exchange = gw.log.next()
    assert (exchange.outcome.provider, exchange.outcome.attempts) == ("anth-b", 2)


def test_a_fallback_rule_applies_to_a_messages_stream(gw: Served) -> None:
    gw.a.reply = Reply(status=500, json=ERROR_500)
    gw.b.reply = Reply(events=anthropic_text_stream(["Hel", "lo"]))
    with gw.messages().messages.stream(model="anth-a/claude", max_tokens=5, messages=HELLO) as stream:  # type: ignore[arg-type]
        assert "".join(stream.text_stream) == "Hello"
    assert len(gw.spans("fallbackRequest")) == 1
    exchange = gw.log.next()
    assert exchange.outcome.provider_request_id == "msg_fake1"  # no header: the id of message_start
    assert exchange.response["content"] == [{"type": "text", "text": "Hello"}]


def test_a_fallback_rule_applies_to_embeddings(gw: Served) -> None:
    gw.a.reply = Reply(status=500, json=ERROR_500)
    gw.b.reply = Reply(json=EMBEDDING)
    assert gw.openai().embeddings.create(model="oai-a/embed", input="hi").data[0].embedding == [0.25, -0.5]
    assert (len(gw.a.requests), len(gw.b.requests)) == (1, 1)
    assert gw.spans("fallbackRequest") == [{
        "fallback.http.url": "/v1/embeddings", "fallback.http.method": "POST",
        "fallback.requested_model": "oai-a/embed", "fallback.resolved_model": "oai-b/embed",
        "fallback.config_id": "embed-fallback",
    }]


# -- /v1/messages to a provider that does not speak it -------------------------------------------

def test_a_load_balancing_rule_to_an_openai_provider_is_a_400_on_messages(gw: Served) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        gw.messages().messages.create(model="claude-wrong", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert ("the load-balancing rule 'claude-to-openai' sends /v1/messages to 'oai-a/gpt-4o', a provider of type "
            "openai; /v1/messages is served by anthropic providers only.") in str(raised.value)
    assert gw.a.requests == []


def test_a_fallback_rule_to_an_openai_provider_is_a_400_on_messages(gw: Served) -> None:
    gw.a.reply = Reply(status=500, json=ERROR_500)
    with pytest.raises(anthropic.BadRequestError) as raised:
        gw.messages().messages.create(model="anth-a/solo", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert ("the fallback rule 'solo-to-openai' sends /v1/messages to 'oai-a/gpt-4o', a provider of type "
            "openai; /v1/messages is served by anthropic providers only.") in str(raised.value)
    assert [r.path for r in gw.a.requests] == ["/v1/messages"]  # the primary only


# -- moderations, provider_request_id --------------------------------------------------------------

def test_moderations_go_through_the_chain(gw: Served) -> None:
    gw.a.reply = Reply(json=MODERATION, headers={"x-request-id": "req_mod_1"})
    assert gw.openai().moderations.create(model="oai-a/omni", input="hi").results[0].flagged is False
    assert [r.body["model"] for r in gw.a.requests] == ["omni"]
    assert gw.spans("RateLimiterMiddleware") == [{
        "rate_limiter.model": "oai-a/omni", "rate_limiter.metadata": "{}",
        "rate_limiter.user.subject_type": "user", "rate_limiter.user.subject_slug": "anonymous",
        "rate_limiter.user.tenant_name": "default", "rate_limiter.rules": (),
        "rate_limiter.status": "no_matching_rules",
    }]
    assert gw.log.next().outcome.provider_request_id == "req_mod_1"


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({"request-id": "req_hdr_1"}, "req_hdr_1", id="header"),
    pytest.param({}, "msg_fake1", id="response-id"),
])
def test_provider_request_id_on_messages(gw: Served, headers: dict[str, str], expected: str) -> None:
    gw.a.reply = Reply(json=anthropic_message([{"type": "text", "text": "ok"}]), headers=headers)
    gw.messages().messages.create(model="anth-a/claude", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert gw.log.next().outcome.provider_request_id == expected


def test_provider_request_id_on_embeddings_without_a_header_is_the_answer_id(gw: Served) -> None:
    gw.a.reply = Reply(json={**EMBEDDING, "id": "emb-7"})
    gw.openai().embeddings.create(model="oai-a/embed", input="hi")
    assert gw.log.next().outcome.provider_request_id == "emb-7"
