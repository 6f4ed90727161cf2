"""Chaos on a local sim stack: evictions under load, load steps, scale to zero, spot refused.

Each test runs `spotgate dev --engine sim` as a user would, with the fleet
monitor acting through the local compute provider, and checks what a client
or an operator would see: failed requests, replacement timing, pool size.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import ADMIN_KEY, KEY, Stack, sim_stack, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MODEL = "sim-model"


def client_for(stack: Stack, timeout: float = 60.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEY, max_retries=0, timeout=timeout)


def ask(client: openai.OpenAI, i: int, max_tokens: int = 16) -> openai.types.chat.ChatCompletion:
    """A request that generates exactly `max_tokens` (vLLM's ignore_eos), so it lasts."""
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": f"request {i}"}],
        max_tokens=max_tokens,
        temperature=0.7,
        extra_body={"ignore_eos": True},
    )


def monitor(stack: Stack) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    url = f"{stack.url}/orchestrations/fleet-monitor-default"
    return dict(httpx.get(url, headers=headers, timeout=5).json())


def evict(stack: Stack, worker_id: str, notice_s: float) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    url = f"{stack.url}/fleet/workers/{worker_id}/evict"
    reply = httpx.post(url, headers=headers, json={"notice_s": notice_s}, timeout=5)
    assert reply.status_code == 202, reply.text


class SteadyLoad:
    """`clients` threads each sending requests back to back until stopped; counts outcomes."""

    def __init__(self, send: Callable[[int], object], clients: int) -> None:
        self._send = send
        self._stop = threading.Event()
        self.served = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()  # before the threads start: they use it at once
        self._pool = concurrent.futures.ThreadPoolExecutor(clients)
        self._futures = [self._pool.submit(self._loop, n) for n in range(clients)]

    def _loop(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                self._send(n * 100_000 + i)
                with self._lock:
                    self.served += 1
            except Exception as exc:
                with self._lock:
                    self.errors.append(exc)
            i += 1

    def stop(self) -> None:
        self._stop.set()
        for future in self._futures:
            future.result(timeout=120)
        self._pool.shutdown()


def test_an_eviction_storm_under_load_fails_no_request_and_the_pool_refills(
    tmp_path: Path,
) -> None:
    with sim_stack(tmp_path, workers=4, tokens_per_s=200) as stack:
        client = client_for(stack)
        load = SteadyLoad(lambda i: ask(client, i), clients=12)
        try:
            wait_until(lambda: load.served >= 30, 30, "steady traffic")
            victims = [w["id"] for w in stack.workers("ready")[:2]]
            noticed_at = time.time()
            for victim in victims:
                evict(stack, victim, notice_s=3)
            wait_until(
                lambda: all(
                    {w["id"]: w["state"] for w in stack.workers()}.get(v) in (None, "gone")
                    for v in victims
                ),
                20,
                "the evicted workers to be gone",
            )
            wait_until(lambda: len(stack.workers("ready")) == 4, 30, "the pool to refill")
            served_before = load.served
            wait_until(lambda: load.served >= served_before + 30, 30, "traffic after the storm")
        finally:
            load.stop()

        assert load.errors == []
        replacements = [
            w
            for w in stack.workers()
            if w["registered_at"] >= noticed_at and w["id"] not in victims
        ]
        assert len(replacements) >= 2
        requested_after = min(w["registered_at"] for w in replacements) - noticed_at
        assert requested_after < 2.0, "replacements are requested in the tick the notice wakes"
        zones_evicted = {w["zone"] for w in stack.fleet()["workers"] if w["id"] in victims}
        assert not {w["zone"] for w in replacements[:1]} & zones_evicted
        assert {e["worker"] for e in stack.fleet()["evictions"]} >= set(victims)


def test_a_load_step_is_met_in_the_first_tick_that_sees_it(tmp_path: Path) -> None:
    autoscale = ["--autoscale", "--min-workers", "1", "--max-workers", "4"]
    autoscale += ["--target-concurrency", "2", "--scale-down-after", "600"]
    with sim_stack(tmp_path, workers=1, tokens_per_s=40, extra_args=autoscale, tick_s=1) as stack:
        client = client_for(stack)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            started = time.time()
            futures = [pool.submit(ask, client, i, 200) for i in range(8)]
            time.sleep(0.3)  # all eight are in flight at the gateway now
            seen_from = time.time()
            wait_until(lambda: len(stack.workers("ready")) == 4, 30, "the pool to grow to 4")
            replies = [f.result() for f in futures]
        assert all(r.choices[0].message.content for r in replies)

        # the first tick that sees the load (it may come before `seen_from` on a fast run)
        decisions = [d for d in stack.fleet()["decisions"] if d["observed_at"] >= started]
        seeing = [d for d in decisions if d["load"] > 2]
        first = min(seeing, key=lambda d: d["tick"])
        assert first["observed_at"] <= seen_from + 1.5, "a tick a second: it saw the step at once"
        assert first["desired"] == 4, first["reason"]
        assert sum(p["count"] for p in first["provision"]) == 3


def test_an_idle_pool_scales_to_zero_and_the_next_request_waits_for_a_worker(
    tmp_path: Path,
) -> None:
    autoscale = ["--autoscale", "--min-workers", "0", "--max-workers", "2"]
    autoscale += ["--scale-down-after", "1", "--idle-to-zero", "2"]
    with sim_stack(tmp_path, workers=0, extra_args=autoscale, tick_s=0.5) as stack:
        client = client_for(stack)
        assert stack.workers("ready") == []

        cold = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8
        )
        assert cold.status_code == 200
        assert cold.headers["x-worker"].startswith("default-w")

        wait_until(lambda: stack.workers("ready") == [], 30, "the idle pool to reach zero")
        codes = {code for d in stack.fleet()["decisions"] for code in d.get("codes", [])}
        assert "idle_to_zero" in codes
        assert monitor(stack)["customStatus"]["desired"] == 0

        again = ask(client, 2)
        assert again.choices[0].message.content


