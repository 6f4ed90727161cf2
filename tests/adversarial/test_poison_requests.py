"""Requests that would take the pool down: bounded at the door, not resent, quarantined."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import openai
import pytest

from tests.adversarial.conftest import API_KEY, MODEL, POISON, FakeWorker

pytestmark = pytest.mark.adversarial

CHAT = "/v1/chat/completions"
QUESTION = [{"role": "user", "content": "hi"}]
HUGE = 1_099_511_627_776


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        (CHAT, {"n": HUGE}, "n"),
        (CHAT, {"n": 17}, "n"),
        ("/v1/completions", {"best_of": HUGE}, "best_of"),
        (CHAT, {"max_tokens": HUGE}, "max_tokens"),
        (CHAT, {"max_completion_tokens": 10**9}, "max_completion_tokens"),
        (CHAT, {"logprobs": True, "top_logprobs": 10**6}, "top_logprobs"),
        ("/v1/completions", {"logprobs": 10**6}, "logprobs"),
        (CHAT, {"messages": QUESTION * 1025}, "messages"),
        (CHAT, {"stop": ["x"] * 17}, "stop"),
        (CHAT, {"stop": [1, 2]}, "stop"),
        ("/v1/completions", {"prompt": ["p"] * 129}, "prompt"),
        ("/v1/embeddings", {"input": ["e"] * 2049}, "input"),
        (CHAT, {"tools": [{"type": "function", "function": {"name": "f"}}] * 129}, "tools"),
    ],
)
def test_oversized_counts_are_refused_before_any_worker_sees_them(
    gateway_of: Any, path: str, extra: dict[str, Any], param: str
) -> None:
    worker = FakeWorker("w1")
    with gateway_of([worker]) as gateway:
        body: dict[str, Any] = {"model": MODEL}
        body |= {"messages": QUESTION} if path == CHAT else {}
        body |= {"prompt": "p"} if path == "/v1/completions" else {}
        body |= {"input": "e"} if path == "/v1/embeddings" else {}
        reply = gateway.post(path, body | extra)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert worker.received == [], "nothing over a bound reaches a worker"


def test_per_model_limits_come_from_the_catalogue(gateway_of: Any) -> None:
    worker = FakeWorker("w1")
    catalogue = [
        {"name": MODEL, "context_length": 2048, "limits": {"max_n": 2}},
    ]
    with gateway_of([worker], model_catalogue=catalogue) as gateway:
        assert gateway.chat("hi", n=3).json()["error"]["param"] == "n"
        assert gateway.chat("hi", max_tokens=2049).json()["error"]["param"] == "max_tokens"
        assert gateway.chat("hi", n=2, max_tokens=2048).status_code == 200
    assert len(worker.received) == 1


def test_a_request_that_kills_two_workers_is_quarantined(
    gateway_of: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="spotgate.quarantine")
    workers = [FakeWorker(f"w{i}") for i in range(1, 4)]
    with gateway_of(workers) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY)  # 2 retries
        poison = [{"role": "user", "content": POISON.decode()}]
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=MODEL, messages=poison)
        assert caught.value.code == "request_quarantined"
        deaths = sum(w.poisoned for w in workers)
        assert deaths == 2, "the first death is not resent; the client's retry kills one more"
        assert [w.poisoned for w in workers].count(0) == 1, "one worker never saw it"
        again = gateway.chat(POISON.decode())
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "request_quarantined"
        assert sum(w.poisoned for w in workers) == 2, "a quarantined request reaches nobody"
        assert gateway.chat("an ordinary question").status_code == 200
    assert caplog.text.count("quarantined for") == 1, "logged once"


def test_a_worker_death_is_a_502_without_a_second_victim(gateway_of: Any) -> None:
    workers = [FakeWorker("w1"), FakeWorker("w2")]
    with gateway_of(workers) as gateway:
        reply = gateway.chat(POISON.decode() + " once")
        assert reply.status_code == 502
        error = reply.json()["error"]
        assert error["code"] == "worker_failed"
        for name in ("w1", "w2", "127.0.0.1", "reset", "errno"):
            assert name not in error["message"], "no worker names, hosts or errno text"
    assert sum(w.poisoned for w in workers) == 1


def test_a_client_that_gives_up_stops_the_work_and_nothing_is_retried(gateway_of: Any) -> None:
    workers = [FakeWorker("slow1", delay_s=5.0), FakeWorker("slow2", delay_s=5.0)]
    with gateway_of(workers) as gateway:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{gateway.url}{CHAT}",
                json={"model": MODEL, "messages": QUESTION},
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=httpx.Timeout(5.0, read=0.5),
            )
        deadline = time.monotonic() + 4.0
        while sum(w.hung_up_on for w in workers) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(w.hung_up_on for w in workers) == 1, "the worker's connection was closed"
        time.sleep(1.0)
        assert sum(len(w.received) for w in workers) == 1, "and no other worker got it"
        assert gateway.runtime.in_flight.total() == 0
