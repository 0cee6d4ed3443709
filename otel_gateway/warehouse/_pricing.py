"""Prices and cost: which price applies to a request, and what its usage cost in dollars and cents.

The table is the config's ``gateway-pricing-config`` document, else the shipped
``config/pricing.yaml``; ``gateway-logging-config``'s ``pricing`` overrides it model by model.
Arithmetic is decimal, so ``9056`` tokens at ``$5``/M cost exactly ``0.04528``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..config import GatewayConfig, ModelPrice, PricingDocument, ProviderConfig

logger = logging.getLogger("otel_gateway.warehouse")

SHIPPED_TABLE = Path(__file__).resolve().parents[2] / "config" / "pricing.yaml"
"""The table shipped beside the package's source (``config/pricing.yaml``)."""
_MILLION = Decimal(1_000_000)
_VERSION_SUFFIX = re.compile(r"^[-@](\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest|v\d+(:\d+)?)$")
_TYPE_VENDORS = {"openai": "openai", "azure-openai": "azure", "anthropic": "anthropic"}


@dataclass(frozen=True, slots=True)
class Price:
    """Dollars per million tokens."""

    input: Decimal
    output: Decimal
    cached_input: Decimal

    @classmethod
    def of(cls, price: ModelPrice) -> Price:
        cached = price.input if price.cached_input is None else price.cached_input
        return cls(Decimal(str(price.input)), Decimal(str(price.output)), Decimal(str(cached)))


FREE = Price(Decimal(0), Decimal(0), Decimal(0))


def cost(usage: Mapping[str, Any], price: Price) -> dict[str, float]:
    """The warehouse's cost breakdown of an OpenAI-shaped usage (``prompt_tokens`` includes
    ``cached_tokens``, which are priced as cached input)."""
    prompt = int(usage.get("prompt_tokens") or 0)
    cached = min(int(usage.get("cached_tokens") or 0), prompt)
    input_cost = ((prompt - cached) * price.input + cached * price.cached_input) / _MILLION
    output_cost = int(usage.get("completion_tokens") or 0) * price.output / _MILLION
    total = input_cost + output_cost
    return {
        "input_cost": float(input_cost),
        "output_cost": float(output_cost),
        "total_cost": float(total),
        "input_cost_cents": float(input_cost * 100),
        "output_cost_cents": float(output_cost * 100),
        "total_cost_cents": float(total * 100),
    }


class Pricing:
    """Finds the price of a request: an override first (by the ``provider-account/model`` that
    answered, by the model as requested, then by the provider's model names), then the table's
    section of the provider account's vendor, then any section. Dated model versions
    (``-2024-08-06``, ``-20250929``, ``-0613``, ``-latest``) match their undated entry; an exact
    entry wins. The ``mock`` provider is free."""

    def __init__(self, table: PricingDocument | None, overrides: Mapping[str, ModelPrice],
                 providers: Iterable[ProviderConfig]) -> None:
        self._overrides = {name.lower(): Price.of(p) for name, p in overrides.items()}
        self._sections: dict[str, dict[str, Price]] = {
            vendor.lower(): {name.lower(): Price.of(p) for name, p in models.items()}
            for vendor, models in (table.providers.items() if table else ())
        }
        self._vendors = {p.name: self._vendor_of(p) for p in providers}

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Pricing:
        return cls(config.pricing or shipped_table(), config.logging.pricing, config.providers)

    def vendor(self, account: str | None) -> str | None:
        return self._vendors.get(account or "")

    def price(
        self, *, account: str | None, requested: str | None, models: Iterable[str | None], target: str | None = None
    ) -> Price | None:
        """``models``: the provider's names for the model, most precise first (the answer's
        ``model``, the upstream model); ``target``: the ``provider-account/model`` that answered."""
        names = [m.lower() for m in models if m]
        chosen = [name.lower() for name in (target, requested) if name]
        found = _lookup(self._overrides, chosen) or _lookup(self._overrides, names)
        if found is not None:
            return found
        vendor = self.vendor(account)
        if vendor == "mock":
            return FREE
        section = self._sections.get(vendor or "")
        if section is not None and (found := _lookup(section, names)) is not None:
            return found
        for other in self._sections.values():
            if other is not section and (found := _lookup(other, names)) is not None:
                return found
        return None

    def _vendor_of(self, provider: ProviderConfig) -> str | None:
        if provider.type == "mock":
            return "mock"
        if provider.type in _TYPE_VENDORS:
            return _TYPE_VENDORS[provider.type]
        host = (urlsplit(provider.url).hostname or "").lower()
        return next((vendor for vendor in self._sections if vendor in host), None)


def _lookup(prices: Mapping[str, Price], names: Iterable[str]) -> Price | None:
    names = list(names)
    for name in names:
        if name in prices:
            return prices[name]
    for name in names:
        best = ""
        for key in prices:
            if len(key) > len(best) and name.startswith(key) and _VERSION_SUFFIX.match(name[len(key):]):
                best = key
        if best:
            return prices[best]
    return None


@functools.cache
def shipped_table() -> PricingDocument | None:
    """The shipped ``config/pricing.yaml``, when the package runs from its source tree."""
    try:
        return PricingDocument.model_validate(yaml.safe_load(SHIPPED_TABLE.read_text(encoding="utf-8")))
    except FileNotFoundError:
        logger.warning("no pricing table: %s is missing and the config has no gateway-pricing-config; "
                       "costs are recorded as null", SHIPPED_TABLE)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        logger.error("the shipped pricing table %s is invalid: %s", SHIPPED_TABLE, exc)
    return None
