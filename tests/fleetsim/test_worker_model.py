"""One simulated engine against a hand-made profile, every moment worked out by hand.

The profile: prefill 1,000 tokens/s, one stream decodes at 10 tokens/s, a
batch at most 40 tokens/s in all, 100 ms from the end of a prompt's prefill
to its first token. A job of P prompt and C completion tokens alone takes
P/1000 s to prefill, its first token 0.1 s after that (the first of its C),
then (C - 1)/10 s for the rest.
"""

from __future__ import annotations

import math

import pytest

from spotgate.fleetsim.service_profile import ServiceProfile
from spotgate.fleetsim.worker_model import Job, SimWorker


def make_profile(**overrides: float) -> ServiceProfile:
    values: dict[str, float] = {
        "max_concurrency": 4,
        "prefill_tokens_per_s": 1000.0,
        "decode_tokens_per_s_single": 10.0,
        "decode_tokens_per_s_max": 40.0,
        "ttft_base_ms": 100.0,
        "boot_to_ready_s": 0.0,
    }
    values |= overrides
    return ServiceProfile(model="m", sku="s", **values)  # type: ignore[arg-type]


class Engine:
    """A worker and what it reported, by job id."""

    def __init__(self, profile: ServiceProfile) -> None:
        self.first: dict[int, float] = {}
        self.done: dict[int, float] = {}
        self.worker = SimWorker("w1", profile, self._on_first, self._on_done)

    def _on_first(self, job: Job, now: float) -> None:
        self.first.setdefault(job.id, now)
        if job.first_token_at is None:
            job.first_token_at = now

    def _on_done(self, job: Job, now: float) -> None:
        self.done[job.id] = now

    def submit(self, job_id: int, at: float, prompt: int, completion: int) -> Job:
        job = Job(job_id, at, prompt, completion)
        self.worker.submit(job, at)
        return job


def test_a_lone_job_gets_its_first_token_after_prefill_and_base_then_decodes_alone() -> None:
    engine = Engine(make_profile())
    engine.submit(1, 10.0, prompt=500, completion=21)
    assert engine.worker.next_event_at() == pytest.approx(10.5)  # its prefill ends
    engine.worker.advance(100.0)
    assert engine.first[1] == pytest.approx(10.0 + 500 / 1000 + 0.1)
    assert engine.done[1] == pytest.approx(10.6 + 20 / 10)
    assert engine.worker.tokens_out == pytest.approx(21)
    assert engine.worker.outstanding == 0
    assert engine.worker.next_event_at() == math.inf


def test_a_one_token_answer_is_done_at_its_first_token() -> None:
    engine = Engine(make_profile())
    engine.submit(1, 0.0, prompt=200, completion=1)
    engine.worker.advance(5.0)
    assert engine.first[1] == pytest.approx(0.3)
    assert engine.done[1] == pytest.approx(0.3)


def test_per_stream_decode_rate_is_one_streams_until_the_batch_limit_binds() -> None:
    profile = make_profile()
    assert profile.decode_rate(0) == 10.0
    assert profile.decode_rate(1) == 10.0
    assert profile.decode_rate(4) == 10.0  # 40 / 4: the limit just reached
    assert profile.decode_rate(8) == 5.0
    assert profile.decode_rate(16) == 2.5


def test_prompts_are_prefilled_one_after_another_in_arrival_order() -> None:
    engine = Engine(make_profile())
    engine.submit(1, 0.0, prompt=1000, completion=1)
    engine.submit(2, 0.0, prompt=1000, completion=1)
    engine.worker.advance(10.0)
    assert engine.first[1] == pytest.approx(1.0 + 0.1)
    assert engine.first[2] == pytest.approx(2.0 + 0.1)  # its prefill waited for the first's


def test_sequences_decoding_together_share_the_batch_rate() -> None:
    # one stream 10 tokens/s, the whole batch also 10: two decoding get 5 each
    engine = Engine(make_profile(decode_tokens_per_s_max=10.0, ttft_base_ms=0.0))
    engine.submit(1, 0.0, prompt=100, completion=11)
    engine.submit(2, 0.0, prompt=100, completion=11)
    engine.worker.advance(10.0)
    # 1: first token at 0.1, decodes 1 token alone until 2's first token at 0.2,
    # then its last 9 at 5/s: done at 0.2 + 1.8
    assert engine.first == pytest.approx({1: 0.1, 2: 0.2})
    assert engine.done[1] == pytest.approx(2.0)
    # 2: 9 of its 10 at 5/s by 2.0, the last one alone at 10/s
    assert engine.done[2] == pytest.approx(2.1)


