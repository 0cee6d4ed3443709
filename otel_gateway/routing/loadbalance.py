"""Load balancing: a (usually virtual) model name spread over concrete targets.

The first rule whose ``when`` matches the call applies, ``models`` matched against the model the
client asked for; without one the call passes through unchanged. The rule's targets that are not
ejected by :mod:`.health` form the pool (all of them, when every one is ejected), and the rule's
type picks one:

- ``weight-based-routing``: at random, in proportion to ``weight``;
- ``latency-based-routing``: a target with fewer than :data:`LEARNING_SAMPLES` recent latency
  samples first, so that it is measured; then at random among those within
  :data:`FAST_ENOUGH` times the fastest recent time per output token;
- ``priority-based-routing``: the lowest ``priority`` number; ties at random by ``weight``, or
  in turn when they have none.

The chosen target is called as ``call.retarget(target, override_params, retry_config)``; the
retry layer just above the provider attempt applies that ``retry_config``. When the target
fails with a status in its ``fallback_status_codes``, or without an answer (timeout,
connection error, time-to-first-token timeout: another target is the best chance then), the
pool's other ``fallback_candidate`` targets are tried in the type's order (rule order; fastest
first; lowest priority first), each in a ``fallbackRequest`` span, and the last error reaches
the client when all fail. As with fallback, a stream fails over only
before its first chunk, and nothing starts past the request deadline.

The rule's virtual model names are listed by ``GET /v1/models`` (``http.info``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.trace import SpanKind, Tracer

from ..calls import ChatCall, ChunkStream, Completion, Send
from ..config import LoadBalanceDocument, LoadBalanceRule, LoadBalanceTarget
from ..errors import GatewayError, RequestTimeoutError
from ._attempts import CHAT_METHOD, is_transport_failure, send_in_span, status_of
from ._match import matches
from .fallback import Alternative, send_with_fallbacks
from .health import HealthRegistry

__all__ = ["FAST_ENOUGH", "LEARNING_SAMPLES", "LOAD_BALANCE_SPAN", "LoadBalancer"]

LOAD_BALANCE_SPAN = "loadBalanceMiddleware"
LEARNING_SAMPLES = 3
"""Recent latency samples a target needs before latency-based routing judges it."""
FAST_ENOUGH = 1.2
"""Latency-based routing spreads traffic over targets within this factor of the fastest."""


@dataclass(frozen=True, slots=True)
class _Target:
    config: LoadBalanceTarget
    index: int
    """Position in the rule: the order of ties and of weight-based fail-over."""

    @property
    def name(self) -> str:
        return self.config.target

    def fails_over(self, error: GatewayError) -> bool:
        if isinstance(error, RequestTimeoutError) or is_transport_failure(error):
            return True
        return status_of(error) in self.config.fallback_status_codes


class _Route:
    """One rule with its targets, and how its type picks and orders them."""

    def __init__(self, rule: LoadBalanceRule, targets: Sequence[_Target], health: HealthRegistry,
                 rng: random.Random) -> None:
        self.rule = rule
        self.targets = tuple(targets)
        self._health = health
        self._rng = rng
        self._turns = itertools.count()
        pickers: dict[str, Callable[[list[_Target]], _Target]] = {
            "weight-based-routing": self._by_weight,
            "latency-based-routing": self._by_latency,
            "priority-based-routing": self._by_priority,
        }
        self._pick = pickers[rule.type]

    def plan(self) -> list[_Target]:
        """The chosen target, then the fail-over candidates in the order of the rule's type."""
        pool = [t for t in self.targets if self._health.available(t.name)] or list(self.targets)
        chosen = self._pick(pool)
        return [chosen, *(t for t in self._ranked(pool) if t is not chosen and t.config.fallback_candidate)]

    def _ranked(self, pool: list[_Target]) -> list[_Target]:
        if self.rule.type == "priority-based-routing":
            return sorted(pool, key=lambda t: (t.config.priority or 0, t.index))
        if self.rule.type == "latency-based-routing":
            def speed(target: _Target) -> tuple[bool, float, int]:
                per_token = self._health.latency(target.name).per_token
                return per_token is None, per_token or 0.0, target.index

            return sorted(pool, key=speed)
        return pool

    def _by_weight(self, pool: list[_Target]) -> _Target:
        weights = [t.config.weight or 0 for t in pool]
        if not any(weights):
            return self._rng.choice(pool)
        return self._rng.choices(pool, weights=weights)[0]

    def _by_latency(self, pool: list[_Target]) -> _Target:
        stats = {t.index: self._health.latency(t.name) for t in pool}
        learning = [t for t in pool if stats[t.index].recent < LEARNING_SAMPLES]
        if learning:
            return self._rng.choice(learning)
        fastest = min(stats[t.index].per_token or 0.0 for t in pool)
        return self._rng.choice([t for t in pool if (stats[t.index].per_token or 0.0) <= fastest * FAST_ENOUGH])

    def _by_priority(self, pool: list[_Target]) -> _Target:
        first = min(t.config.priority or 0 for t in pool)
        tied = [t for t in pool if (t.config.priority or 0) == first]
        if len(tied) > 1 and all(t.config.weight for t in tied):
            return self._rng.choices(tied, weights=[t.config.weight or 0 for t in tied])[0]
        return tied[next(self._turns) % len(tied)]


class LoadBalancer:
    """``send`` must record its attempts into ``health`` (a :class:`.health.HealthObserver`
    just above the provider attempt): that is what ejects targets and measures their latency;
    and it must apply each call's ``retry`` (a :class:`.retry.RetryLayer`)."""

    def __init__(
        self,
        send: Send,
        config: LoadBalanceDocument,
        *,
        health: HealthRegistry,
        tracer: Tracer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._send = send
        self._tracer = tracer
        rng = rng or random.Random()
        self._routes = [
            _Route(rule, [_Target(target, index) for index, target in enumerate(rule.load_balance_targets)],
                   health, rng)
            for rule in config.rules
        ]

    def route_for(self, call: ChatCall) -> _Route | None:
        return next((route for route in self._routes if matches(route.rule.when, call)), None)

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        route = self.route_for(call)
        if route is None:
            return await self._send(call)
        chosen, *others = route.plan()
        via = f"the load-balancing rule '{route.rule.id}'"
        primary = self._alternative(call, chosen, via)
        alternatives = (self._alternative(call, target, via) for target in others)
        if self._tracer is None:
            return await send_with_fallbacks(primary, alternatives, config_id=route.rule.id, tracer=None)
        span = self._tracer.start_span(LOAD_BALANCE_SPAN, kind=SpanKind.INTERNAL, attributes={
            "load_balance.http.url": call.path,
            "load_balance.http.method": CHAT_METHOD,
            "user.tenantName": call.context.identity.tenant,
            "load_balance.requested_model": call.model,
            "load_balance.resolved_model": chosen.name,
        })

        async def balanced(_: ChatCall) -> Completion | ChunkStream:
            return await send_with_fallbacks(primary, alternatives, config_id=route.rule.id, tracer=self._tracer)

        return await send_in_span(span, balanced, call)


    def _alternative(self, call: ChatCall, target: _Target, via: str) -> Alternative:
        retargeted = call.retarget(target.name, target.config.override_params, target.config.retry_config, via)
        return Alternative(retargeted, self._send, target.fails_over)

