"""The catalogue `spotgate dev` serves: the README's model and `auto` work on either engine.

The README's Python example is run with the official client against a gateway
built the way `spotgate dev --engine sim` builds it, with a sim worker on loopback.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from spotgate.api.app import create_app
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.model_catalogue import ModelEntry
from spotgate.hosts.dev_catalogue import dev_catalogue, with_dev_catalogue
from spotgate.hosts.gateway import build_runtime
from spotgate.hosts.local import DEV_PRICE_IN_PER_1M, DevOptions, dev_settings
from spotgate.settings import Settings
from tests.conftest import serve_asgi

KEY = "sk-dev-catalogue-test"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def dev(options: DevOptions, **settings: object) -> Settings:
    base, _ = dev_settings(Settings(cache_backend="off", **settings), KEY)
    return with_dev_catalogue(base, options)


@pytest.fixture(scope="module")
def sim_worker() -> Iterator[str]:
    with serve_asgi(create_sim_app(SimConfig(model="sim-model", ttft_ms=0))) as url:
        yield url


@pytest.fixture
async def client(sim_worker: str) -> AsyncIterator[openai.AsyncOpenAI]:
    runtime = build_runtime(dev(DevOptions(engine="sim", model="sim-model")), InMemoryWorkerStore())
    runtime.registry.register("w1", pool="default", model="sim-model", engine="sim", url=sim_worker)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield openai.AsyncOpenAI(
            base_url="http://gw/v1", api_key=KEY, http_client=http, max_retries=0
        )
    await runtime.close()


async def test_the_readme_example_runs_on_the_sim_engine(client: openai.AsyncOpenAI) -> None:
    listed = [m.id async for m in client.models.list()]
    assert {"smollm2", "auto", "sim-model"} <= set(listed)
    reply = await client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        temperature=0,
    )
    assert reply.choices[0].message.content == "The capital of France is Paris."
    assert reply.usage is not None and reply.usage.total_tokens > 0
    text, usage = "", None
    stream = await client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    assert text == "The capital of France is Paris." and usage is not None


async def test_auto_resolves_out_of_the_box(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="auto",
        messages=QUESTION,
        max_tokens=8,
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-model"] == "sim-model"


def test_the_vllm_stack_catalogues_its_chat_and_embedding_models() -> None:
    settings = dev(DevOptions(engine="vllm", model="smollm2", embeddings=True))
    chat, embed = settings.gateway.model_catalogue
    assert (chat.name, chat.aliases, chat.mode, chat.context_length) == (
        "smollm2",
        [],
        "chat",
        2048,
    )
    assert (embed.name, embed.pool, embed.mode, embed.auto) == (
        "minilm",
        "embeddings",
        "embedding",
        False,
    )
    # usage reports keep the dev stack's notional prices
    assert chat.price_in_per_1m == DEV_PRICE_IN_PER_1M


def test_a_renamed_smollm2_keeps_the_readme_name_but_other_weights_do_not(
    tmp_path: Path,
) -> None:
    renamed = dev(DevOptions(engine="vllm", model="tiny"))
    assert renamed.gateway.model_catalogue[0].aliases == ["smollm2"]
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 32768}))
    qwen = DevOptions(
        engine="vllm",
        model="qwen",
        model_dir=tmp_path,
        engine_args=["--max-model-len", "auto", "--enable-auto-tool-choice"],
    )
    [entry] = dev(qwen).gateway.model_catalogue
    assert (entry.name, entry.aliases, entry.context_length) == ("qwen", [], 32768)


@pytest.mark.parametrize(
    ("args", "window"),
    [
        ([], 2048),
        (["--max-model-len=8192"], 8192),
        (["--max_model_len", "8k"], 8000),
        (["--max-model-len=4K"], 4096),
        (["--max-model-len=1024", "--max-model-len=512"], 512),  # argparse keeps the last
    ],
)
def test_the_catalogued_window_is_the_one_vllm_will_have(args: list[str], window: int) -> None:
    plain, _ = dev_settings(Settings(), KEY)
    [entry] = dev_catalogue(plain, DevOptions(engine="vllm", engine_args=args))
    assert entry.context_length == window


def test_a_catalogue_the_user_configured_is_used_as_it_is() -> None:
    theirs = [ModelEntry(name="mine", context_length=100)]
    settings = dev(DevOptions(engine="sim", model="sim-model"), model_catalogue=theirs)
    assert [e.name for e in settings.gateway.model_catalogue] == ["mine"]
