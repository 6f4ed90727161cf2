"""A 5,000-line batch on the sim stack, through the official openai client, while workers
are killed and evicted: every line answered exactly once, the pool grown for the backlog
and shrunk after, progress visible in the batch and in its orchestration's status."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.integration.conftest import ADMIN_KEY, KEY, Stack, sim_stack, wait_until

pytestmark = pytest.mark.integration

LINES = 5_000
MODEL = "sim-model"


def input_file(lines: int) -> bytes:
    rows = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"summarise item {i}"}],
                "max_tokens": 12,
                "temperature": 0.7,
                "ignore_eos": True,
            },
        }
        for i in range(lines)
    ]
    return b"\n".join(orjson.dumps(row) for row in rows) + b"\n"


class FleetWatch:
    """Samples ready workers and the batch orchestration's status in the background."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self.ready: list[int] = []
        self.statuses: list[dict[str, Any]] = []
        self.batch_id: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FleetWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        while not self._stop.wait(0.25):
            try:
                self.ready.append(len(self._stack.workers("ready")))
                if self.batch_id is not None:
                    url = f"{self._stack.url}/orchestrations/batch-{self.batch_id}"
                    reply = httpx.get(url, headers=headers, timeout=5)
                    if reply.status_code == 200:
                        self.statuses.append(reply.json())
            except httpx.HTTPError:
                continue


def strike(stack: Stack, fault: str, body: dict[str, Any], spare: str | None = None) -> str:
    """Kills or evicts a ready worker; one the monitor retires meanwhile (the pool steps
    down as the backlog drains) is passed over for the next. Returns the one struck."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for _ in range(20):
        ready = [w["id"] for w in stack.workers("ready") if w["id"] != spare]
        for worker in ready:
            url = f"{stack.url}/fleet/workers/{worker}/{fault}"
            reply = httpx.post(url, headers=headers, json=body, timeout=5)
            if reply.status_code < 300:
                return worker
        time.sleep(0.25)
    raise AssertionError(f"no ready worker to {fault}")


def test_a_batch_survives_kills_and_evictions_and_drives_the_pool(tmp_path: Path) -> None:
    autoscale = ["--autoscale", "--min-workers", "0", "--max-workers", "4"]
    autoscale += ["--scale-down-after", "2", "--idle-to-zero", "3", "--provision-delay", "0.5"]
    env = {"SPOTGATE_BATCH_DRAIN_TARGET_S": "20", "SPOTGATE_BATCH_LINE_ESTIMATE_S": "0.5"}
    with (
        sim_stack(tmp_path, workers=0, tokens_per_s=100, extra_args=autoscale, env=env) as stack,
        FleetWatch(stack) as watch,
    ):
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEY, max_retries=2)
        uploaded = client.files.create(file=("lines.jsonl", io.BytesIO(input_file(LINES))),
                                       purpose="batch")  # fmt: skip
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"test": "chaos"},
        )
        watch.batch_id = batch.id
        assert batch.status == "validating"

        def some_done() -> bool:
            counts = client.batches.retrieve(batch.id).request_counts
            return counts is not None and counts.completed >= LINES // 5

        wait_until(some_done, 120, "a fifth of the lines", interval_s=0.5)
        killed = strike(stack, "kill", {})
        wait_until(lambda: len(stack.workers("ready")) >= 2, 60, "a second worker")
        strike(stack, "evict", {"notice_s": 1}, spare=killed)

        def finished() -> bool:
            return client.batches.retrieve(batch.id).status in {"completed", "failed", "expired"}

        wait_until(finished, 300, "the batch to finish", interval_s=1)
        done = client.batches.retrieve(batch.id)
        assert done.status == "completed", done
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (LINES, 0)
        assert done.error_file_id is None
        assert done.output_file_id is not None
        output = client.files.content(done.output_file_id).text.splitlines()
        answered = [orjson.loads(line) for line in output]
        custom_ids = [row["custom_id"] for row in answered]
        assert len(custom_ids) == LINES and set(custom_ids) == {f"line-{i}" for i in range(LINES)}
        assert all(row["response"]["status_code"] == 200 for row in answered)
        assert all(row["response"]["body"]["choices"][0]["message"]["content"] for row in answered)

        wait_until(lambda: len(stack.workers("ready")) == 0, 60, "the pool to shrink to zero")

    assert max(watch.ready) >= 2, f"the backlog grew the pool: {watch.ready}"
    progress = [s["customStatus"] for s in watch.statuses if s.get("customStatus")]
    running = [p for p in progress if p.get("status") == "in_progress"]
    assert any(0 < p["request_counts"]["completed"] < LINES for p in running), progress[-3:]
    assert watch.statuses[-1]["runtimeStatus"] == "Completed"
    assert progress[-1]["status"] == "completed"