def test_refused_spot_is_covered_by_on_demand_until_spot_returns(tmp_path: Path) -> None:
    policies = '{"default": {"mix": {"spot_failure_window_s": 2, "spot_healthy_cooldown_s": 3}}}'
    env = {"SPOTGATE_POOL_POLICIES": policies}
    with sim_stack(tmp_path, workers=2, env=env) as stack:
        refuse = stack.cli("fleet", "spot", "--unavailable")
        assert refuse.returncode == 0, refuse.stderr
        victim = stack.workers("ready")[0]["id"]
        evict(stack, victim, notice_s=1)

        def on_demand_ready() -> bool:
            return any(w["priority"] == "on-demand" for w in stack.workers("ready"))

        wait_until(on_demand_ready, 20, "an on-demand replacement")
        assert len(stack.workers("ready")) == 2
        # the refusal window is 2 s, so the latest decision may already be past it: read them all
        codes = {code for d in stack.fleet()["decisions"] for code in d.get("codes", [])}
        assert {"spot_refused", "spot_refused_all_zones"} & codes, codes

        restore = stack.cli("fleet", "spot", "--available")
        assert restore.returncode == 0, restore.stderr
        wait_until(
            lambda: [w["priority"] for w in stack.workers("ready")] == ["spot", "spot"],
            30,
            "spot to replace the on-demand worker",
        )
        ask(client_for(stack), 1)


def _worker_process_group(worker_id: str) -> int:
    """The local "VM" of a worker: its process group, led by `spotgate worker`."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in cmdline and worker_id.encode() in cmdline and b"--worker-id" in cmdline:
            return os.getpgid(int(pid))
    raise AssertionError(f"no process for {worker_id}")


def test_a_worker_frozen_mid_stream_is_resumed_elsewhere_after_the_stream_silence(
    tmp_path: Path,
) -> None:
    """SIGSTOP: the socket stays open and nothing arrives, the worst way for a VM to hang."""
    env = {"SPOTGATE_UPSTREAM_STREAM_READ_TIMEOUT_S": "1"}
    with sim_stack(tmp_path, workers=2, tokens_per_s=40, env=env) as stack:
        client = client_for(stack)
        opened: list[str] = []

        def one_stream(i: int) -> tuple[str, int, list[str]]:
            with client.chat.completions.with_streaming_response.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"story {i}"}],
                max_tokens=60,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
                extra_headers={"Cache-Control": "no-store"},
            ) as response:
                opened.append(response.headers["x-worker"])
                finishes, usage = [], 0
                for chunk in response.parse():
                    finishes += [c.finish_reason for c in chunk.choices if c.finish_reason]
                    usage = chunk.usage.completion_tokens if chunk.usage else usage
            return response.headers["x-worker"], usage, finishes

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(one_stream, i) for i in range(8)]
            wait_until(lambda: len(opened) == 8, 10, "every stream to open")
            victim = max(set(opened), key=opened.count)
            group = _worker_process_group(victim)
            time.sleep(0.3)
            os.killpg(group, signal.SIGSTOP)
            try:
                results = [f.result(timeout=60) for f in futures]
            finally:
                os.killpg(group, signal.SIGKILL)

        assert all(usage == 60 and finishes == ["length"] for _, usage, finishes in results)
        resumed = [line for line in stack.log.read_text().splitlines() if "resumed on" in line]
        assert len(resumed) == opened.count(victim) >= 1
        assert all(f"worker {victim} failed mid-stream" in line for line in resumed)
