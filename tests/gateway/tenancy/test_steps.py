"""Keys, model access, limits and metering as steps of the real request pipeline.

The gateway is built as every host builds it (`build_gateway`) over an
in-process sim worker; keys are made through the tenancy's directory and
presented as a client would. Prices are the catalogue's, so every expected
revenue is worked out here from the answer's own usage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from spotgate.clock import ManualClock
from spotgate.errors import NoCapacity, PermissionDenied, RateLimited
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.serving import CHAT_PATH, InferenceRequest, Served
from spotgate.gateway.tenancy.limit_step import RateLimitStep
from spotgate.gateway.tenancy.usage import UsageRecord
from spotgate.hosts.gateway import GatewayParts, build_gateway
from spotgate.settings import Settings
from tests.gateway.test_stream_resume import SimWorkers

MODEL = "sim-model"
ALIAS = "sim-alias"
PRICE_IN, PRICE_OUT = 2.0, 8.0  # USD per million tokens
ENTRY = {
    "name": MODEL,
    "aliases": [ALIAS],
    "context_length": 4096,
    "price_in_per_1m": PRICE_IN,
    "price_out_per_1m": PRICE_OUT,
    "groups": ["g1"],
}
QUESTION = [{"role": "user", "content": "hi"}]


@contextlib.asynccontextmanager
async def gateway(
    workers: SimWorkers | None = None, **settings: Any
) -> AsyncIterator[tuple[GatewayParts, SimWorkers]]:
    workers = workers or SimWorkers([None])
    options: dict[str, Any] = {
        "capacity_wait_s": 0,
        "models": [MODEL],
        "model_catalogue": [ENTRY],
        **settings,
    }
    parts = build_gateway(
        Settings(**options), InMemoryWorkerStore(), clock=ManualClock(), upstream=workers
    )
    parts.registry.register("w1", pool="default", model=MODEL, engine="sim", url="http://w1")
    await parts.tenancy.start()
    try:
        yield parts, workers
    finally:
        await parts.tenancy.close()


def request(secret: str, request_id: str, model: str = MODEL, **extra: Any) -> InferenceRequest:
    body = {"model": model, "messages": QUESTION, "max_tokens": 5, "ignore_eos": True, **extra}
    return InferenceRequest(CHAT_PATH, orjson.dumps(body), body, model, request_id, api_key=secret)


async def records(parts: GatewayParts) -> dict[str, UsageRecord]:
    """Every usage record by request id, once settlements and writes are done."""
    for step in parts.serving.steps:
        if isinstance(step, RateLimitStep):
            await step.drain()
    await parts.tenancy.recorder.flush()
    return {r.request_id: r for r in await parts.tenancy.usage.query(0)}


async def cached(parts: GatewayParts) -> None:
    """Cache entries are written in the background; wait for them."""
    assert parts.response_cache is not None
    await asyncio.gather(*parts.response_cache._pending)


def usage_of(served: Served) -> dict[str, int]:
    assert served.body is not None
    usage = orjson.loads(served.body)["usage"]
    return {"prompt": usage["prompt_tokens"], "completion": usage["completion_tokens"]}


def price(prompt: int, completion: int) -> float:
    return (prompt * PRICE_IN + completion * PRICE_OUT) / 1_000_000


async def events_of(served: Served) -> list[Any]:
    assert served.chunks is not None
    raw = b"".join([chunk async for chunk in served.chunks])
    payloads = [block[6:] for block in raw.split(b"\n\n") if block.startswith(b"data: ")]
    return [p.decode() if p == b"[DONE]" else orjson.loads(p) for p in payloads]


# who may call which model


async def test_a_key_limited_to_another_model_gets_403_and_no_worker_is_asked() -> None:
    async with gateway() as (parts, workers):
        _, secret = await parts.tenancy.directory.create("alice", models=["other"])
        with pytest.raises(PermissionDenied) as refused:
            await parts.serving.serve(request(secret, "r1"))
        assert (refused.value.status_code, refused.value.code) == (403, "model_not_allowed")
        assert refused.value.body()["error"]["type"] == "permission_error"
        assert MODEL in refused.value.message
        assert workers.requests == []
        record = (await records(parts))["r1"]
        assert (record.status, record.error_code) == (403, "model_not_allowed")
        assert record.tokens == 0 and record.revenue_usd == 0.0


@pytest.mark.parametrize(
    ("allowed", "asked", "status"),
    [
        ({"groups": ["g1"]}, MODEL, 200),
        ({"groups": ["g2"]}, MODEL, 403),
        ({"models": [ALIAS]}, MODEL, 200),  # an alias covers the model it leads to
        ({"models": [MODEL]}, ALIAS, 200),  # and the model covers its aliases
        ({"models": ["other"], "groups": ["g1"]}, ALIAS, 200),
        ({}, MODEL, 200),  # neither models nor groups: every model
    ],
)
async def test_models_and_groups_decide_what_a_key_may_call(
    allowed: dict[str, list[str]], asked: str, status: int
) -> None:
    async with gateway() as (parts, _):
        _, secret = await parts.tenancy.directory.create("alice", **allowed)
        if status == 403:
            with pytest.raises(PermissionDenied):
                await parts.serving.serve(request(secret, "r1", asked))
        else:
            served = await parts.serving.serve(request(secret, "r1", asked))
            assert served.status == 200 and served.model == MODEL


# what is recorded


async def test_a_usage_record_names_the_key_model_worker_and_bills_the_real_usage() -> None:
    async with gateway() as (parts, _):
        key, secret = await parts.tenancy.directory.create("alice")
        served = await parts.serving.serve(request(secret, "r1"))
        usage = usage_of(served)
        assert usage["completion"] == 5, "max_tokens 5, ignore_eos"
        record = (await records(parts))["r1"]
        assert (record.key_id, record.model, record.worker_id) == (key.id, MODEL, "w1")
        assert (record.status, record.error_code, record.estimated) == (200, None, False)
        assert (record.prompt_tokens, record.completion_tokens) == (
            usage["prompt"],
            usage["completion"],
        )
        assert record.revenue_usd == pytest.approx(price(usage["prompt"], 5))


async def test_a_keys_own_price_wins_over_the_catalogues() -> None:
    async with gateway() as (parts, _):
        prices = {MODEL: {"input_per_1m": 100.0, "output_per_1m": 1000.0}}
        _, secret = await parts.tenancy.directory.create("alice", prices=prices)
        usage = usage_of(await parts.serving.serve(request(secret, "r1")))
        record = (await records(parts))["r1"]
        expected = (usage["prompt"] * 100.0 + usage["completion"] * 1000.0) / 1_000_000
        assert record.revenue_usd == pytest.approx(expected)


async def test_a_cache_hit_is_billed_at_the_cache_hit_share() -> None:
    async with gateway(cache_backend="memory", cache_hit_price_share=0.5) as (parts, workers):
        _, secret = await parts.tenancy.directory.create("alice")
        first = await parts.serving.serve(request(secret, "r1", temperature=0))
        await cached(parts)
        second = await parts.serving.serve(request(secret, "r2", temperature=0))
        assert (first.cache, second.cache) == ("MISS", "HIT")
        assert len(workers.requests) == 1
        usage = usage_of(first)
        got = await records(parts)
        assert got["r1"].revenue_usd == pytest.approx(price(usage["prompt"], 5))
        assert got["r2"].cache == "HIT" and got["r2"].worker_id == "cache"
        assert got["r2"].tokens == usage["prompt"] + 5
        assert got["r2"].revenue_usd == pytest.approx(0.5 * price(usage["prompt"], 5))


async def test_a_rate_limited_request_is_recorded_with_its_error_and_no_tokens() -> None:
    async with gateway() as (parts, workers):
        _, secret = await parts.tenancy.directory.create("alice", rpm=1)
        served = await parts.serving.serve(request(secret, "r1"))
        assert served.headers["x-ratelimit-limit-requests"] == "1"
        assert served.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(RateLimited) as refused:
            await parts.serving.serve(request(secret, "r2"))
        assert refused.value.code == "rate_limit_exceeded"
        assert int(refused.value.headers["Retry-After"]) >= 1
        assert len(workers.requests) == 1
        record = (await records(parts))["r2"]
        assert (record.status, record.error_code) == (429, "rate_limit_exceeded")
        assert (record.prompt_tokens, record.completion_tokens) == (0, 0)
        assert record.worker_id is None and record.revenue_usd == 0.0


async def test_a_key_whose_spend_reached_its_budget_is_refused_with_insufficient_quota() -> None:
    # one answer costs at least 5 x $8/1M + 1 x $2/1M = $0.000042, over a $0.00004 budget
    async with gateway() as (parts, workers):
        _, secret = await parts.tenancy.directory.create("alice", budget_usd=0.00004)
        await parts.serving.serve(request(secret, "r1"))
        await records(parts)  # the spend is settled when the request ends
        with pytest.raises(RateLimited) as refused:
            await parts.serving.serve(request(secret, "r2"))
        assert (refused.value.status_code, refused.value.code) == (429, "insufficient_quota")
        assert len(workers.requests) == 1


async def test_a_refused_model_costs_no_quota() -> None:
    async with gateway() as (parts, _):
        key, secret = await parts.tenancy.directory.create("alice", rpm=1, models=["other"])
        with pytest.raises(PermissionDenied):
            await parts.serving.serve(request(secret, "r1"))
        await parts.tenancy.directory.update(key.id, {"models": [MODEL]})
        served = await parts.serving.serve(request(secret, "r2"))
        assert served.status == 200, "the refused request used none of the 1 per minute"


async def test_a_request_that_failed_after_admission_gives_its_parallel_slot_back() -> None:
    async with gateway(models=[MODEL, "lonely"]) as (parts, _):
        _, secret = await parts.tenancy.directory.create("alice", max_parallel=1)
        with pytest.raises(NoCapacity):
            await parts.serving.serve(request(secret, "r1", "lonely"))
        await records(parts)
        served = await parts.serving.serve(request(secret, "r2"))
        assert served.status == 200


async def test_an_open_stream_holds_its_parallel_slot_until_it_ends() -> None:
    async with gateway() as (parts, _):
        _, secret = await parts.tenancy.directory.create("alice", max_parallel=1)
        stream = await parts.serving.serve(request(secret, "s1", stream=True))
        with pytest.raises(RateLimited, match="at once"):
            await parts.serving.serve(request(secret, "r2"))
        await events_of(stream)
        await records(parts)
        served = await parts.serving.serve(request(secret, "r3"))
        assert served.status == 200


# streams


async def test_a_stream_without_include_usage_gets_no_usage_chunk_but_is_billed_exactly() -> None:
    async with gateway() as (parts, _):
        _, secret = await parts.tenancy.directory.create("alice")
        reference = usage_of(await parts.serving.serve(request(secret, "plain")))
        events = await events_of(await parts.serving.serve(request(secret, "s1", stream=True)))
        assert events[-1] == "[DONE]"
        assert not any(isinstance(e, dict) and e.get("usage") for e in events)
        record = (await records(parts))["s1"]
        assert record.estimated is False
        assert (record.prompt_tokens, record.completion_tokens) == (reference["prompt"], 5)
        assert record.revenue_usd == pytest.approx(price(reference["prompt"], 5))


async def test_a_stream_with_include_usage_gets_its_usage_chunk() -> None:
    async with gateway() as (parts, _):
        _, secret = await parts.tenancy.directory.create("alice")
        options = {"include_usage": True}
        served = await parts.serving.serve(
            request(secret, "s1", stream=True, stream_options=options)
        )
        events = await events_of(served)
        usage = [e["usage"] for e in events if isinstance(e, dict) and e.get("usage")]
        assert len(usage) == 1 and usage[0]["completion_tokens"] == 5
        record = (await records(parts))["s1"]
        assert record.completion_tokens == 5
        assert record.prompt_tokens == usage[0]["prompt_tokens"]


async def test_a_stream_its_client_closed_early_is_recorded_once_as_499_estimated() -> None:
    async with gateway(SimWorkers([None], sizes=[64])) as (parts, _):
        _, secret = await parts.tenancy.directory.create("alice")
        served = await parts.serving.serve(request(secret, "s1", stream=True, max_tokens=50))
        assert served.chunks is not None
        received = 0
        async for chunk in served.chunks:
            received += chunk.count(b"data: {")
            if received >= 4:
                break
        await served.chunks.aclose()
        await served.chunks.aclose()
        got = await records(parts)
        assert parts.tenancy.recorder.written == 1, "one record, however often it was closed"
        record = got["s1"]
        assert (record.status, record.error_code, record.estimated) == (499, "client_gone", True)
        # one token per content event relayed (the first event only says the role);
        # the prompt at characters / 4: ("hi" + 16 per message) / 4 -> 5
        assert record.completion_tokens == received - 1
        assert record.prompt_tokens == 5
        assert record.revenue_usd == pytest.approx(price(5, received - 1))


# cache scope


async def test_two_keys_do_not_share_cache_entries_and_one_cache_group_does() -> None:
    async with gateway(cache_backend="memory") as (parts, _):
        directory = parts.tenancy.directory
        _, alice = await directory.create("alice")
        _, bob = await directory.create("bob")
        _, carol = await directory.create("carol", cache_group="team")
        _, dave = await directory.create("dave", cache_group="team")

        async def ask(secret: str, request_id: str) -> str:
            served = await parts.serving.serve(request(secret, request_id, temperature=0))
            await cached(parts)
            return served.cache

        assert await ask(alice, "a1") == "MISS"
        assert await ask(bob, "b1") == "MISS", "another key's answer is not served"
        assert await ask(alice, "a2") == "HIT", "the key's own entry is"
        assert await ask(carol, "c1") == "MISS"
        assert await ask(dave, "d1") == "HIT", "one cache group, one set of entries"


async def test_a_single_static_key_shares_the_cache_and_two_static_keys_do_not() -> None:
    async with gateway(cache_backend="memory", api_keys=["static-one"]) as (parts, _):
        first = await parts.serving.serve(request("static-one", "s1", temperature=0))
        await cached(parts)
        second = await parts.serving.serve(request("static-one", "s2", temperature=0))
        assert (first.cache, second.cache) == ("MISS", "HIT")
        record = (await records(parts))["s1"]
        assert record.key_id is not None and record.key_id.startswith("static:")
    async with gateway(cache_backend="memory", api_keys=["static-one", "static-two"]) as (
        parts,
        _,
    ):
        first = await parts.serving.serve(request("static-one", "s1", temperature=0))
        await cached(parts)
        other = await parts.serving.serve(request("static-two", "s2", temperature=0))
        assert (first.cache, other.cache) == ("MISS", "MISS")
