"""From an :class:`Exchange` to a log record, off the request path: redacted, counted, priced.

The record, as ``seeds/request-log-records.jsonc`` shapes it, with the warehouse fields of
``seeds/request-logging-warehouse.md`` beside::

    timestamp                  ISO 8601 UTC, milliseconds: when the request arrived
    resource                   service.name, service.version, deployment.environment
    name                       "ai_gateway_request_log"
    attributes
      id                       the request id (x-gateway-request-id)
      threadId, project_id     from x-gateway-metadata thread_id, project_id
      org_id, user_id          the caller's tenant and subject
      provider, model          the provider account that answered; the model as requested
      endpoint, method, stream, query, request_headers (credentials read [REDACTED])
      request                  the body as received
      response                 the answer; for streams the assembled message with streamed_data
                               (every chunk as the client received it); on failure the error body
      error                    the OpenAI error body the client got, or null
      cache                    {status: HIT|MISS|null, enabled: whether a cache applied}
      usage, expected_usage    {model, prompt_tokens, completion_tokens, total_tokens,
                               cached_tokens, calculated_by: provider|tiktoken[, encoding]}
      cost, expected_cost      {input_cost, output_cost, total_cost, *_cents}: dollars and cents
                               (a cache hit: usage and cost zero, expected_* what it would have cost)
      authorization            SHA-256 hex of the Authorization header value
      key_name                 the gateway key's name
      trace_id, span_id        of the request's SERVER span
      metadata                 projectId, projectName, latency (ms), tokens {input, output, total},
                               cost (total dollars), status, provider_request_id, http_status (499:
                               cancelled),
                               provider_type, upstream_model, attempts, and every x-gateway-metadata
                               key (the gateway's own keys win a clash)

The seed's ``metadata.cost`` is a number, so the breakdowns sit on ``attributes`` (where the
warehouse seed keeps them beside ``provider`` and ``model``). Redaction is the gateway's one rule
(:mod:`otel_gateway.redaction`): headers, query parameters and metadata keys named like credentials
read ``[REDACTED]``, and every string of the record is scrubbed of the configured secrets, the
caller's own key and anything shaped like a key.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .._version import __version__
from ..chat import CompletionAssembler
from ..config import GatewayConfig
from ..redaction import REDACTED, Redactor, caller_credentials
from ._exchange import CLIENT_CLOSED_REQUEST, Exchange
from ._pricing import Price, Pricing, cost
from ._tokens import TokenCounter

__all__ = ["RECORD_NAME", "REDACTED", "RecordBuilder"]

logger = logging.getLogger("otel_gateway.warehouse")

RECORD_NAME = "ai_gateway_request_log"


class RecordBuilder:
    """Builds records for one configuration; safe to use from a worker thread."""

    def __init__(
        self, config: GatewayConfig, *, service_name: str = "otel-gateway", redactor: Redactor | None = None
    ) -> None:
        """``redactor``: the configuration's (:meth:`Redactor.for_config` when not given)."""
        logging_config = config.logging
        self.resource = {
            "service.name": service_name,
            "service.version": __version__,
            "deployment.environment": logging_config.environment,
        }
        self._redact = redactor or Redactor.for_config(config)
        self._pricing = Pricing.from_config(config)

    def build(self, exchange: Exchange) -> dict[str, Any]:
        outcome = exchange.outcome
        response = self._response(exchange)
        expected = self._usage(exchange, response)
        hit = outcome.cache_status == "HIT"
        usage = _zero(expected) if hit and expected is not None else expected
        price = self._price(exchange, response)
        expected_cost = cost(expected, price) if expected is not None and price is not None else None
        actual_cost = cost(usage, price) if usage is not None and price is not None else None
        custom = self._redact.headers(exchange.metadata)
        authorization = exchange.request_headers.get("authorization")
        attributes: dict[str, Any] = {
            "id": exchange.request_id,
            "threadId": custom.get("thread_id"),
            "org_id": exchange.identity.tenant,
            "user_id": exchange.identity.subject,
            "project_id": custom.get("project_id"),
            "provider": outcome.provider,
            "model": exchange.model,
            "endpoint": exchange.endpoint,
            "method": exchange.method,
            "stream": exchange.stream,
            "query": self._redact.query(exchange.query),
            "request_headers": self._redact.headers(exchange.request_headers),
            "request": exchange.request,
            "response": response if response is not None else exchange.error,
            "error": exchange.error,
            "cache": {"status": outcome.cache_status, "enabled": outcome.cache_status is not None},
            "usage": usage,
            "cost": actual_cost,
            "expected_usage": expected,
            "expected_cost": expected_cost,
            "authorization": hashlib.sha256(authorization.encode()).hexdigest() if authorization else None,
            "key_name": exchange.identity.key_name,
            "trace_id": exchange.trace_id,
            "span_id": exchange.span_id,
            "metadata": {
                **custom,
                "projectId": custom.get("project_id"),
                "projectName": custom.get("project_name"),
                "latency": exchange.latency_ms,
                "tokens": {
                    "input": usage["prompt_tokens"] if usage else 0,
                    "output": usage["completion_tokens"] if usage else 0,
                    "total": usage["total_tokens"] if usage else 0,
                },
                "cost": actual_cost["total_cost"] if actual_cost else None,
                "status": exchange.status,
                "provider_request_id": outcome.provider_request_id,
                "http_status": CLIENT_CLOSED_REQUEST if exchange.status == "cancelled" else exchange.http_status,
                "provider_type": outcome.provider_type,
                "upstream_model": outcome.upstream_model,
                "attempts": outcome.attempts,
            },
        }
        record = {"timestamp": _iso(exchange.started_at), "resource": self.resource, "name": RECORD_NAME,
                  "attributes": attributes}
        return self._redact.with_secrets(caller_credentials(exchange.request_headers)).value(record)

    # -- parts ---------------------------------------------------------------------------------

    @staticmethod
    def _response(exchange: Exchange) -> Any:
        if exchange.streamed_data is None:
            return exchange.response
        if exchange.response is not None:
            assembled = dict(exchange.response)
        else:
            assembler = CompletionAssembler()
            for chunk in exchange.streamed_data:
                assembler.add(chunk)
            assembled = assembler.result()
        if exchange.usage is not None:
            assembled["usage"] = exchange.usage
        assembled["streamed_data"] = exchange.streamed_data
        return assembled

    def _usage(self, exchange: Exchange, response: Any) -> dict[str, Any] | None:
        model = _answer_model(response) or exchange.outcome.upstream_model or exchange.model or ""
        reported = exchange.usage if exchange.usage is not None else _mapping(response).get("usage")
        if isinstance(reported, Mapping) and isinstance(reported.get("prompt_tokens"), int):
            prompt, completion = reported["prompt_tokens"], int(reported.get("completion_tokens") or 0)
            details = _mapping(reported.get("prompt_tokens_details"))
            return _usage_of(model, prompt, completion, int(details.get("cached_tokens") or 0), "provider")
        if not isinstance(response, Mapping) or "choices" not in response or not isinstance(exchange.request, Mapping):
            return None
        try:
            counter = TokenCounter(model)
            prompt, completion = counter.prompt(exchange.request), counter.completion(response)
        except Exception:  # a missing tokenizer must not lose the record
            logger.exception("counting the tokens of request %s failed", exchange.request_id)
            return None
        return {**_usage_of(model, prompt, completion, 0, "tiktoken"), "encoding": counter.encoding_name}

    def _price(self, exchange: Exchange, response: Any) -> Price | None:
        outcome = exchange.outcome
        return self._pricing.price(account=outcome.provider, requested=exchange.model, target=outcome.model_id,
                                   models=(_answer_model(response), outcome.upstream_model))


def _usage_of(model: str, prompt: int, completion: int, cached: int, calculated_by: str) -> dict[str, Any]:
    return {"model": model, "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "cached_tokens": cached, "calculated_by": calculated_by}


def _zero(usage: Mapping[str, Any]) -> dict[str, Any]:
    return {**usage, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0}


def _answer_model(response: Any) -> str | None:
    model = _mapping(response).get("model")
    return model if isinstance(model, str) and model else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
