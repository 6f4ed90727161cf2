"""What the cache may do per request: deterministic rule, per-model rules, Cache-Control."""

from __future__ import annotations

from typing import Any

import pytest

from spotgate.gateway.cache.key import request_key
from spotgate.gateway.cache.policy import CacheDecision, CachePolicy, CacheRule, is_deterministic

CHAT = "/v1/chat/completions"
GREEDY: dict[str, Any] = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0,
}
POLICY = CachePolicy({}, CacheRule())


def decide(
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    policy: CachePolicy = POLICY,
    endpoint: str = CHAT,
) -> CacheDecision:
    return policy.decide(endpoint, body, headers or {})


@pytest.mark.parametrize(
    ("change", "deterministic"),
    [
        ({}, True),
        ({"temperature": 0.0}, True),
        ({"temperature": 0.7}, False),
        ({"temperature": None}, False),
        ({"temperature": 0.7, "seed": 7}, True),
        ({"n": 2}, False),
        ({"n": 2, "seed": 7}, True),
        ({"n": 1}, True),
        ({"temperature": False}, False),
    ],
)
def test_deterministic_rule(change: dict[str, Any], deterministic: bool) -> None:
    body = {**GREEDY, **change}
    assert is_deterministic(CHAT, body) is deterministic
    assert (decide(body).status == "MISS-eligible") is deterministic


def test_missing_temperature_is_sampling() -> None:
    body = {k: v for k, v in GREEDY.items() if k != "temperature"}
    decision = decide(body)
    assert decision.status == "BYPASS" and decision.key is None
    assert "deterministic" in decision.reason


def test_embeddings_are_always_deterministic() -> None:
    decision = decide({"model": "e5", "input": "x"}, endpoint="/v1/embeddings")
    assert decision.status == "MISS-eligible" and decision.read and decision.write


def test_eligible_decision_carries_key_and_rule() -> None:
    policy = CachePolicy({}, CacheRule(ttl_s=120, max_entry_bytes=5000))
    decision = decide(GREEDY, policy=policy)
    assert decision == CacheDecision(
        key=request_key(CHAT, GREEDY),
        status="MISS-eligible",
        reason="cacheable",
        read=True,
        write=True,
        ttl_s=120,
        max_entry_bytes=5000,
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "no-cache"},
        {"cache-control": "No-Cache"},
        {"Cache-Control": "max-age=0, no-cache"},
        {"Pragma": "no-cache"},
    ],
)
def test_no_cache_skips_the_lookup_but_stores_the_answer(headers: dict[str, str]) -> None:
    decision = decide(GREEDY, headers)
    assert decision.status == "BYPASS"
    assert not decision.read and decision.write
    assert decision.key == request_key(CHAT, GREEDY)


@pytest.mark.parametrize(
    "headers", [{"Cache-Control": "no-store"}, {"CACHE-CONTROL": "no-cache, no-store"}]
)
def test_no_store_neither_reads_nor_writes(headers: dict[str, str]) -> None:
    decision = decide(GREEDY, headers)
    assert decision.status == "BYPASS"
    assert not decision.read and not decision.write and decision.key is None
    assert "no-store" in decision.reason


def test_unrelated_cache_control_is_ignored() -> None:
    assert decide(GREEDY, {"Cache-Control": "max-age=60"}).status == "MISS-eligible"


def test_per_model_rule_overrides_default() -> None:
    policy = CachePolicy(
        {"creative": CacheRule(deterministic_only=False, ttl_s=30)}, CacheRule(ttl_s=3600)
    )
    sampled = {**GREEDY, "model": "creative", "temperature": 1.0}
    decision = decide(sampled, policy=policy)
    assert decision.status == "MISS-eligible" and decision.ttl_s == 30
    assert decide({**GREEDY, "temperature": 1.0}, policy=policy).status == "BYPASS"
    assert decide(GREEDY, policy=policy).ttl_s == 3600


def test_disabled_model_bypasses_even_when_deterministic() -> None:
    policy = CachePolicy({"private": CacheRule(enabled=False)}, CacheRule())
    decision = decide({**GREEDY, "model": "private"}, policy=policy)
    assert decision.status == "BYPASS" and not decision.read and not decision.write
    assert "private" in decision.reason
    assert decide(GREEDY, policy=policy).status == "MISS-eligible"


def test_disabled_default_with_opt_in_model() -> None:
    policy = CachePolicy({"smollm2": CacheRule()}, CacheRule(enabled=False))
    assert decide(GREEDY, policy=policy).status == "MISS-eligible"
    assert decide({**GREEDY, "model": "other"}, policy=policy).status == "BYPASS"


def test_unkeyable_body_bypasses_instead_of_raising() -> None:
    decision = decide({**GREEDY, "logit_bias": {1: object()}})
    assert decision.status == "BYPASS" and decision.key is None


def test_scope_partitions_keys() -> None:
    a = POLICY.decide(CHAT, GREEDY, {}, scope="tenant-a")
    b = POLICY.decide(CHAT, GREEDY, {}, scope="tenant-b")
    assert a.key and b.key and a.key != b.key
