"""`model: "auto"` and token counting: cheapest fitting model, own tokenizer, safe fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest

from spotgate.adapters.pooled_upstream import PooledHttpUpstream
from spotgate.clock import ManualClock
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.engines.sim import tokenizer as sim_tokenizer
from spotgate.engines.sim.prompts import render_chat
from spotgate.errors import InvalidRequest, ModelNotFound
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.auto_model import AutoModelChooser, completion_budget
from spotgate.gateway.catalog import ModelCatalog
from spotgate.gateway.model_catalogue import ModelEntry
from spotgate.gateway.tenancy.access import entry_allowed
from spotgate.gateway.tenancy.keys import ApiKey
from spotgate.gateway.token_counting import (
    MEDIA_PART_TOKENS,
    TokenCount,
    TokenCounter,
    estimate_tokens,
)
from spotgate.gateway.upstream import UpstreamReply, UpstreamStream, WorkerUnreachable
from tests.conftest import serve_asgi

SMALL = ModelEntry(name="small", context_length=4096, price_in_per_1m=0.1, price_out_per_1m=0.1)
MEDIUM = ModelEntry(name="medium", context_length=16384, price_in_per_1m=0.3, price_out_per_1m=0.6)
LARGE = ModelEntry(
    name="large",
    served_name="org/large-128k",
    context_length=131072,
    price_in_per_1m=1.0,
    price_out_per_1m=3.0,
)
EMBED = ModelEntry(name="embed", context_length=10**6, auto=False)


class TokenizeFake:
    """Workers' /tokenize: each host answers `count`, or misbehaves as told."""

    def __init__(self, counts: dict[str, int | str]) -> None:
        self.counts = counts
        self.calls: list[tuple[str, dict[str, object]]] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamReply:
        host = url.split("/")[2]
        assert url.endswith("/tokenize") and headers["Content-Type"] == "application/json"
        self.calls.append((host, orjson.loads(body)))
        count = self.counts[host]
        if count == "down":
            raise WorkerUnreachable("refused")
        if count == "slow":
            await asyncio.sleep(10)
        if count == "error":
            return UpstreamReply(500, b"{}", "application/json")
        if count == "garbled":
            return UpstreamReply(200, b"<html>", "text/html")
        return UpstreamReply(200, orjson.dumps({"count": count}), "application/json")

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamStream:
        raise AssertionError("token counting never streams")

    async def close(self) -> None:
        pass


def chooser(
    counts: dict[str, int | str],
    entries: list[ModelEntry] | None = None,
    default_completion_tokens: int = 1024,
) -> tuple[AutoModelChooser, TokenizeFake]:
    registry = WorkerRegistry(InMemoryWorkerStore(), ManualClock())
    entries = entries if entries is not None else [LARGE, EMBED, MEDIUM, SMALL]
    for host in counts:
        entry = next(e for e in entries if host.startswith(e.name))
        registry.register(
            host, pool="p", model=entry.worker_model, engine="vllm", url=f"http://{host}"
        )
    fake = TokenizeFake(counts)
    counter = TokenCounter(registry, fake, timeout_s=0.2)
    catalog = ModelCatalog(registry, [], entries, auto_name="auto")
    chooser = AutoModelChooser(
        catalog, counter, default_completion_tokens=default_completion_tokens
    )
    return chooser, fake


BODY = {"model": "auto", "messages": [{"role": "user", "content": "Summarise this."}]}


async def test_the_cheapest_model_that_fits_wins_with_one_tokenize_call() -> None:
    auto, fake = chooser({"small-1": 1000, "medium-1": 1000, "large-1": 1000})
    assert (await auto.choose(BODY)).name == "small"
    assert fake.calls == [("small-1", {"model": "small", "messages": BODY["messages"]})]


async def test_auto_chooses_only_among_the_models_a_key_covers() -> None:
    auto, fake = chooser({"small-1": 1000, "medium-1": 1000, "large-1": 1000})
    key = ApiKey(id="k", name="k", digest="d", prefix="p", models=["large"], groups=[])
    assert (await auto.choose(BODY, entry_allowed(key))).name == "large"
    assert [host for host, _ in fake.calls] == ["large-1"], "the cheaper ones were not measured"
    nothing = ApiKey(id="n", name="n", digest="d", prefix="p", models=["other"])
    with pytest.raises(ModelNotFound):
        await auto.choose(BODY, entry_allowed(nothing))


async def test_each_candidate_is_measured_with_its_own_tokenizer() -> None:
    auto, fake = chooser({"small-1": 9000, "medium-1": 9000, "large-1": 9000})
    choice = await auto.choose_detailed({**BODY, "max_tokens": 500})
    assert (choice.entry.name, choice.prompt_tokens, choice.exact) == ("medium", 9000, True)
    assert [body["model"] for _, body in fake.calls] == ["small", "medium"]
    auto, fake = chooser({"small-1": 9000, "medium-1": 16000, "large-1": 16000})
    assert (await auto.choose({**BODY, "max_tokens": 500})).worker_model == "org/large-128k"
    assert fake.calls[-1][1]["model"] == "org/large-128k"


