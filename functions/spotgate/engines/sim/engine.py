"""The simulated engine loop: take a batch slot, pay prefill and decode time, count it.

Answers are computed up front (they are cheap and deterministic); only the
timing and the slot accounting play out over time, which is all a gateway
can observe of a real engine.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

from spotgate.engines.sim.config import SimConfig
from spotgate.engines.sim.generation import Completion
from spotgate.engines.sim.metrics import SimMetrics
from spotgate.engines.sim.scheduler import Scheduler
from spotgate.engines.sim.streaming import DONE


class ChunkFormat(Protocol):
    def opening(self, n: int) -> bytes: ...

    def token(self, index: int, text: str, final: Completion | None = None) -> bytes: ...

    def usage(self, prompt_tokens: int, choices: Sequence[Completion]) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Job:
    """One request's precomputed choices; a request holds one slot whatever its `n`."""

    prompt_tokens: int
    choices: Sequence[Completion]

    @property
    def completion_tokens(self) -> int:
        return sum(choice.num_tokens for choice in self.choices)

    @property
    def decode_steps(self) -> int:
        return max((choice.num_tokens for choice in self.choices), default=0)

    @property
    def stream_steps(self) -> int:
        """Writes after the first token time; a choice with no tokens still
        needs one to deliver its finish_reason."""
        return max(1, self.decode_steps)


class SimEngine:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.scheduler = Scheduler(
            config.max_concurrency, config.max_concurrency * config.max_model_len
        )
        self.metrics = SimMetrics()
        self.rng = random.Random(config.seed)
        self.created = int(time.time())
        self._ttft_s = config.ttft_s
        self._interval_s = config.token_interval_s

    def _duration(self, job: Job) -> float:
        return self._ttft_s + max(0, job.decode_steps - 1) * self._interval_s

    def runs_immediately(self, job: Job) -> bool:
        """True when a non-streamed job neither queues nor sleeps, so it needs no
        disconnect watcher: the fast path that keeps overhead benchmarks honest."""
        return self.scheduler.has_free_slot() and self._duration(job) <= 0

    async def run(self, job: Job) -> bool:
        """Returns True once done, so a caller racing it against a disconnect can tell."""
        try:
            async with self.scheduler.slot() as slot:
                slot.hold(job.prompt_tokens + job.completion_tokens)
                self.metrics.prompt_tokens += job.prompt_tokens
                duration = self._duration(job)
                if duration > 0:
                    await asyncio.sleep(duration)
        except asyncio.CancelledError:
            self.metrics.finished("abort", len(job.choices))
            raise
        self.metrics.generation_tokens += job.completion_tokens
        for choice in job.choices:
            self.metrics.finished(choice.finish_reason)
        return True

    async def stream(
        self, job: Job, chunks: ChunkFormat, *, include_usage: bool
    ) -> AsyncGenerator[bytes, None]:
        """SSE bytes for a job, one decode step per write. Queueing happens inside
        the stream, after headers, as with vLLM; leaving early counts as an abort."""
        finished = False
        try:
            async with self.scheduler.slot() as slot:
                slot.hold(job.prompt_tokens)
                self.metrics.prompt_tokens += job.prompt_tokens
                loop = asyncio.get_running_loop()
                first_token_at = loop.time() + self._ttft_s
                if self._ttft_s > 0:
                    await asyncio.sleep(self._ttft_s)
                out = [chunks.opening(len(job.choices))]
                for step in range(job.stream_steps):
                    if step and self._interval_s:
                        delay = first_token_at + step * self._interval_s - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    for index, choice in enumerate(job.choices):
                        last_step = max(1, choice.num_tokens) - 1
                        if step > last_step:
                            continue
                        piece = ""
                        if step < choice.num_tokens:
                            slot.hold(1)
                            self.metrics.generation_tokens += 1
                            piece = choice.pieces[step]
                        if step == last_step:
                            out.append(chunks.token(index, piece, choice))
                        elif piece:
                            out.append(chunks.token(index, piece))
                    if step < job.stream_steps - 1:
                        yield b"".join(out)
                        out = []
                finished = True
                for choice in job.choices:
                    self.metrics.finished(choice.finish_reason)
            if include_usage:
                out.append(chunks.usage(job.prompt_tokens, job.choices))
            out.append(DONE)
            yield b"".join(out)
        finally:
            if not finished:
                self.metrics.finished("abort", len(job.choices))
