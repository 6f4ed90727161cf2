"""The sim engine, seen as a client sees vLLM: over ASGI and over a real socket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import re
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from spotgate.engines.sim import SimConfig, create_sim_app
from tests.conftest import serve_asgi

MODEL = "sim-model"
PARIS_QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]
STORY: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a storyteller."},
    {"role": "user", "content": "Tell me a story about a lighthouse keeper."},
]
FAST = SimConfig(ttft_ms=0, tokens_per_s=0)


@contextlib.contextmanager
def serve(config: SimConfig) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a thread with its own loop."""
    with serve_asgi(create_sim_app(config)) as url:
        yield url


@pytest.fixture(scope="module")
def fast_url() -> Iterator[str]:
    with serve(FAST) as url:
        yield url


@pytest.fixture
def oai(fast_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fast_url}/v1", api_key="x", max_retries=0)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_sim_app(FAST))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        yield http


def parse_metrics(text: str) -> dict[str, float]:
    """`name` or `name[finished_reason]` -> value, for the sim's single model."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([\w:]+)\{([^}]*)\} (\S+)", line)
        assert match, line
        name, labels, value = match.groups()
        assert f'model_name="{MODEL}"' in labels
        reason = re.search(r'finished_reason="(\w+)"', labels)
        values[f"{name}[{reason.group(1)}]" if reason else name] = float(value)
    return values


def sse_payloads(body: str) -> list[Any]:
    events = [line.removeprefix("data: ") for line in body.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    return [orjson.loads(event) for event in events[:-1]]


async def chat(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await http.post("/v1/chat/completions", json={"model": MODEL, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# --- through the official openai client, over a real socket ---------------------------------


def test_lists_the_served_model(oai: openai.OpenAI) -> None:
    models = oai.models.list().data
    assert [model.id for model in models] == [MODEL]
    assert models[0].owned_by == "spotgate-sim"
    assert models[0].model_extra is not None
    assert models[0].model_extra["max_model_len"] == 2048


def test_chat_answers_the_capital_question_with_usage(oai: openai.OpenAI, fast_url: str) -> None:
    reply = oai.chat.completions.create(model=MODEL, messages=PARIS_QUESTION)
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "The capital of France is Paris."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 7
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 7
    tokenized = httpx.post(
        f"{fast_url}/tokenize", json={"model": MODEL, "messages": PARIS_QUESTION}
    )
    assert tokenized.json()["count"] == reply.usage.prompt_tokens


def test_chat_stream_with_usage_matches_the_unstreamed_answer(oai: openai.OpenAI) -> None:
    whole = oai.chat.completions.create(model=MODEL, messages=STORY, temperature=0)
    chunks = list(
        oai.chat.completions.create(
            model=MODEL,
            messages=STORY,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    tokens, usage = chunks[1:-1], chunks[-1]
    assert "".join(c.choices[0].delta.content or "" for c in tokens) == (
        whole.choices[0].message.content
    )
    assert all(c.choices[0].finish_reason is None for c in tokens[:-1])
    assert tokens[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert usage.choices == []
    assert usage.usage is not None
    assert whole.usage is not None
    assert usage.usage.model_dump() == {
        "prompt_tokens": whole.usage.prompt_tokens,
        "completion_tokens": whole.usage.completion_tokens,
        "total_tokens": whole.usage.total_tokens,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    assert len(tokens) == whole.usage.completion_tokens


def test_completions_for_several_prompts(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(
        model=MODEL,
        prompt=["The capital of France is", "Once upon a time"],
        max_tokens=5,
        n=2,
        temperature=0,
    )
    assert reply.object == "text_completion"
    assert [choice.index for choice in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text == "The capital of France is"
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[2].text == reply.choices[3].text != reply.choices[0].text
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 20

    streamed = list(
        oai.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=5, temperature=0, stream=True
        )
    )
    assert "".join(chunk.choices[0].text for chunk in streamed) == reply.choices[2].text
    assert streamed[-1].choices[0].finish_reason == "length"


def test_embeddings_are_deterministic_unit_vectors(oai: openai.OpenAI, fast_url: str) -> None:
    reply = oai.embeddings.create(model=MODEL, input=["hello", "world", "hello"])
    vectors = [item.embedding for item in reply.data]
    assert [item.index for item in reply.data] == [0, 1, 2]
    assert all(len(vector) == 64 for vector in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(math.sqrt(sum(v * v for v in vectors[0])), 1.0, rel_tol=1e-5)
    assert reply.usage.prompt_tokens == 3

    raw = httpx.post(
        f"{fast_url}/v1/embeddings",
        json={"model": MODEL, "input": "hello", "encoding_format": "base64"},
    ).json()
    decoded = struct.unpack("<64f", base64.b64decode(raw["data"][0]["embedding"]))
    assert list(decoded) == vectors[0]


def test_errors_have_the_openai_shape(oai: openai.OpenAI, fast_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing_model:
        oai.chat.completions.create(model="gpt-nope", messages=PARIS_QUESTION)
    assert missing_model.value.status_code == 404
    assert missing_model.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=[])

    no_messages = httpx.post(f"{fast_url}/v1/chat/completions", json={"model": MODEL})
    assert no_messages.status_code == 400
    error = no_messages.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == "messages"


async def test_concurrency_limit_shows_in_metrics_and_disconnects_free_slots() -> None:
    config = SimConfig(max_concurrency=4, ttft_ms=0, tokens_per_s=20)
    body = {
        "model": MODEL,
        "messages": STORY,
        "stream": True,
        "max_tokens": 500,
        "ignore_eos": True,
    }
    with serve(config) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:

            async def scrape() -> dict[str, float]:
                return parse_metrics((await http.get("/metrics")).text)

            async def settles(running: float, waiting: float) -> dict[str, float]:
                deadline = time.monotonic() + 5
                metrics = await scrape()
                while time.monotonic() < deadline:
                    metrics = await scrape()
                    if (
                        metrics["vllm:num_requests_running"] == running
                        and metrics["vllm:num_requests_waiting"] == waiting
                    ):
                        break
                    await asyncio.sleep(0.02)
                return metrics

            async with contextlib.AsyncExitStack() as streams:
                for _ in range(config.max_concurrency + 2):
                    response = await streams.enter_async_context(
                        http.stream("POST", "/v1/chat/completions", json=body)
                    )
                    assert response.status_code == 200
                busy = await settles(4, 2)
                assert busy["vllm:num_requests_running"] == 4
                assert busy["vllm:num_requests_waiting"] == 2
                assert 0 < busy["vllm:kv_cache_usage_perc"] <= 1

            idle = await settles(0, 0)
            assert idle["vllm:num_requests_running"] == 0
            assert idle["vllm:num_requests_waiting"] == 0
            assert idle["vllm:kv_cache_usage_perc"] == 0
            assert idle["vllm:request_success_total[abort]"] == 6


async def test_a_client_leaving_a_queued_unstreamed_request_frees_its_place() -> None:
    config = SimConfig(max_concurrency=1, ttft_ms=60_000, tokens_per_s=0)
    with serve(config) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for _ in range(2):
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(
                        "/v1/chat/completions",
                        json={"model": MODEL, "messages": STORY},
                        timeout=0.3,
                    )
            metrics: dict[str, float] = {}
            async with asyncio.timeout(5):
                while True:
                    metrics = parse_metrics((await http.get("/metrics")).text)
                    if metrics["vllm:request_success_total[abort]"] == 2:
                        break
                    await asyncio.sleep(0.02)
            assert metrics["vllm:num_requests_running"] == 0
            assert metrics["vllm:num_requests_waiting"] == 0


# --- through ASGI --------------------------------------------------------------------------


async def test_health_and_version(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.content == b""
    assert (await client.get("/version")).json()["version"]


async def test_temperature_zero_is_deterministic(client: httpx.AsyncClient) -> None:
    first = await chat(client, messages=STORY, temperature=0, max_tokens=200)
    second = await chat(client, messages=STORY, temperature=0, max_tokens=200)
    text = first["choices"][0]["message"]["content"]
    assert text == second["choices"][0]["message"]["content"]
    assert len(text.split()) > 3
    assert first["id"] != second["id"]
    other = await chat(
        client, messages=[{"role": "user", "content": "Another one."}], temperature=0
    )
    assert other["choices"][0]["message"]["content"] != text


async def test_seeded_sampling_is_reproducible_and_varies_per_choice(
    client: httpx.AsyncClient,
) -> None:
    first = await chat(client, messages=STORY, temperature=0.8, seed=7, n=3)
    again = await chat(client, messages=STORY, temperature=0.8, seed=7, n=3)
    texts = [choice["message"]["content"] for choice in first["choices"]]
    assert texts == [choice["message"]["content"] for choice in again["choices"]]
    assert len(set(texts)) == 3
    assert [choice["index"] for choice in first["choices"]] == [0, 1, 2]
    greedy = await chat(client, messages=STORY, temperature=0, n=2)
    assert greedy["choices"][0]["message"] == greedy["choices"][1]["message"]


async def test_max_tokens_and_stop_strings(client: httpx.AsyncClient) -> None:
    cut = await chat(client, messages=STORY, temperature=0, max_tokens=3, ignore_eos=True)
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 3
    newer = await chat(client, messages=STORY, temperature=0, max_completion_tokens=2)
    assert newer["usage"]["completion_tokens"] == 2

    stopped = await chat(client, messages=PARIS_QUESTION, stop=["Paris", "zzz"])
    choice = stopped["choices"][0]
    assert choice["message"]["content"] == "The capital of France is "
    assert choice["finish_reason"] == "stop"
    assert choice["stop_reason"] == "Paris"
    assert stopped["usage"]["completion_tokens"] == 6

    also = await chat(client, messages=PARIS_QUESTION, stop="France")
    assert also["choices"][0]["message"]["content"] == "The capital of "


async def test_streamed_choices_match_unstreamed_ones(client: httpx.AsyncClient) -> None:
    request = {"messages": STORY, "n": 2, "temperature": 1, "seed": 5, "stop": [" the"]}
    whole = await chat(client, **request)
    response = await client.post(
        "/v1/chat/completions", json={"model": MODEL, "stream": True, **request}
    )
    chunks = sse_payloads(response.text)
    texts = ["", ""]
    finishes: dict[int, tuple[str, str | None]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content", "")
            if choice["finish_reason"]:
                finishes[choice["index"]] = (choice["finish_reason"], choice["stop_reason"])
    for index, choice in enumerate(whole["choices"]):
        assert texts[index] == choice["message"]["content"]
        assert finishes[index] == (choice["finish_reason"], choice["stop_reason"])
        assert " the" not in texts[index]


async def test_continuing_a_partial_answer_completes_it_exactly(client: httpx.AsyncClient) -> None:
    request = {"temperature": 0, "max_tokens": 300}
    response = await client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": STORY, "stream": True, **request}
    )
    chunks = sse_payloads(response.text)
    tokens = [c["choices"][0]["delta"].get("content", "") for c in chunks[1:]]
    full = "".join(tokens)
    finish_reason = chunks[-1]["choices"][0]["finish_reason"]
    assert len(tokens) > 5

    cuts = [1, 2, len(tokens) // 2, len(tokens) - 1]
    prefixes = ["".join(tokens[:k]) for k in cuts] + [full[:7], full[: len(full) // 2 + 1]]
    for prefix in prefixes:
        resumed = await chat(
            client,
            messages=[*STORY, {"role": "assistant", "content": prefix}],
            continue_final_message=True,
            add_generation_prompt=False,
            **request,
        )
        continuation = resumed["choices"][0]["message"]["content"]
        assert prefix + continuation == full
        assert resumed["choices"][0]["finish_reason"] == finish_reason

    k = len(tokens) // 2
    partial = await chat(
        client,
        messages=[*STORY, {"role": "assistant", "content": "".join(tokens[:k])}],
        continue_final_message=True,
        add_generation_prompt=False,
        temperature=0,
        max_tokens=len(tokens) - k,
    )
    assert partial["usage"]["completion_tokens"] == len(tokens) - k
    assert "".join(tokens[:k]) + partial["choices"][0]["message"]["content"] == full

    streamed = await client.post(
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [*STORY, {"role": "assistant", "content": "".join(tokens[:k])}],
            "continue_final_message": True,
            "add_generation_prompt": False,
            "stream": True,
            **request,
        },
    )
    resumed_tokens = [
        c["choices"][0]["delta"].get("content", "") for c in sse_payloads(streamed.text)[1:]
    ]
    assert resumed_tokens == tokens[k:]

    paris = await chat(
        client,
        messages=[*PARIS_QUESTION, {"role": "assistant", "content": "The capital"}],
        continue_final_message=True,
        add_generation_prompt=False,
    )
    assert paris["choices"][0]["message"]["content"] == " of France is Paris."


async def test_continuing_an_unknown_prefix_still_answers(client: httpx.AsyncClient) -> None:
    resumed = await chat(
        client,
        messages=[*STORY, {"role": "assistant", "content": "Something unexpected"}],
        continue_final_message=True,
        add_generation_prompt=False,
        temperature=0,
    )
    assert resumed["choices"][0]["message"]["content"].startswith(" ")
    both = await client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": STORY, "continue_final_message": True,
              "add_generation_prompt": True},
    )  # fmt: skip
    assert both.status_code == 400
    implicit = await client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": STORY, "continue_final_message": True},
    )
    assert implicit.status_code == 400


async def test_tokenize_round_trips_and_counts_like_usage(client: httpx.AsyncClient) -> None:
    text = "Héllo, wörld!  Supercalifragilistic\nthe capital of France <|im_end|>"
    tokens = (await client.post("/tokenize", json={"model": MODEL, "prompt": text})).json()
    assert tokens["count"] == len(tokens["tokens"])
    assert tokens["max_model_len"] == 2048
    back = await client.post("/detokenize", json={"model": MODEL, "tokens": tokens["tokens"]})
    assert back.json() == {"prompt": text}

    completion = await client.post(
        "/v1/completions", json={"model": MODEL, "prompt": text, "max_tokens": 1}
    )
    assert completion.json()["usage"]["prompt_tokens"] == tokens["count"]
    from_ids = await client.post(
        "/v1/completions",
        json={"model": MODEL, "prompt": tokens["tokens"], "max_tokens": 4, "temperature": 0},
    )
    from_text = await client.post(
        "/v1/completions", json={"model": MODEL, "prompt": text, "max_tokens": 4, "temperature": 0}
    )
    assert from_ids.json()["choices"][0]["text"] == from_text.json()["choices"][0]["text"]

    bad = await client.post("/detokenize", json={"model": MODEL, "tokens": [10**9]})
    assert bad.status_code == 400


async def test_request_validation(client: httpx.AsyncClient) -> None:
    malformed = await client.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "invalid_request_error"

    no_prompt = await client.post("/v1/completions", json={"model": MODEL})
    assert no_prompt.status_code == 400
    assert no_prompt.json()["error"]["param"] == "prompt"

    too_long = await client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": STORY, "max_tokens": 2048}
    )
    assert too_long.status_code == 400
    assert too_long.json()["error"]["param"] == "max_tokens"

    huge_prompt = await client.post(
        "/v1/completions", json={"model": MODEL, "prompt": "word " * 3000}
    )
    assert huge_prompt.status_code == 400

    unknown = await client.post("/v1/embeddings", json={"model": "other", "input": "x"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"

    bad_n = await client.post("/v1/chat/completions", json={"messages": STORY, "n": 0})
    assert bad_n.status_code == 400


async def test_metrics_count_tokens_and_finished_requests(client: httpx.AsyncClient) -> None:
    reply = await chat(client, messages=PARIS_QUESTION)
    await chat(client, messages=STORY, max_tokens=1, ignore_eos=True)
    metrics = parse_metrics((await client.get("/metrics")).text)
    assert metrics["vllm:request_success_total[stop]"] == 1
    assert metrics["vllm:request_success_total[length]"] == 1
    assert metrics["vllm:generation_tokens_total"] == 8
    assert metrics["vllm:prompt_tokens_total"] > reply["usage"]["prompt_tokens"]
    assert metrics["vllm:num_requests_running"] == 0


async def test_waiting_requests_are_served_in_arrival_order() -> None:
    app = create_sim_app(SimConfig(max_concurrency=1, ttft_ms=30, tokens_per_s=0))
    transport = httpx.ASGITransport(app=app)
    finished: list[int] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:

        async def until_waiting(count: int) -> None:
            async with asyncio.timeout(5):
                while True:
                    metrics = parse_metrics((await http.get("/metrics")).text)
                    if metrics["vllm:num_requests_waiting"] >= count:
                        return
                    await asyncio.sleep(0.001)

        async def ask(number: int) -> None:
            await chat(http, messages=[{"role": "user", "content": f"Request {number}"}])
            finished.append(number)

        tasks = []
        for number in range(4):
            tasks.append(asyncio.create_task(ask(number)))
            await until_waiting(number)
        await asyncio.gather(*tasks)
    assert finished == [0, 1, 2, 3]
