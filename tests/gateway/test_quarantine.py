"""The quarantine's memory: what counts as the same request, how long, how much."""

from __future__ import annotations

import pytest

from spotgate.clock import ManualClock
from spotgate.errors import InvalidRequest
from spotgate.gateway.quarantine import RequestQuarantine

PATH = "/v1/chat/completions"
BODY = {"model": "m", "messages": [{"role": "user", "content": "boom"}], "n": 4}


def test_two_deaths_quarantine_the_request_in_every_spelling() -> None:
    quarantine = RequestQuarantine(ManualClock())
    assert quarantine.worker_died(PATH, BODY, "w1") is False
    quarantine.check(PATH, BODY)  # one death: the next worker may still try
    assert quarantine.worker_died(PATH, BODY, "w2") is True
    respelled = {"n": 4.0, "messages": BODY["messages"], "model": "m", "stream": True}
    with pytest.raises(InvalidRequest) as refused:
        quarantine.check(PATH, respelled)
    assert refused.value.code == "request_quarantined"
    quarantine.check(PATH, {**BODY, "n": 3})  # another question is not refused
    quarantine.check("/v1/completions", BODY)


def test_the_same_worker_dying_twice_counts_once() -> None:
    quarantine = RequestQuarantine(ManualClock())
    quarantine.worker_died(PATH, BODY, "w1")
    assert quarantine.worker_died(PATH, BODY, "w1") is False


def test_a_quarantine_ends_after_its_ttl() -> None:
    clock = ManualClock()
    quarantine = RequestQuarantine(clock, ttl_s=60)
    quarantine.worker_died(PATH, BODY, "w1")
    quarantine.worker_died(PATH, BODY, "w2")
    with pytest.raises(InvalidRequest):
        quarantine.check(PATH, BODY)
    clock.advance(61)
    quarantine.check(PATH, BODY)


def test_memory_is_bounded() -> None:
    quarantine = RequestQuarantine(ManualClock(), max_entries=10)
    for i in range(100):
        quarantine.worker_died(PATH, {**BODY, "seed": i}, "w1")
    assert len(quarantine._records) == 10
