"""The request pipeline as a later stage sees it: named moments, in order, with what they need.

Runs the real pipeline (router, forwarder, cache) over an in-process sim worker;
the steps here stand in for authorisation and metering (issue 11).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from spotgate.errors import AuthenticationFailed, NoCapacity
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.serving import (
    CHAT_PATH,
    InferenceRequest,
    Outcome,
    RequestContext,
    ServingStep,
)
from spotgate.hosts.gateway import build_gateway
from spotgate.settings import Settings
from tests.gateway.test_stream_resume import SimWorkers

MODEL = "sim-model"


class Recorder(ServingStep):
    name = "recorder"

    def __init__(self, refuse: bool = False) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.outcomes: list[Outcome] = []
        self.refuse = refuse

    async def received(self, context: RequestContext) -> None:
        self.seen.append(("received", context.model))
        if self.refuse:
            raise AuthenticationFailed("no")

    async def resolved(self, context: RequestContext) -> None:
        assert context.model is not None
        self.seen.append(("resolved", context.model.name))

    def finished(self, context: RequestContext, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        usage = (outcome.answer or {}).get("usage")
        served = outcome.served
        where = (served.cache, served.worker_id) if served is not None else (None, None)
        self.seen.append(("finished", (*where, usage)))


def pipeline(step: Recorder, workers: SimWorkers, *, ready: bool = True) -> Any:
    settings = Settings(api_keys=["k"], cache_backend="memory", capacity_wait_s=0, models=[MODEL])
    parts = build_gateway(settings, InMemoryWorkerStore(), upstream=workers, steps=[step])
    if ready:
        parts.registry.register("w1", pool="default", model=MODEL, engine="sim", url="http://w1")
    return parts


def request(**extra: Any) -> InferenceRequest:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}
    return InferenceRequest(CHAT_PATH, orjson.dumps(body), body, MODEL, "req-1", api_key="k")


async def test_steps_see_each_moment_in_order_and_the_answer_with_its_usage() -> None:
    step = Recorder()
    parts = pipeline(step, SimWorkers([None]))
    served = await parts.serving.serve(request(temperature=0, max_tokens=5))
    assert served.status == 200 and served.worker_id == "w1"
    assert [moment for moment, _ in step.seen] == ["received", "resolved", "finished"]
    assert step.seen[0][1] is None, "nothing is resolved before a step may refuse"
    assert step.seen[1][1] == MODEL
    cache, worker, usage = step.seen[2][1]
    assert (cache, worker) == ("MISS", "w1") and usage["completion_tokens"] > 0
    await asyncio.gather(*parts.response_cache._pending)  # stored in the background
    await parts.serving.serve(request(temperature=0, max_tokens=5))
    assert step.seen[-1][1][:2] == ("HIT", "cache"), "a cache hit is an outcome too"


async def test_a_step_that_refuses_stops_the_request_before_any_worker() -> None:
    workers = SimWorkers([None])
    serving = pipeline(Recorder(refuse=True), workers).serving
    with pytest.raises(AuthenticationFailed):
        await serving.serve(request())
    assert workers.requests == []


async def test_a_stream_finishes_when_it_ended_whole_with_its_usage() -> None:
    step = Recorder()
    serving = pipeline(step, SimWorkers([None])).serving
    served = await serving.serve(
        request(stream=True, max_tokens=5, stream_options={"include_usage": True})
    )
    assert served.chunks is not None
    assert [m for m, _ in step.seen] == ["received", "resolved"], "not finished yet"
    body = b"".join([chunk async for chunk in served.chunks])
    assert body.endswith(b"data: [DONE]\n\n")
    assert step.seen[-1][0] == "finished" and step.seen[-1][1][2]["completion_tokens"] > 0


async def test_a_stream_abandoned_by_its_client_finishes_once_as_cut_short() -> None:
    step = Recorder()
    serving = pipeline(step, SimWorkers([None])).serving
    served = await serving.serve(request(stream=True, max_tokens=50))
    assert served.chunks is not None
    await anext(served.chunks)
    await served.chunks.aclose()
    await served.chunks.aclose()
    assert [m for m, _ in step.seen] == ["received", "resolved", "finished"]
    assert step.outcomes[-1].whole is False and step.outcomes[-1].error_code == "client_gone"
    assert step.outcomes[-1].events >= 1, "what got out is known, to meter it"


async def test_a_failed_request_finishes_with_its_error() -> None:
    step = Recorder()
    serving = pipeline(step, SimWorkers([None]), ready=False).serving
    with pytest.raises(NoCapacity):
        await serving.serve(request())
    assert step.outcomes[-1].served is None
    assert (step.outcomes[-1].status, step.outcomes[-1].error_code) == (503, "no_capacity")


async def test_the_worker_is_asked_for_usage_the_client_did_not_ask_for() -> None:
    step = Recorder()
    workers = SimWorkers([None])
    serving = pipeline(step, workers).serving
    served = await serving.serve(request(stream=True, max_tokens=5))
    assert served.chunks is not None
    body = b"".join([chunk async for chunk in served.chunks])
    assert b'"usage"' not in body, "the client did not ask for it"
    assert workers.requests[-1][1]["stream_options"] == {"include_usage": True}
    assert step.outcomes[-1].answer["usage"]["completion_tokens"] == 5
