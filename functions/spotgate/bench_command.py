"""`spotgate bench`: closed-loop chat load against a running stack, for operators and scripts.

Closed loop (each client sends its next request when the last one answers)
because that is how interactive callers behave and because it can never
outrun the stack into an unbounded client-side queue. A `--ramp` schedule
changes the number of clients over time, which is how an operator watches the
autoscaler grow and shrink the pool. Requests are sampled (temperature 0.7)
and carry a nonce, so the gateway's response cache never answers them unless
`--cacheable` asks for exactly that. Any failed request makes the exit code
1, so the command can gate a deploy script.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from spotgate.bench_requests import chat_body, send_plain, send_streamed
from spotgate.bench_stats import (
    BenchStats,
    RequestResult,
    StepPlan,
    StepState,
    render_steps,
    render_summary,
)
from spotgate.cli_client import auth, connect_or_exit

DEFAULT_MODEL = "smollm2"
DEFAULT_PROMPT = "Explain in a few sentences why spot GPUs are cheaper than on-demand ones."
TICK_S = 0.25


@dataclass(frozen=True)
class BenchOptions:
    """One run. Empty `url`/`model` and a None `key` are discovered from the environment."""

    url: str = ""
    model: str = ""
    key: str | None = None
    concurrency: int = 8
    duration_s: float = 30.0
    requests: int | None = None
    stream: bool = True
    max_tokens: int = 64
    prompt: str = DEFAULT_PROMPT
    ramp: tuple[StepPlan, ...] = ()
    cacheable: bool = False
    timeout_s: float = 120.0

    def plan(self) -> list[StepPlan]:
        """The schedule: the ramp, else one step of `concurrency` for the duration or N requests."""
        if self.ramp:
            return list(self.ramp)
        seconds = None if self.requests is not None else self.duration_s
        return [StepPlan(self.concurrency, seconds)]

    def settings(self) -> dict[str, Any]:
        """What was asked for, recorded at the top of the JSON so results can be compared."""
        return {
            "url": self.url,
            "model": self.model,
            "stream": self.stream,
            "cacheable": self.cacheable,
            "max_tokens": self.max_tokens,
            "concurrency": max(s.concurrency for s in self.plan()),
            "planned_duration_s": _planned_seconds(self.plan()),
            "planned_requests": self.requests,
            "ramp": [[s.concurrency, s.seconds] for s in self.ramp] or None,
        }


def _planned_seconds(plan: list[StepPlan]) -> float | None:
    """How long the schedule runs, or None when it ends by running out of requests."""
    return None if any(s.seconds is None for s in plan) else sum(s.seconds or 0.0 for s in plan)


def parse_ramp(text: str) -> tuple[StepPlan, ...]:
    """`"4:10,16:20,2:30"` -> steps; a 0 step is allowed (an idle gap to watch scale-down)."""
    steps: list[StepPlan] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        count, sep, seconds = part.partition(":")
        try:
            step = StepPlan(int(count), float(seconds))
        except ValueError:
            raise ValueError(f"bad ramp step {part!r}: use concurrency:seconds") from None
        seconds_ok = step.seconds is not None and 0 < step.seconds < math.inf
        if not sep or step.concurrency < 0 or not seconds_ok:
            raise ValueError(f"bad ramp step {part!r}: concurrency >= 0, seconds > 0")
        steps.append(step)
    if text.strip() and not any(s.concurrency > 0 for s in steps):
        raise ValueError("a ramp needs at least one step with clients")
    return tuple(steps)


def resolve_model(url: str, key: str | None, explicit: str) -> str:
    """The asked-for model, else smollm2 if served, else the stack's first model (a sim stack)."""
    if explicit:
        return explicit
    try:
        response = httpx.get(f"{url}/v1/models", headers=auth(key), timeout=5.0)
        ids = [str(m["id"]) for m in response.json()["data"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return DEFAULT_MODEL
    return DEFAULT_MODEL if DEFAULT_MODEL in ids or not ids else ids[0]


@dataclass(frozen=True)
class LiveView:
    """What the progress display shows, read off the run every tick."""

    done: int
    errors: int
    concurrency: int
    in_flight: int
    rps: float
    elapsed_s: float
    step: int
    steps: int


class BenchRun:
    """The clients, the schedule and the counters of one run."""

    def __init__(self, options: BenchOptions, client: httpx.AsyncClient) -> None:
        self.options = options
        self.client = client
        self.steps = [StepState(plan) for plan in options.plan()]
        self.started_at = time.perf_counter()
        self.stats = BenchStats(started_at=self.started_at)
        self.target = 0
        self.step = 0
        self.in_flight = 0
        self.issued = 0
        self._run_id = secrets.token_hex(4)

    def view(self) -> LiveView:
        now = time.perf_counter()
        return LiveView(
            done=self.stats.done,
            errors=self.stats.errors,
            concurrency=self.target,
            in_flight=self.in_flight,
            rps=self.stats.rolling_rps(now),
            elapsed_s=now - self.started_at,
            step=self.step,
            steps=len(self.steps),
        )

    def _exhausted(self) -> bool:
        return self.options.requests is not None and self.issued >= self.options.requests

    async def run(self) -> dict[str, Any]:
        """Walks the schedule; a client above the current step's count stops after its request."""
        tasks: dict[int, asyncio.Task[None]] = {}
        for index, state in enumerate(self.steps):
            if self._exhausted():
                break
            self.step, self.target = index, state.plan.concurrency
            state.started_at = time.perf_counter()
            for worker in range(self.target):
                task = tasks.get(worker)
                if task is None or task.done():
                    tasks[worker] = asyncio.create_task(self._client(worker))
            active = [tasks[w] for w in range(self.target)]
            if state.plan.seconds is None:
                await asyncio.gather(*active)
            elif active:  # returns early only when the requests have run out
                await asyncio.wait(active, timeout=state.plan.seconds)
            else:
                await asyncio.sleep(state.plan.seconds)
            state.ended_at = time.perf_counter()
        self.target = 0
        await asyncio.gather(*tasks.values())
        wall_s = time.perf_counter() - self.started_at
        return self.stats.summary(wall_s, self.steps, self.options.settings())

    async def _client(self, worker: int) -> None:
        while worker < self.target and not self._exhausted():
            self.issued += 1
            await self._one(self.issued)

    async def _one(self, seq: int) -> None:
        options, step = self.options, self.step
        nonce = None if options.cacheable else f"{self._run_id}-{seq}"
        body = chat_body(
            options.model, options.prompt, options.max_tokens, stream=options.stream, nonce=nonce
        )
        self.in_flight += 1
        state = self.steps[step]
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        started = time.perf_counter()
        send = send_streamed if options.stream else send_plain
        try:
            result = await send(self.client, body, options.key, step)
        except httpx.HTTPError as exc:
            result = RequestResult(step, time.perf_counter() - started, f"transport:{_name(exc)}")
        except Exception as exc:  # a client must not die and silently lower the load
            result = RequestResult(step, time.perf_counter() - started, f"client:{_name(exc)}")
        finally:
            self.in_flight -= 1
            state.in_flight -= 1
        self.stats.add(result, time.perf_counter())


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def bench_client(options: BenchOptions) -> httpx.AsyncClient:
    """The load client: one connection per client at the schedule's peak, `options.timeout_s`."""
    peak = max(1, *(s.concurrency for s in options.plan()))
    limits = httpx.Limits(max_connections=peak, max_keepalive_connections=peak)
    timeout = httpx.Timeout(options.timeout_s, connect=min(10.0, options.timeout_s))
    return httpx.AsyncClient(base_url=options.url, timeout=timeout, limits=limits)


def progress_columns() -> tuple[ProgressColumn, ...]:
    """The live display's columns: spinner, task name, bar, a free-text `info` field, clock."""
    return (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )


async def run_bench(
    options: BenchOptions, on_tick: Callable[[LiveView], None] | None = None
) -> dict[str, Any]:
    """Runs one benchmark against `options.url` (already resolved) and returns its summary."""
    async with bench_client(options) as client:
        run = BenchRun(options, client)
        if on_tick is None:
            return await run.run()

        async def tick() -> None:
            while True:
                on_tick(run.view())
                await asyncio.sleep(TICK_S)

        ticker = asyncio.create_task(tick())
        try:
            summary = await run.run()
        finally:
            ticker.cancel()
        on_tick(run.view())
        return summary


def bench_main(console: Console, options: BenchOptions, json_path: Path | None = None) -> int:
    """The `bench` command: resolve where to go, run with a live display, report; 1 on failures."""
    connection = connect_or_exit(options.url)
    url, key = connection.url, options.key or connection.api_key
    options = replace(options, url=url, key=key, model=resolve_model(url, key, options.model))
    plan = options.plan()
    by_requests = options.requests is not None
    planned = _planned_seconds(plan)
    total = float(options.requests) if options.requests is not None else (planned or 0.0)
    mode = "stream" if options.stream else "no-stream"
    console.print(f"bench [bold]{options.model}[/bold] at {url} ({mode}, {len(plan)} step(s))")
    with Progress(*progress_columns(), console=console) as progress:
        task = progress.add_task("bench", total=total, info="")

        def show(view: LiveView) -> None:
            info = (
                f"{view.done:,} done, {view.errors:,} errors, concurrency {view.concurrency} "
                f"({view.in_flight} in flight), {view.rps:,.1f} req/s, "
                f"step {view.step + 1}/{view.steps}"
            )
            done = float(view.done) if by_requests else min(view.elapsed_s, total)
            progress.update(task, completed=done, info=info)

        summary = asyncio.run(run_bench(options, show))
    console.print(render_summary(summary))
    if len(summary["steps"]) > 1:
        console.print(render_steps(summary))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=2) + "\n")
        console.print(f"results written to {json_path}")
    return 1 if summary["errors"] else 0
