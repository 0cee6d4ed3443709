"""The shipped price table, how a request finds its price, and cost in dollars and cents."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from otel_gateway.config import load_config, load_config_text
from otel_gateway.config._logging import PricingDocument
from otel_gateway.warehouse import Price, Pricing, cost
from otel_gateway.warehouse._pricing import SHIPPED_TABLE, shipped_table

REPO = Path(__file__).resolve().parents[2]
PROVIDERS = """\
type: gateway-providers-config
providers:
  - {name: oai, type: openai, api_key: k1, models: [gpt-4o, gpt-4o-mini, o3]}
  - {name: az, type: azure-openai, base_url: "https://r.openai.azure.com", api_key: k2, models: {gpt-4o: my-deploy}}
  - {name: claude, type: anthropic, api_key: k3, models: [claude-sonnet-4-5]}
  - {name: groq, type: openai-compatible, base_url: "https://api.groq.com/openai/v1", models: [llama-3.1-8b-instant]}
  - {name: tog, type: openai-compatible, base_url: "https://api.together.xyz/v1",
     models: [meta-llama/Llama-3.3-70B-Instruct-Turbo]}
  - {name: local, type: openai-compatible, base_url: "http://127.0.0.1:9/v1", models: [gpt-4o-mini, mystery]}
  - {name: demo, type: mock, models: [echo]}
"""


def pricing(extra: str = "") -> Pricing:
    return Pricing.from_config(load_config_text(PROVIDERS + extra, environ={}))


def test_the_shipped_table_is_a_config_document_of_the_shipped_config() -> None:
    table = shipped_table()
    assert SHIPPED_TABLE == REPO / "config" / "pricing.yaml"
    assert table is not None
    assert table.as_of == "2025-11-15"
    assert sorted(table.providers) == ["anthropic", "azure", "groq", "openai", "together"]
    config = load_config(REPO / "config", environ={})
    assert config.pricing == table
    for models in table.providers.values():
        for price in models.values():
            assert price.output >= 0 and (price.cached_input is None or price.cached_input <= price.input)


@pytest.mark.parametrize(("account", "requested", "models", "expected"), [
    pytest.param("oai", "oai/gpt-4o", ["gpt-4o-2024-08-06", "gpt-4o"], ("2.5", "10", "1.25"), id="dated-version"),
    pytest.param("oai", "oai/gpt-4o", ["gpt-4o-2024-05-13", "gpt-4o"], ("5", "15", "5"), id="exact-dated-entry"),
    pytest.param("oai", "oai/gpt-4o-mini", ["gpt-4o-mini-2024-07-18"], ("0.15", "0.6", "0.075"), id="longest-prefix"),
    pytest.param("oai", "oai/o3", [None, "o3"], ("2", "8", "0.5"), id="upstream-model"),
    pytest.param("az", "az/gpt-4o", ["gpt-4o-2024-11-20", "my-deploy"], ("2.5", "10", "1.25"), id="azure-answer-model"),
    pytest.param("claude", "claude/claude-sonnet-4-5", ["claude-sonnet-4-5-20250929"], ("3", "15", "0.3"),
                 id="anthropic-dated"),
    pytest.param("groq", "groq/llama-3.1-8b-instant", ["llama-3.1-8b-instant"], ("0.05", "0.08", "0.05"),
                 id="groq-by-host"),
    pytest.param("tog", "tog/x", ["meta-llama/Llama-3.3-70B-Instruct-Turbo"], ("0.88", "0.88", "0.88"),
                 id="together-by-host-any-case"),
    pytest.param("local", "local/gpt-4o-mini", ["gpt-4o-mini"], ("0.15", "0.6", "0.075"),
                 id="unknown-host-any-section"),
    pytest.param("demo", "demo/echo", ["echo"], ("0", "0", "0"), id="mock-is-free"),
])
def test_price_lookup(account: str, requested: str, models: list[str | None], expected: tuple[str, str, str]) -> None:
    price = pricing().price(account=account, requested=requested, models=models)
    assert price == Price(*(Decimal(v) for v in expected))


@pytest.mark.parametrize("models", [["mystery"], ["gpt-4o-realtime-preview"], ["gpt-4omni"], []])
def test_no_price(models: list[str]) -> None:
    assert pricing().price(account="local", requested="local/mystery", models=models) is None


def test_overrides_win_by_requested_model_then_provider_model() -> None:
    overrides = """---
