"""`spotgate dev --engine sim` end to end, driven by the official openai client.

The stack runs as a real subprocess tree (gateway, fleet monitor, workers
with their agents) on free loopback ports, as a user would run it.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.integration.conftest import ADMIN_KEY, KEY, Stack, sim_stack, wait_until
from tests.openai_schema import validate

pytestmark = pytest.mark.integration

MODEL = "sim-model"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with sim_stack(tmp_path_factory.mktemp("devstack"), ttft_ms=10, tokens_per_s=400) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEY, max_retries=0)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert MODEL in [m.id for m in client.models.list()]


def test_chat_answers_with_text_and_usage(client: openai.OpenAI, stack: Stack) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=QUESTION, temperature=0
    )
    validate("CreateChatCompletionResponse", raw.http_response.json())
    reply = raw.parse()
    assert reply.choices[0].message.content == "The capital of France is Paris."
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert raw.headers["x-worker"] in {w["id"] for w in stack.workers("ready")}
    assert raw.headers["x-model"] == MODEL


def test_streamed_chat_chunks_validate_and_carry_usage(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text, usage = "", None
        for chunk in response.parse():
            validate("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.usage is not None:
                usage = chunk.usage
    assert text == "The capital of France is Paris."
    assert usage is not None and usage.total_tokens > 0


def test_completions_endpoint_is_served(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(
        model=MODEL, prompt="Once upon a time", max_tokens=8
    )
    validate("CreateCompletionResponse", raw.http_response.json())
    assert raw.parse().choices[0].text


def test_requests_spread_across_all_workers(client: openai.OpenAI, stack: Stack) -> None:
    seen = set()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(
                client.chat.completions.with_raw_response.create,
                model=MODEL,
                messages=[{"role": "user", "content": f"tell me story {i}"}],
                max_tokens=16,
            )
            for i in range(24)
        ]
        for future in futures:
            seen.add(future.result().headers["x-worker"])
    assert seen == {w["id"] for w in stack.workers("ready")}


def test_no_key_is_401_and_unknown_model_404(stack: Stack) -> None:
    anonymous = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert caught.value.code == "model_not_found"


def test_fleet_monitor_runs_and_explains_itself(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def monitor_status() -> dict:
        url = f"{stack.url}/orchestrations/fleet-monitor-default"
        return httpx.get(url, headers=headers, timeout=5).json()

    wait_until(
        lambda: monitor_status()["customStatus"]["ready"] == 3, 10, "the monitor to see 3 ready"
    )
    status = monitor_status()
    assert status["name"] == "fleet_monitor"
    assert status["instanceId"] == "fleet-monitor-default"
    assert status["runtimeStatus"] == "Running"
    for field in ("input", "customStatus", "output", "createdTime", "lastUpdatedTime"):
        assert field in status
    custom = status["customStatus"]
    assert custom["desired"] == 3 and custom["actual"] == 3
    assert custom["why"].startswith("steady")


def test_fleet_cli_shows_every_worker(stack: Stack) -> None:
    result = stack.cli("fleet")
    assert result.returncode == 0, result.stderr
    for worker in stack.workers():
        assert worker["id"] in result.stdout


def test_killed_worker_loses_no_request_and_leaves_the_fleet(stack: Stack) -> None:
    """Requests a worker was running when it died come back as 502 worker_failed (never
    resent by the gateway: the request may be what killed it); the OpenAI SDK's default
    retries resend them, so a user of the SDK sees every answer."""
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEY)  # SDK default: 2 retries
    victim = stack.workers("ready")[0]["id"]
    errors: list[BaseException] = []
    served = 0

    def one_request(i: int) -> str:
        return (
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"request {i}"}],
                max_tokens=24,
            )
            .choices[0]
            .message.content
            or ""
        )

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(one_request, i) for i in range(120)]
        time.sleep(0.3)
        result = stack.cli("fleet", "kill", victim)
        assert result.returncode == 0, result.stderr
        killed_at = time.monotonic()
        wait_until(
            lambda: {w["id"]: w["state"] for w in stack.workers()}.get(victim) in (None, "gone"),
            timeout_s=5,
            what=f"{victim} to leave the fleet",
        )
        gone_after_s = time.monotonic() - killed_at
        for future in futures:
            try:
                assert future.result()
                served += 1
            except Exception as exc:
                errors.append(exc)
    assert errors == []
    assert served == 120
    assert gone_after_s < 2.0, "a killed worker leaves within one heartbeat interval"


def test_evicted_worker_drains_then_is_removed(client: openai.OpenAI, stack: Stack) -> None:
    victim = stack.workers("ready")[0]["id"]
    result = stack.cli("fleet", "evict", victim, "--notice", "10")
    assert result.returncode == 0, result.stderr
    wait_until(
        lambda: {w["id"]: w["state"] for w in stack.workers()}.get(victim) == "draining",
        timeout_s=5,
        what=f"{victim} to drain after the eviction notice",
    )
    for i in range(10):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"after notice {i}"}], max_tokens=4
        )
        assert raw.headers["x-worker"] != victim
    wait_until(
        lambda: {w["id"]: w["state"] for w in stack.workers()}.get(victim) in (None, "gone"),
        timeout_s=15,
        what=f"{victim} to be removed after acknowledging the eviction",
    )
    assert any(e["worker"] == victim for e in stack.fleet()["evictions"])