def test_beyond_max_concurrency_jobs_wait_for_a_free_slot() -> None:
    engine = Engine(make_profile(max_concurrency=2))
    for n in (1, 2, 3):
        engine.submit(n, 0.0, prompt=100, completion=11)
    worker = engine.worker
    assert (worker.running, len(worker.waiting), worker.outstanding) == (2, 1, 3)
    assert worker.metrics() == {
        "num_requests_running": 2.0,
        "num_requests_waiting": 1.0,
        "kv_cache_usage_perc": 1.0,
    }
    worker.advance(10.0)
    # 1 and 2 decode 10 tokens at 10/s each (the batch limit is 40): done at 1.2 and 1.3
    assert engine.done[1] == pytest.approx(0.1 + 0.1 + 1.0)
    assert engine.done[2] == pytest.approx(0.2 + 0.1 + 1.0)
    # 3 starts its prefill only when 1 leaves (it would have had its first token at 0.4)
    assert engine.first[3] == pytest.approx(1.2 + 0.1 + 0.1)
    assert engine.done[3] == pytest.approx(1.4 + 1.0)


def test_evict_all_hands_back_every_job_with_its_progress() -> None:
    engine = Engine(make_profile(max_concurrency=2))
    jobs = [engine.submit(n, 0.0, prompt=100, completion=11) for n in (1, 2, 3)]
    lost = engine.worker.evict_all(0.7)
    assert sorted(j.id for j in lost) == [1, 2, 3]  # the one still queued too
    assert engine.worker.outstanding == 0
    assert engine.worker.next_event_at() == math.inf
    # by 0.7, 1 has decoded 0.5 s of its 10 tokens at 10/s, 2 0.4 s; 3 never started
    assert jobs[0].decode_left == pytest.approx(5.0)
    assert jobs[1].decode_left == pytest.approx(6.0)
    assert jobs[2].first_token_at is None
    assert engine.done == {}
    engine.worker.advance(100.0)
    assert engine.done == {}  # nothing left to finish on a reclaimed worker


def test_a_resumed_job_prefills_its_grown_prompt_then_decodes_only_what_was_left() -> None:
    engine = Engine(make_profile())
    job = Job(1, 0.0, prompt_tokens=100, completion_tokens=11, first_token_at=0.2)
    job.todo_prompt, job.todo_completion = 105, 6  # 5 generated before its worker went
    engine.worker.submit(job, 50.0)
    engine.worker.advance(100.0)
    # 105 tokens of prefill, the base, then all 6 left at 10/s
    assert engine.done[1] == pytest.approx(50.0 + 0.105 + 0.1 + 0.6)
    assert job.first_token_at == 0.2  # its first token was on the worker it lost


@pytest.mark.timeout(30)
def test_thousands_of_jobs_late_in_a_run_all_finish_on_time() -> None:
    """Regression: float error near t = 1000 s once left a sliver of work no time step could
    clear, and `advance` looped forever."""
    # GPU-like rates: the clock's rounding late in a run, times a high rate, is the
    # largest sliver of tokens
    profile = make_profile(
        prefill_tokens_per_s=13_000.0,
        decode_tokens_per_s_single=75.0,
        decode_tokens_per_s_max=3_800.0,
        ttft_base_ms=25.0,
    )
    engine = Engine(profile)
    alone = 137 / 13_000 + 0.025 + 6 / 75  # under the gap between arrivals
    jobs: list[Job] = []
    t = 1000.0
    while t < 4000.0:
        jobs.append(engine.submit(len(jobs), t, prompt=137, completion=7))
        t += 1.37 + (len(jobs) % 7) * 0.0113
        engine.worker.advance(t)
    engine.worker.advance(t + 10)
    assert len(jobs) > 2000
    assert engine.worker.outstanding == 0
    assert [engine.done[j.id] - j.arrived_at for j in jobs] == pytest.approx(
        [alone] * len(jobs), abs=1e-6
    )
