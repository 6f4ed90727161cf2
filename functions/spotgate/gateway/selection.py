"""Worker selection policies, registered by name so a new policy is one class and its test."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spotgate.fleet.worker import Worker
from spotgate.gateway.in_flight import InFlight
from spotgate.named_policy import NamedPolicy


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    """Tunables any policy may read; one type for all, so the runtime passes them blindly."""

    prefix_chars: int = 1024
    min_prefix_chars: int = 256
    affinity_slack: int = 4
    affinity_factor: float = 1.25


class SelectionPolicy(NamedPolicy, family="selection policy"):
    """Picks the worker for one request among the candidates routing allows.

    `SelectionPolicy.make(name, in_flight, options)` builds the policy registered as `name`;
    the family has no default of its own (the settings name one).
    """

    def __init__(self, in_flight: InFlight, options: PolicyOptions | None = None) -> None:
        self.in_flight = in_flight
        self.options = options or PolicyOptions()

    def choose(self, candidates: Sequence[Worker], request: dict[str, object]) -> Worker:
        raise NotImplementedError


class LeastOutstanding(SelectionPolicy, name="least-outstanding"):
    """Fewest requests in flight from this gateway; ties rotate so equal workers share load."""

    def __init__(self, in_flight: InFlight, options: PolicyOptions | None = None) -> None:
        super().__init__(in_flight, options)
        self._turn = itertools.count()

    def choose(self, candidates: Sequence[Worker], request: dict[str, object]) -> Worker:
        if len(candidates) == 1:
            return candidates[0]
        offset = next(self._turn) % len(candidates)
        best = candidates[offset]
        best_load = self.in_flight.of(best.id)
        for i in range(1, len(candidates)):
            worker = candidates[(offset + i) % len(candidates)]
            load = self.in_flight.of(worker.id)
            if load < best_load:
                best, best_load = worker, load
        return best


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # text parts only: a data URL's opening bytes look alike
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def affinity_prefix(request: dict[str, Any], limit: int) -> str:
    """The first `limit` characters of the conversation up to its first user turn.

    Stopping at the first user turn keeps the key the same across a chat's
    later turns (which share exactly that prefix with the first one), so a
    conversation stays on the worker that holds its KV cache.
    """
    messages = request.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        for message in messages:
            if not isinstance(message, dict):
                break
            piece = f"{message.get('role')}\x1f{_content_text(message.get('content'))}\x1e"
            parts.append(piece)
            size += len(piece)
            if size >= limit or message.get("role") == "user":
                break
        return "".join(parts)[:limit]
    prompt = request.get("prompt")
    return prompt[:limit] if isinstance(prompt, str) else ""


def rendezvous_rank(key: bytes, candidates: Sequence[Worker]) -> list[Worker]:
    """Highest-random-weight order: each worker's score depends only on (key, worker id),
    so removing a worker moves only the keys it ranked first. blake2b, not hash(), so
    every gateway replica agrees whatever its PYTHONHASHSEED."""
    return sorted(candidates, key=lambda w: _score(key, w), reverse=True)


def _score(key: bytes, worker: Worker) -> bytes:
    return hashlib.blake2b(key + worker.id.encode(), digest_size=8).digest()


class PrefixAffinity(SelectionPolicy, name="prefix-affinity"):
    """Requests sharing a long prefix go to the same worker, where vLLM's prefix cache
    already holds it, unless that worker is clearly busier than the idlest candidate.

    The bound (idlest + slack, or idlest x factor under heavy load) is what keeps a
    hot prefix (one shared system prompt) from piling onto one worker; past it the
    request goes to the least-outstanding worker, as AIBrix's prefix router does.
    Short prefixes gain little from a cache hit, so they are just load-balanced.
    """

    def __init__(self, in_flight: InFlight, options: PolicyOptions | None = None) -> None:
        super().__init__(in_flight, options)
        self._fallback = LeastOutstanding(in_flight)

    def choose(self, candidates: Sequence[Worker], request: dict[str, object]) -> Worker:
        if len(candidates) == 1:
            return candidates[0]
        prefix = affinity_prefix(request, self.options.prefix_chars)
        if len(prefix) < self.options.min_prefix_chars:
            return self._fallback.choose(candidates, request)
        key = hashlib.blake2b(prefix.encode(), digest_size=16).digest()
        home = max(candidates, key=lambda w: _score(key, w))
        idlest = min(self.in_flight.of(w.id) for w in candidates)
        bound = max(
            idlest + self.options.affinity_slack,
            math.floor(idlest * self.options.affinity_factor),
        )
        if self.in_flight.of(home.id) <= bound:
            return home
        return self._fallback.choose(candidates, request)
