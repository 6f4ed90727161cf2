"""The response cache neither leaks one tenant's questions to another nor serves a bad worker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial.conftest import API_KEY, OTHER_KEY, FakeWorker, Gateway

pytestmark = pytest.mark.adversarial

QUESTION = "what did my colleague ask?"


def ask(gateway: Gateway, key: str = API_KEY) -> tuple[str, str]:
    reply = gateway.chat(QUESTION, key=key, temperature=0)
    assert reply.status_code == 200, reply.text
    return reply.headers["x-cache"], reply.json()["id"]


def test_one_tenants_question_is_no_hit_for_another(gateway_of: Any) -> None:
    worker = FakeWorker("w1")
    with gateway_of([worker], api_keys=[API_KEY, OTHER_KEY]) as gateway:
        first = ask(gateway, API_KEY)
        other = ask(gateway, OTHER_KEY)
        again = ask(gateway, API_KEY)
    assert first[0] == "MISS"
    assert other[0] == "MISS" and other[1] != first[1], "B learns nothing of A's question"
    assert again == ("HIT", first[1])
    assert len(worker.received) == 2


def test_a_model_may_opt_in_to_a_shared_cache(gateway_of: Any) -> None:
    worker = FakeWorker("w1")
    rules = {"m": {"shared": True}}
    with gateway_of([worker], api_keys=[API_KEY, OTHER_KEY], cache_rules=rules) as gateway:
        first = ask(gateway, API_KEY)
        other = ask(gateway, OTHER_KEY)
    assert other == ("HIT", first[1])
    assert len(worker.received) == 1


def test_with_one_key_the_cache_is_shared_as_before(gateway_of: Any) -> None:
    worker = FakeWorker("w1")
    with gateway_of([worker]) as gateway:
        assert ask(gateway)[0] == "MISS"
        assert ask(gateway)[0] == "HIT"


def test_answers_of_a_worker_whose_claim_failed_are_no_longer_served(gateway_of: Any) -> None:
    worker = FakeWorker("w1")
    with gateway_of([worker]) as gateway:
        _, cached_id = ask(gateway)
        assert ask(gateway) == ("HIT", cached_id)
        # someone with the fleet token tries to take w1 over: refused, and w1 distrusted
        takeover = gateway.post(
            "/fleet/workers",
            {
                "id": "w1",
                "pool": "default",
                "model": "m",
                "engine": "vllm",
                "url": f"http://127.0.0.1:{worker.port}",
            },
            key="fleet-adversarial",
        )
        assert takeover.status_code == 409
        state, fresh_id = ask(gateway)
    assert state == "MISS" and fresh_id != cached_id
    stats = gateway.runtime.response_cache.stats  # type: ignore[union-attr]
    assert stats.distrusted == 1


def test_a_worker_answering_garbage_is_dropped_and_never_cached(gateway_of: Any) -> None:
    bad, good = FakeWorker("bad", garbage=True), FakeWorker("good")
    with gateway_of([bad, good]) as gateway:
        replies = [gateway.chat(f"q{i}", temperature=0) for i in range(4)]
        assert all(r.status_code == 200 for r in replies)
        assert {r.headers["x-worker"] for r in replies} == {"good"}
        assert len(bad.received) == 1, "its breaker opened at the first garbage answer"
        assert not gateway.runtime.registry.trusted("bad")


def test_a_worker_answering_broken_json_is_a_502_and_distrusted(gateway_of: Any) -> None:
    broken = FakeWorker("broken", garbage=True)
    broken.garbage_body = b'{"id": "x", "choices": [unterminated}'
    with gateway_of([broken]) as gateway:
        reply = gateway.chat("q", temperature=0)
        assert reply.status_code == 502
        assert reply.json()["error"]["code"] == "upstream_error"
        assert "unterminated" not in reply.text
        assert not gateway.runtime.registry.trusted("broken")