type: gateway-logging-config
pricing:
  oai/gpt-4o: {input: 1, output: 2}
  gpt-4o-mini: {input: 0.5, output: 1.5, cached_input: 0.25}
  demo/echo: {input: 3, output: 4}
"""
    table = pricing(overrides)
    assert table.price(account="oai", requested="oai/gpt-4o", models=["gpt-4o"]) == Price(
        Decimal(1), Decimal(2), Decimal(1))
    assert table.price(account="local", requested="local/gpt-4o-mini", models=["gpt-4o-mini-2024-07-18"]) == Price(
        Decimal("0.5"), Decimal("1.5"), Decimal("0.25"))
    assert table.price(account="demo", requested="demo/echo", models=["echo"]) == Price(
        Decimal(3), Decimal(4), Decimal(3))
    assert table.price(account="az", requested="az/gpt-4o", models=["gpt-4o"]) == Price(
        Decimal("2.5"), Decimal(10), Decimal("1.25"))


def test_a_pricing_document_replaces_the_shipped_table() -> None:
    own = """---
type: gateway-pricing-config
as_of: 2025-01-01
providers:
  openai: {gpt-4o: {input: 9, output: 9}}
"""
    config = load_config_text(PROVIDERS + own, environ={})
    assert isinstance(config.pricing, PricingDocument) and config.pricing.as_of == "2025-01-01"
    table = Pricing.from_config(config)
    assert table.price(account="oai", requested="oai/gpt-4o", models=["gpt-4o"]) == Price(
        Decimal(9), Decimal(9), Decimal(9))
    assert table.price(account="claude", requested="claude/claude-sonnet-4-5", models=["claude-sonnet-4-5"]) is None


def test_cost_in_dollars_and_cents_as_the_warehouse_seed() -> None:
    usage = {"prompt_tokens": 9056, "completion_tokens": 52}
    assert cost(usage, Price(Decimal(5), Decimal(15), Decimal(5))) == {
        "input_cost": 0.04528, "output_cost": 0.00078, "total_cost": 0.04606,
        "input_cost_cents": 4.528, "output_cost_cents": 0.078, "total_cost_cents": 4.606,
    }


def test_cached_prompt_tokens_are_priced_as_cached_input() -> None:
    usage = {"prompt_tokens": 2000, "cached_tokens": 1024, "completion_tokens": 100}
    result = cost(usage, Price(Decimal("2.5"), Decimal(10), Decimal("1.25")))
    # 976 * 2.5 + 1024 * 1.25 = 2440 + 1280 = 3720 per million; 100 * 10 = 1000 per million
    assert result == {"input_cost": 0.00372, "output_cost": 0.001, "total_cost": 0.00472,
                      "input_cost_cents": 0.372, "output_cost_cents": 0.1, "total_cost_cents": 0.472}


def test_zero_usage_costs_nothing() -> None:
    price = Price(Decimal(5), Decimal(15), Decimal(5))
    assert set(cost({"prompt_tokens": 0, "completion_tokens": 0}, price).values()) == {0.0}


def test_an_override_of_the_target_that_answered_wins_over_the_requested_name() -> None:
    # A virtual "gpt-4o" load-balanced to primary/gpt-4o is priced as primary/gpt-4o, and an
    # override of the virtual name applies only when the answering target has none.
    table = pricing("""---
type: gateway-logging-config
pricing:
  primary/gpt-4o: {input: 5, output: 5}
  gpt-4o: {input: 7, output: 7}
""")
    assert table.price(account="primary", requested="gpt-4o", target="primary/gpt-4o", models=["gpt-4o"]) == Price(
        Decimal(5), Decimal(5), Decimal(5))
    assert table.price(account="backup", requested="gpt-4o", target="backup/gpt-4o", models=["gpt-4o"]) == Price(
        Decimal(7), Decimal(7), Decimal(7))
