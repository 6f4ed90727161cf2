"""One simulated worker: a vLLM-like engine obeying a `ServiceProfile`, in simulated time.

Sequences take a batch slot (at most `max_concurrency`), wait their turn for
prefill (one prompt at a time, at the profile's prefill rate), emit their
first token `ttft_base_ms` after their prefill ends, then decode together:
each of `b` decoding sequences gets the profile's per-sequence rate for `b`
(processor sharing). The worker is advanced to a moment by `advance(now)`,
which settles everything that happened up to it; `next_event_at` says when
it next needs advancing.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from spotgate.fleetsim.service_profile import ServiceProfile

EPSILON = 1e-9
TIME_EPSILON = 1e-6
"""Work due within a microsecond counts as done now."""


@dataclass(eq=False)
class Job:
    """A request on its way through the gateway and a worker (re-queued if its worker dies)."""

    id: int
    arrived_at: float
    prompt_tokens: int
    completion_tokens: int
    first_token_at: float | None = None
    done_at: float | None = None
    worker_id: str | None = None
    resumed: int = 0
    status: str = "pending"  # served | cached | failed | spilled
    todo_prompt: int | None = None
    """What a resumed job still has to process (its prompt grew by what it generated)."""
    todo_completion: int | None = None
    # on a worker
    prefill_left: float = 0.0
    decode_left: float = 0.0
    first_token_due: float = math.inf
    tags: dict[str, str] = field(default_factory=dict)


class SimWorker:
    def __init__(
        self,
        worker_id: str,
        profile: ServiceProfile,
        on_first_token: Callable[[Job, float], None],
        on_done: Callable[[Job, float], None],
    ) -> None:
        self.id = worker_id
        self.profile = profile
        self._on_first_token = on_first_token
        self._on_done = on_done
        self.waiting: deque[Job] = deque()
        self.prefilling: deque[Job] = deque()
        self.awaiting_first: list[Job] = []
        self.decoding: list[Job] = []
        self._now = 0.0
        self.tokens_out = 0.0

    @property
    def running(self) -> int:
        return len(self.prefilling) + len(self.awaiting_first) + len(self.decoding)

    @property
    def outstanding(self) -> int:
        return self.running + len(self.waiting)

    def metrics(self) -> dict[str, float]:
        """What the agent would scrape from the engine's /metrics."""
        usage = self.running / self.profile.max_concurrency
        return {
            "num_requests_running": float(self.running),
            "num_requests_waiting": float(len(self.waiting)),
            "kv_cache_usage_perc": min(1.0, usage),
        }

    def submit(self, job: Job, now: float) -> None:
        self.advance(now)
        job.worker_id = self.id
        prompt = job.prompt_tokens if job.todo_prompt is None else job.todo_prompt
        completion = job.completion_tokens if job.todo_completion is None else job.todo_completion
        job.prefill_left = float(prompt)
        # the first token comes out of prefill; a resumed job's first token is already out
        first = 1 if job.first_token_at is None else 0
        job.decode_left = float(max(0, completion - first))
        self.waiting.append(job)
        self._admit()

    def evict_all(self, now: float) -> list[Job]:
        """The VM is gone: every job it held, to be resumed elsewhere."""
        self.advance(now)
        jobs = [*self.waiting, *self.prefilling, *self.awaiting_first, *self.decoding]
        self.waiting.clear()
        self.prefilling.clear()
        self.awaiting_first.clear()
        self.decoding.clear()
        return jobs

    def next_event_at(self) -> float:
        times = [math.inf]
        if self.prefilling:
            times.append(
                self._now + self.prefilling[0].prefill_left / self.profile.prefill_tokens_per_s
            )
        if self.awaiting_first:
            times.append(min(j.first_token_due for j in self.awaiting_first))
        if self.decoding:
            rate = self.profile.decode_rate(len(self.decoding))
            times.append(self._now + min(j.decode_left for j in self.decoding) / rate)
        return min(times)

    def advance(self, now: float) -> None:
        """Settle every prefill, first token and completion up to `now`, in time order."""
        while True:
            due = self.next_event_at()
            if due > now + EPSILON:
                break
            self._progress(due)
            self._settle(due)
        self._progress(now)

    def _progress(self, until: float) -> None:
        dt = until - self._now
        if dt <= 0:
            return
        if self.prefilling:
            self.prefilling[0].prefill_left -= dt * self.profile.prefill_tokens_per_s
        if self.decoding:
            step = dt * self.profile.decode_rate(len(self.decoding))
            for job in self.decoding:
                job.decode_left -= step
            self.tokens_out += step * len(self.decoding)
        self._now = until

    def _settle(self, now: float) -> None:
        base_s = self.profile.ttft_base_ms / 1000
        # "done" is judged in seconds left, not tokens: late in a run a few tokens' worth of
        # float error is below the clock's resolution, and no time step could clear it
        prefill_done = TIME_EPSILON * self.profile.prefill_tokens_per_s
        while self.prefilling and self.prefilling[0].prefill_left <= prefill_done:
            job = self.prefilling.popleft()
            job.first_token_due = now + base_s
            self.awaiting_first.append(job)
        for job in [j for j in self.awaiting_first if j.first_token_due <= now + EPSILON]:
            self.awaiting_first.remove(job)
            self.tokens_out += 1
            self._on_first_token(job, now)
            if job.decode_left <= EPSILON:
                self._finish(job, now)
            else:
                self.decoding.append(job)
        decode_done = TIME_EPSILON * self.profile.decode_rate(len(self.decoding))
        for job in [j for j in self.decoding if j.decode_left <= decode_done]:
            self.decoding.remove(job)
            self._finish(job, now)
        self._admit()

    def _finish(self, job: Job, now: float) -> None:
        job.done_at = now
        self._on_done(job, now)

    def _admit(self) -> None:
        while self.waiting and self.running < self.profile.max_concurrency:
            self.prefilling.append(self.waiting.popleft())
