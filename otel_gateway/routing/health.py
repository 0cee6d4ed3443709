"""Per-target health, kept as an outlier detector, and latency statistics for routing.

A target is one ``provider-account/model``. :class:`HealthObserver` sits just above the provider
attempt and records the outcome of every upstream attempt, whichever layer routed it there, into
a :class:`HealthRegistry` the load balancer reads:

- ``failure_threshold`` consecutive failures (no answer, 5xx, 429, 408) eject the target for a
  cooldown, doubled with each ejection that follows soon after the last one, capped;
- once the cooldown has passed, the target is half-open: one probe attempt is let through, and
  it restores the target or ejects it again for longer; until it ends, the target stays unavailable;
- an attempt that succeeds records one latency sample: seconds per output token, over the whole
  attempt (to the last chunk of a stream); the tokens of an answer without usage are estimated
  from its text. The last ``window`` samples younger than
  ``sample_ttl`` are the target's recent latency.

Health lives in one process: each worker of ``serve --workers N`` learns on its own.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..calls import ChatCall, ChunkStream, Completion, Send
from ..chat import SPECS
from ..errors import UpstreamStatusError
from ._attempts import FinishingStream, is_target_failure

__all__ = ["HealthObserver", "HealthPolicy", "HealthRegistry", "LatencyStats", "Lease"]

logger = logging.getLogger("otel_gateway.routing")

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    failure_threshold: int = 3
    """Consecutive failures that eject a target."""
    cooldown: float = 30.0
    """Seconds of the first ejection; each further one doubles it."""
    max_cooldown: float = 300.0
    """Longest ejection. A target that stayed healthy this long after its last ejection starts over."""
    window: int = 10
    """Latency samples kept per target."""
    sample_ttl: float = 300.0
    """Seconds a latency sample counts as recent."""


@dataclass(frozen=True, slots=True)
class LatencyStats:
    recent: int
    """Recent samples."""
    per_token: float | None
    """Mean seconds per output token over the recent samples; ``None`` without any."""
    total: int
    """Samples ever recorded."""


class _State:
    __slots__ = ("consecutive", "ejected_until", "ejections", "probing", "restored_at", "samples", "total")

    def __init__(self, window: int) -> None:
        self.consecutive = 0
        self.ejections = 0
        self.ejected_until: float | None = None
        self.probing = False
        self.restored_at: float | None = None
        self.samples: deque[tuple[float, float]] = deque(maxlen=window)
        """``(recorded at, seconds per output token)``, oldest first."""
        self.total = 0


class HealthRegistry:
    """Health of every target seen, by name. ``clock`` gives monotonic seconds."""

    def __init__(self, policy: HealthPolicy | None = None, *, clock: Clock = time.monotonic) -> None:
        self.policy = policy or HealthPolicy()
        self.clock = clock
        self._states: dict[str, _State] = {}

    def _state(self, target: str) -> _State:
        state = self._states.get(target)
        if state is None:
            state = self._states[target] = _State(self.policy.window)
        return state

    def available(self, target: str) -> bool:
        """Not ejected, or half-open with no probe under way."""
        state = self._states.get(target)
        if state is None or state.ejected_until is None:
            return True
        return self.clock() >= state.ejected_until and not state.probing

    def ejected(self, target: str) -> bool:
        """Ejected and not yet restored (cooling down or half-open)."""
        state = self._states.get(target)
        return state is not None and state.ejected_until is not None

    def latency(self, target: str) -> LatencyStats:
        state = self._states.get(target)
        if state is None:
            return LatencyStats(0, None, 0)
        oldest = self.clock() - self.policy.sample_ttl
        recent = [per_token for at, per_token in state.samples if at >= oldest]
        return LatencyStats(len(recent), sum(recent) / len(recent) if recent else None, state.total)

    def begin(self, target: str) -> Lease:
        """An attempt at ``target`` starts; settle the lease with its outcome."""
        state = self._state(target)
        now = self.clock()
        trial = probe = False
        if state.ejected_until is not None:
            trial = True
            if now >= state.ejected_until and not state.probing:
                state.probing = probe = True
        return Lease(self, target, now, trial=trial, probe=probe)

    def _succeeded(self, lease: Lease, per_token: float | None) -> None:
        state = self._state(lease.target)
        now = self.clock()
        if per_token is not None:
            state.samples.append((now, per_token))
            state.total += 1
        if state.ejected_until is None:
            state.consecutive = 0
        elif lease.trial:
            state.ejected_until, state.probing, state.consecutive, state.restored_at = None, False, 0, now
            logger.info("target %s answered again: restored", lease.target)

    def _failed(self, lease: Lease) -> None:
        state = self._state(lease.target)
        now = self.clock()
        if state.ejected_until is None:
            state.consecutive += 1
            if state.consecutive >= self.policy.failure_threshold:
                self._eject(lease.target, state, now)
        elif lease.probe or (lease.trial and now >= state.ejected_until):
            self._eject(lease.target, state, now)

    def _abandoned(self, lease: Lease) -> None:
        if lease.probe:
            self._state(lease.target).probing = False

    def _eject(self, target: str, state: _State, now: float) -> None:
        policy = self.policy
        if state.restored_at is not None and now - state.restored_at >= policy.max_cooldown:
            state.ejections = 0
        state.ejections += 1
        cooldown = min(policy.cooldown * 2 ** (state.ejections - 1), policy.max_cooldown)
        state.ejected_until, state.probing, state.consecutive = now + cooldown, False, 0
        logger.warning("target %s ejected for %g s after failing (ejection %d)", target, cooldown, state.ejections)


class Lease:
    """One attempt's claim on a target's health; the first of its outcomes counts.

    ``trial``: the attempt started while the target was ejected, so its success restores it.
    ``probe``: it holds the half-open target's single probe slot."""

    __slots__ = ("_done", "_registry", "probe", "started", "target", "trial")

    def __init__(self, registry: HealthRegistry, target: str, started: float, *, trial: bool, probe: bool) -> None:
        self._registry = registry
        self.target = target
        self.started = started
        self.trial = trial
        self.probe = probe
        self._done = False

    def _settle(self) -> bool:
        done, self._done = self._done, True
        return not done

    def succeeded(self, output_tokens: int | None) -> None:
        """The attempt answered; with a token count, its time per output token is a latency sample."""
        if self._settle():
            per_token = None
            if output_tokens:
                per_token = (self._registry.clock() - self.started) / output_tokens
            self._registry._succeeded(self, per_token)

    def failed(self) -> None:
        if self._settle():
            self._registry._failed(self)

    def abandoned(self) -> None:
        """Neither outcome: cancelled, or refused before reaching the upstream."""
        if self._settle():
            self._registry._abandoned(self)


