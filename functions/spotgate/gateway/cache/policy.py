"""Which requests the response cache may answer, and which answers it may keep.

Serving a stored answer is only honest when a fresh one would be the same:
by default a model's answers are cached only for deterministic requests
(greedy decoding, or a fixed `seed`). Embeddings are always deterministic.
Per-model rules let an operator turn caching off for a model, shorten its
TTL, or accept sampled answers (`deterministic_only=False`) where "an answer"
is good enough.

The client keeps the last word through `Cache-Control`, with the HTTP
meanings: `no-cache` skips the lookup but lets the fresh answer be stored;
`no-store` does neither. `Pragma: no-cache` is honoured as `no-cache`.

The decision is pure (no clock, no store): the route asks once per request
and hands the decision to `ResponseCache`, which does the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from spotgate.gateway.cache.key import request_key

CacheStatus = Literal["MISS-eligible", "BYPASS"]

EMBEDDINGS_PATH = "/v1/embeddings"


@dataclass(frozen=True, slots=True)
class CacheRule:
    """How one model's answers are cached.

    `shared` lets every tenant hit every other tenant's entries. Off by default:
    a fast hit tells a caller that someone else asked exactly this question.
    """

    enabled: bool = True
    ttl_s: float = 3600.0
    deterministic_only: bool = True
    max_entry_bytes: int = 1_000_000
    shared: bool = False


@dataclass(frozen=True, slots=True)
class CacheDecision:
    """What the cache may do for one request.

    `read`: look the key up; `write`: store the fresh answer under the key.
    `status` is what the route reports (`X-Cache`) when nothing was found:
    `MISS-eligible` when the lookup ran, `BYPASS` when it did not.
    """

    key: str | None
    status: CacheStatus
    reason: str
    read: bool = False
    write: bool = False
    ttl_s: float = 0.0
    max_entry_bytes: int = 0

    @staticmethod
    def bypass(reason: str) -> CacheDecision:
        return CacheDecision(key=None, status="BYPASS", reason=reason)


def _header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive header lookup that works on plain dicts as on Starlette's Headers."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():
        if key.lower() == name:
            return item
    return ""


def _client_directives(headers: Mapping[str, str]) -> set[str]:
    tokens = _header(headers, "cache-control").split(",") + _header(headers, "pragma").split(",")
    return {token.split("=", 1)[0].strip().lower() for token in tokens if token.strip()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_deterministic(endpoint: str, body: Mapping[str, Any]) -> bool:
    """Greedy single-choice decoding, or a fixed seed; embeddings always.

    A missing temperature means the model's default sampling, so it is not
    deterministic. `n > 1` at temperature 0 is left out as the rule says:
    without a seed, vLLM does not promise the choices are reproducible.
    """
    if endpoint == EMBEDDINGS_PATH:
        return True
    if body.get("seed") is not None:
        return True
    temperature = body.get("temperature")
    n = body.get("n")
    single = n is None or n == 1
    return _is_number(temperature) and temperature == 0 and single


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Per-model rules, with `default` for models that have none. A rule named
    `group:<name>` applies to the models of that catalogue group (a model's own rule wins)."""

    rules: dict[str, CacheRule] = field(default_factory=dict)
    default: CacheRule = field(default_factory=CacheRule)

    def rule_for(self, model: str, groups: Sequence[str] = ()) -> CacheRule:
        rule = self.rules.get(model)
        for group in groups:
            if rule is not None:
                break
            rule = self.rules.get(f"group:{group}")
        return rule or self.default

    def decide(
        self,
        endpoint: str,
        body: Mapping[str, Any],
        request_headers: Mapping[str, str],
        *,
        scope: str = "",
        groups: Sequence[str] = (),
    ) -> CacheDecision:
        """What the cache may do for this request; never raises. `scope` partitions
        entries by tenant, unless the model's rule (or its group's) shares them."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return CacheDecision.bypass("no model")
        rule = self.rule_for(model, groups)
        if rule.shared:
            scope = ""
        if not rule.enabled:
            return CacheDecision.bypass(f"caching is off for model '{model}'")
        if rule.deterministic_only and not is_deterministic(endpoint, body):
            return CacheDecision.bypass("not deterministic (needs temperature 0 or a seed)")
        directives = _client_directives(request_headers)
        if "no-store" in directives:
            return CacheDecision.bypass("client sent Cache-Control: no-store")
        try:
            key = request_key(endpoint, body, scope=scope)
        except (TypeError, ValueError) as exc:  # a value orjson cannot encode
            return CacheDecision.bypass(f"request cannot be keyed: {exc}")
        if "no-cache" in directives:
            return CacheDecision(
                key=key,
                status="BYPASS",
                reason="client sent Cache-Control: no-cache",
                read=False,
                write=True,
                ttl_s=rule.ttl_s,
                max_entry_bytes=rule.max_entry_bytes,
            )
        return CacheDecision(
            key=key,
            status="MISS-eligible",
            reason="cacheable",
            read=True,
            write=True,
            ttl_s=rule.ttl_s,
            max_entry_bytes=rule.max_entry_bytes,
        )
