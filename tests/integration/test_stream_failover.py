"""A worker dying mid-stream is invisible to the client: the gateway resumes elsewhere.

Two ways to kill a stream: `spotgate fleet kill` on the sim stack (SIGKILL,
as a spot eviction without notice looks from the gateway), and a loopback
proxy in front of a real vLLM that cuts the connection after N bytes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import orjson
import pytest
import uvicorn

from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.runtime import build_runtime
from spotgate.settings import Settings
from tests.conftest import VllmServer, free_port
from tests.integration.conftest import KEY, Stack, sim_stack

pytestmark = pytest.mark.integration

MODEL = "sim-model"
STREAMS = 20
MAX_TOKENS = 60


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """40 tokens/s: a 60-token answer streams for 1.5 s, long enough to die in the middle."""
    with sim_stack(tmp_path_factory.mktemp("failover"), ttft_ms=10, tokens_per_s=40) as stack:
        yield stack


@dataclass
class Received:
    worker: str = ""
    text: str = ""
    ids: set[str] = field(default_factory=set)
    roles: int = 0
    finishes: list[str] = field(default_factory=list)
    usage: Any = None
    ended_at: float = 0.0


def _prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"tell me story number {i}"}]


def test_killing_the_busiest_worker_mid_stream_costs_no_client_anything(
    slow_stack: Stack,
) -> None:
    client = openai.OpenAI(base_url=f"{slow_stack.url}/v1", api_key=KEY, max_retries=0)
    opened: queue.Queue[str] = queue.Queue()

    def one_stream(i: int) -> Received:
        got = Received()
        with client.chat.completions.with_streaming_response.create(
            model=MODEL,
            messages=_prompt(i),  # type: ignore[arg-type]
            temperature=0,
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},  # every answer runs the full 60 tokens
        ) as response:
            got.worker = response.headers["x-worker"]
            opened.put(got.worker)
            for chunk in response.parse():  # an SSE error event would raise here
                got.ids.add(chunk.id)
                for choice in chunk.choices:
                    got.roles += choice.delta.role is not None
                    got.text += choice.delta.content or ""
                    if choice.finish_reason:
                        got.finishes.append(choice.finish_reason)
                got.usage = chunk.usage or got.usage
        got.ended_at = time.monotonic()
        return got

    with concurrent.futures.ThreadPoolExecutor(STREAMS) as pool:
        futures = [pool.submit(one_stream, i) for i in range(STREAMS)]
        served_by = collections.Counter(opened.get(timeout=30) for _ in range(STREAMS))
        time.sleep(0.4)  # every stream is some 15 tokens into its 60
        victim, victims_streams = served_by.most_common(1)[0]
        killed = slow_stack.cli("fleet", "kill", victim)
        killed_at = time.monotonic()
        assert killed.returncode == 0, killed.stderr
        received = [future.result() for future in futures]  # raises on any client error

    assert victims_streams >= 2 and len(served_by) >= 2
    for i, got in enumerate(received):
        reference = client.chat.completions.create(
            model=MODEL,
            messages=_prompt(i),  # type: ignore[arg-type]
            temperature=0,
            max_tokens=MAX_TOKENS,
            extra_body={"ignore_eos": True},
        )
        assert reference.usage is not None and got.usage is not None
        assert got.text == reference.choices[0].message.content, f"stream {i} on {got.worker}"
        assert len(got.ids) == 1 and got.roles == 1 and got.finishes == ["length"]
        assert got.usage.prompt_tokens == reference.usage.prompt_tokens
        assert got.usage.completion_tokens == reference.usage.completion_tokens == MAX_TOKENS
        assert got.usage.total_tokens == got.usage.prompt_tokens + MAX_TOKENS
        if got.worker == victim:
            assert got.ended_at > killed_at, "the victim's streams were cut, then resumed"