class HealthObserver:
    """Records every attempt of the ``send`` it wraps (the provider attempt) into ``health``,
    keyed by the model the attempt is for. Streams count when they end."""

    def __init__(self, send: Send, health: HealthRegistry) -> None:
        self._send = send
        self._health = health

    async def __call__(self, call: ChatCall) -> Completion | ChunkStream:
        lease = self._health.begin(call.model)
        try:
            result = await self._send(call)
        except BaseException as exc:
            _settle(lease, exc)
            raise
        if isinstance(result, Completion):
            usage = SPECS[call.kind].usage(result.data)
            lease.succeeded(_output_tokens({"usage": usage}) or _estimated_output_tokens(result.data))
            return result
        stream = result

        def finished(error: BaseException | None, completed: bool) -> None:
            if completed:
                lease.succeeded(_stream_output_tokens(stream))
            elif error is not None:
                _settle(lease, error)
            else:
                lease.abandoned()

        return FinishingStream(stream, finished)


def _settle(lease: Lease, error: BaseException) -> None:
    if is_target_failure(error):
        lease.failed()
    elif isinstance(error, UpstreamStatusError):
        lease.succeeded(None)  # the upstream answered; the request was at fault
    else:
        lease.abandoned()


def _output_tokens(data: Mapping[str, Any]) -> int | None:
    usage = data.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, Mapping) else None
    return tokens if isinstance(tokens, int) and tokens > 0 else None


def _estimated_output_tokens(data: Mapping[str, Any]) -> int:
    """For an answer without usage (some OpenAI-compatible servers send none): about 4 characters
    a token of its text and tool calls, at least 1. Without a sample, latency-based routing would
    keep such a target "learning", and so send it traffic first, forever."""
    chars = 0
    choices = data.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, Mapping) else None
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        chars += len(content) if isinstance(content, str) else 0
        for tool_call in message.get("tool_calls") or ():
            function = tool_call.get("function") if isinstance(tool_call, Mapping) else None
            if isinstance(function, Mapping):
                chars += len(str(function.get("name") or "")) + len(str(function.get("arguments") or ""))
    return max(1, -(-chars // 4))


def _stream_output_tokens(stream: ChunkStream) -> int | None:
    """From the stream's usage chunk (always asked for upstream), else its count of chunks."""
    assembler = getattr(stream, "assembler", None)
    if assembler is None:
        return None
    usage = getattr(assembler, "usage", None)
    tokens = _output_tokens({"usage": usage})
    return tokens if tokens is not None else getattr(assembler, "chunk_count", None) or None