async def test_the_completion_budget_counts_against_the_window() -> None:
    auto, _ = chooser({"small-1": 3100, "medium-1": 3100}, default_completion_tokens=1024)
    assert (await auto.choose(BODY)).name == "medium", "3100 + 1024 default > 4096"
    assert (await auto.choose({**BODY, "max_tokens": 900})).name == "small"
    assert completion_budget({"max_tokens": 10, "max_completion_tokens": 20}, 5) == 20
    assert completion_budget({"max_tokens": True}, 5) == 5


async def test_a_prompt_too_big_for_every_model_is_a_400_naming_its_size() -> None:
    auto, _ = chooser({"small-1": 200_000, "medium-1": 200_000, "large-1": 200_000})
    with pytest.raises(InvalidRequest) as caught:
        await auto.choose({**BODY, "max_tokens": 100})
    error = caught.value
    assert error.status_code == 400 and error.code == "context_length_exceeded"
    assert error.param == "messages"
    assert "200000 tokens" in error.message and "131072" in error.message
    with pytest.raises(InvalidRequest) as caught:
        await auto.choose({**BODY, "max_tokens": 200_000})
    assert caught.value.param == "max_tokens"


async def test_no_eligible_model_means_auto_does_not_exist() -> None:
    auto, _ = chooser({}, entries=[EMBED])
    with pytest.raises(ModelNotFound):
        await auto.choose(BODY)


@pytest.mark.parametrize("misbehaviour", ["down", "slow", "error", "garbled"])
async def test_a_failing_tokenizer_falls_back_to_the_estimate(misbehaviour: str) -> None:
    auto, fake = chooser({"small-1": misbehaviour})
    started = time.monotonic()
    choice = await auto.choose_detailed(BODY)
    assert time.monotonic() - started < 1.0
    assert (choice.entry.name, choice.exact) == ("small", False)
    assert choice.prompt_tokens == estimate_tokens(BODY)
    assert len(fake.calls) == 1


async def test_without_a_ready_worker_the_estimate_is_used_and_nothing_is_called() -> None:
    auto, fake = chooser({})
    choice = await auto.choose_detailed(BODY)
    assert (choice.entry.name, choice.exact) == ("small", False) and fake.calls == []


def test_the_estimate_errs_high_for_text_and_budgets_media_parts() -> None:
    text = "The keeper climbed the stairs of the lighthouse every evening at dusk. " * 50
    body = {
        "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": text}]
    }
    exact = sim_tokenizer.count(render_chat(body).text)
    assert exact < estimate_tokens(body) < 2 * exact
    image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64," + "A" * 10**6},
                    },
                ],
            }
        ]
    }
    assert MEDIA_PART_TOKENS < estimate_tokens(image) < MEDIA_PART_TOKENS + 50
    assert estimate_tokens({"prompt": "x" * 300}) == 16 + 100


async def test_token_id_prompts_are_counted_without_a_tokenizer() -> None:
    registry = WorkerRegistry(InMemoryWorkerStore(), ManualClock())
    counter = TokenCounter(registry, TokenizeFake({}))
    assert await counter.count("m", {"prompt": [1, 2, 3]}) == TokenCount(3, exact=True)
    assert await counter.count("m", {"prompt": [[1, 2], [1, 2, 3, 4]]}) == TokenCount(4, True)


@pytest.fixture(scope="module")
def sim_worker() -> Iterator[str]:
    with serve_asgi(create_sim_app(SimConfig(model="small", ttft_ms=0, tokens_per_s=0))) as url:
        yield url


@pytest.fixture
async def pooled() -> AsyncIterator[PooledHttpUpstream]:
    upstream = PooledHttpUpstream(connect_timeout_s=1, read_timeout_s=2)
    yield upstream
    await upstream.close()


async def test_counts_come_from_a_real_workers_tokenize_endpoint(
    sim_worker: str, pooled: PooledHttpUpstream
) -> None:
    registry = WorkerRegistry(InMemoryWorkerStore(), ManualClock())
    registry.register("sim-1", pool="p", model="small", engine="sim", url=sim_worker)
    counter = TokenCounter(registry, pooled, timeout_s=2)
    body = {"messages": [{"role": "user", "content": "How tall is the lighthouse at Alexandria?"}]}
    counted = await counter.count("small", body)
    assert counted == TokenCount(sim_tokenizer.count(render_chat(body).text), exact=True)
    assert counted.tokens < estimate_tokens(body)
    prompt = await counter.count("small", {"prompt": "Once upon a time"})
    assert prompt == TokenCount(sim_tokenizer.count("Once upon a time"), exact=True)
