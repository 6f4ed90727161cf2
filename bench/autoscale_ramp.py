"""Autoscaling under a load ramp and a spot eviction storm, on the local sim stack.

Starts `spotgate dev --engine sim --autoscale` with an empty pool, drives a
closed-loop ramp with `spotgate bench`'s own client (idle, light, heavy,
medium, then idle until the pool is back at zero), and halfway through the
heavy step gives half the ready workers a 5 s spot eviction notice. GET
/fleet is sampled every 0.5 s so the report can line up the load with what
the fleet monitor decided and when capacity actually arrived. Exit code 1 if
any request failed: scale-from-zero and evictions must cost latency, not
errors.

    .venv/bin/python bench/autoscale_ramp.py [--out bench/results] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import autoscale_report as report  # bench/ is sys.path[0] when this runs as a script
import httpx
from rich.console import Console
from rich.progress import Progress

from spotgate.adapters.local.process_compute import free_port
from spotgate.bench_command import BenchOptions, BenchRun, bench_client, progress_columns
from spotgate.bench_stats import StepPlan
from spotgate.cli_client import auth

HERE = Path(__file__).resolve().parent
KEY = "sk-bench-autoscale"
ADMIN_KEY = "sk-bench-autoscale-admin"
MODEL = "sim-model"
SAMPLE_S = 0.5
NOTICE_S = 5.0
HIGH_STEP = 2  # index of the heavy step in both profiles; the storm hits halfway through it
MAX_WORKERS = 6


@dataclass(frozen=True)
class Profile:
    """One run size. The monitor's windows shrink with the ramp so every phase still shows."""

    name: str
    steps: tuple[StepPlan, ...]
    tail_max_s: float
    scale_down_after_s: float
    idle_to_zero_s: float


def _steps(*pairs: tuple[int, float]) -> tuple[StepPlan, ...]:
    return tuple(StepPlan(clients, seconds) for clients, seconds in pairs)


FULL = Profile("full", _steps((0, 5), (4, 20), (24, 30), (8, 20)), 60, 10, 20)
QUICK = Profile("quick", _steps((0, 3), (4, 10), (24, 16), (8, 8)), 40, 5, 10)


def dev_command(port: int, profile: Profile) -> list[str]:
    """The stack under test, as a user would start it (flags, not private settings)."""
    return [
        *(sys.executable, "-m", "spotgate.cli", "dev", "--engine", "sim", "--autoscale"),
        *("--port", str(port), "--min-workers", "0", "--max-workers", str(MAX_WORKERS)),
        *("--target-concurrency", "4", "--scale-down-after", f"{profile.scale_down_after_s:g}"),
        *("--idle-to-zero", f"{profile.idle_to_zero_s:g}", "--tick", "1", "--provision-delay", "1"),
        *("--max-concurrency", "8", "--tokens-per-s", "100"),
    ]


class DevStack:
    """`spotgate dev` in its own process group, stopped like Ctrl-C, then made sure of.

    Workers run in sessions of their own (the dev process stops them), so a
    signal to the group does not reach them; `stop` therefore looks for
    worker processes still pointing at this stack's port and kills those by
    pid, and returns them so the run reports them instead of hiding them.
    """

    def __init__(self, command: list[str], port: int, log: Path) -> None:
        self.command, self.port, self.log = command, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = tempfile.mkdtemp(prefix="spotgate-autoscale-")  # its .spotgate/ lands here
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        env = {**os.environ, "SPOTGATE_DEV_API_KEY": KEY, "SPOTGATE_ADMIN_KEY": ADMIN_KEY}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"spotgate dev exited early; see {self.log}")
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
                fleet = httpx.get(f"{self.url}/fleet", headers=auth(ADMIN_KEY), timeout=2).json()
                if fleet["pools"][0]["monitor"] is not None:  # the monitor has ticked once
                    return
            time.sleep(0.2)
        raise SystemExit(f"spotgate dev not up after {timeout_s:g} s; see {self.log}")

    def worker_pids(self) -> list[int]:
        pattern = f"spotgate.cli worker .*--control-plane {self.url}( |$)"
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]

    def stop(self) -> list[int]:
        """Stops the stack; returns the worker pids that outlived it (killed here, by pid)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        deadline = time.monotonic() + 5  # a worker's own shutdown may still be under way
        while (left := self.worker_pids()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return left


@dataclass
class Recorder:
    """What the run saw, on one clock: seconds since the load schedule began.

    /fleet only lists the newest 20 decisions (20 s at a 1 s tick), so every
    poll folds them in by tick; worker ready times come from the registry's
    `state_changed_at`, which is finer than the 0.5 s sampling.
    """

    run: BenchRun
    t0_wall: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    decisions: dict[int, dict[str, Any]] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    eviction: dict[str, Any] | None = None
    load_end: float | None = None
    emptied: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> float:
        return time.perf_counter() - self.run.started_at

    def wall(self, epoch: float) -> float:
        return round(epoch - self.t0_wall, 3)

    def observe(self, t: float, fleet: dict[str, Any] | None, error: str | None = None) -> None:
        load = {"clients": self.run.target, "done": self.run.stats.done}
        sample: dict[str, Any] = {"t": round(t, 3), **load, "errors": self.run.stats.errors}
        if fleet is None:
            self.samples.append({**sample, "poll_error": error})
            return
        pool = next(p for p in fleet["pools"] if p["name"] == "default")
        monitor = pool.get("monitor") or {}
        sample |= {k: pool.get(k) for k in ("desired", "actual", "ready", "provisioning")}
        sample |= {"draining": pool["draining"], "tick": monitor.get("tick")}
        self.samples.append({**sample, "why": monitor.get("why")})
        live = sample["ready"] + sample["provisioning"] + sample["draining"]
        if self.load_end is not None and t >= self.load_end and live == 0:
            self.emptied.set()  # back to zero: nothing ready, booting or draining
        for d in fleet.get("decisions") or []:
            if d.get("pool") == "default" and d["tick"] not in self.decisions:
                keep = ("tick", "action", "reason", "desired", "ready", "provisioning", "draining")
                slim = {k: d.get(k) for k in (*keep, "provision", "new_evictions")}
                self.decisions[d["tick"]] = {"t": self.wall(d["observed_at"]), **slim}
        for w in fleet["workers"]:
            seen = self.workers.setdefault(
                w["id"], {"registered_at": self.wall(w["registered_at"]), "ready_at": None}
            )
            seen["state"] = w["state"]
            if w["state"] == "ready" and seen["ready_at"] is None:
                seen["ready_at"] = self.wall(w.get("state_changed_at") or time.time())


async def sample_fleet(admin: httpx.AsyncClient, rec: Recorder, progress: Progress) -> None:
    """Polls /fleet every SAMPLE_S and keeps the live display current."""
    load_task, fleet_task = progress.task_ids
    while True:
        started = time.perf_counter()
        try:
            response = await admin.get("/fleet")
            rec.observe(rec.now(), response.raise_for_status().json())
        except (httpx.HTTPError, ValueError) as exc:
            rec.observe(rec.now(), None, f"{type(exc).__name__}: {exc}")
        s, run = rec.samples[-1], rec.run
        info = (
            f"step {run.step + 1}/{len(run.steps)}, {s['clients']} clients, {s['done']:,} done, "
            f"{s['errors']} errors, {run.stats.rolling_rps(time.perf_counter()):.1f} req/s"
        )
        progress.update(load_task, completed=rec.now(), info=info)
        pool = " ".join(f"{k} {s.get(k)}" for k in ("desired", "ready", "provisioning", "draining"))
        why = str(s.get("why") or s.get("poll_error") or "")
        progress.update(fleet_task, info=f"{pool} | {why[:110]}")
        await asyncio.sleep(max(0.0, SAMPLE_S - (time.perf_counter() - started)))


async def eviction_storm(admin: httpx.AsyncClient, rec: Recorder, console: Console) -> None:
    """Halfway through the heavy step: a 5 s spot notice to half the ready workers at once."""
    plan = [s.plan.seconds or 0.0 for s in rec.run.steps]  # step edges drift by ms at most
    await asyncio.sleep(max(0.0, sum(plan[:HIGH_STEP]) + plan[HIGH_STEP] / 2 - rec.now()))
    try:
        fleet = (await admin.get("/fleet")).raise_for_status().json()
        ready = sorted(w["id"] for w in fleet["workers"] if w["state"] == "ready")
        victims = ready[: max(1, len(ready) // 2)] if ready else []
        rec.eviction = {
            "t": round(rec.now(), 3),
            "notice_s": NOTICE_S,
            "workers": victims,
            "ready_before": len(ready),
            "known": [w["id"] for w in fleet["workers"]],
        }
        for worker in victims:
            notice = {"notice_s": NOTICE_S}
            (await admin.post(f"/fleet/workers/{worker}/evict", json=notice)).raise_for_status()
        names = ", ".join(victims)
        console.print(f"[red]eviction storm[/red] at {rec.eviction['t']:.1f} s: {names}")
    except (httpx.HTTPError, ValueError) as exc:  # recorded: the run goes on, the report says so
        console.print(f"[red]eviction storm failed: {exc}[/red]")
        rec.eviction = {**(rec.eviction or {}), "error": f"{type(exc).__name__}: {exc}"}


async def drive(url: str, profile: Profile, console: Console) -> dict[str, Any]:
    """Runs the schedule plus the idle tail; returns the run document (without the report)."""
    options = BenchOptions(url=url, model=MODEL, key=KEY, ramp=profile.steps, timeout_s=60.0)
    total = sum(s.seconds or 0.0 for s in profile.steps) + profile.tail_max_s
    async with (
        bench_client(options) as client,
        httpx.AsyncClient(base_url=url, headers=auth(ADMIN_KEY), timeout=10.0) as admin,
    ):
        run = BenchRun(options, client)
        rec = Recorder(run, time.time() - (time.perf_counter() - run.started_at))
        with Progress(*progress_columns(), console=console) as progress:
            progress.add_task("load ", total=total, info="")
            progress.add_task("fleet", total=None, info="")
            tasks = [
                asyncio.create_task(sample_fleet(admin, rec, progress)),
                asyncio.create_task(eviction_storm(admin, rec, progress.console)),
            ]
            try:
                summary = await run.run()
                rec.load_end = (run.steps[-1].ended_at or time.perf_counter()) - run.started_at
                with contextlib.suppress(TimeoutError):  # the report says "not reached"
                    await asyncio.wait_for(rec.emptied.wait(), profile.tail_max_s)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    windows = [
        {
            "label": f"{i + 1}: {s.plan.concurrency} clients"
            if s.plan.concurrency
            else f"{i + 1}: idle",
            "clients": s.plan.concurrency,
            "start": round((s.started_at or run.started_at) - run.started_at, 3),
            "end": round((s.ended_at or run.started_at) - run.started_at, 3),
        }
        for i, s in enumerate(run.steps)
    ]
    tail = {"label": "tail: idle → 0", "clients": 0, "start": round(rec.load_end or 0.0, 3)}
    windows.append(tail | {"end": round(rec.now(), 3)})
    return {
        "samples": rec.samples,
        "decisions": [rec.decisions[k] for k in sorted(rec.decisions)],
        "workers": rec.workers,
        "eviction": rec.eviction,
        "windows": windows,
        "bench": summary,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true", help="about 1 minute instead of 2-3")
    args = parser.parse_args()
    profile = QUICK if args.quick else FULL
    console = Console() if sys.stdout.isatty() else Console(width=160)  # a log keeps its columns
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    stack = DevStack(dev_command(port, profile), port, args.out / "autoscale_ramp.dev.log")
    ramp = ",".join(f"{s.concurrency}:{s.seconds:g}" for s in profile.steps)
    console.print(f"autoscale ramp ({profile.name}): {ramp}, then idle to zero; stack {stack.url}")
    try:
        stack.start()
        doc = asyncio.run(drive(stack.url, profile, console))
    finally:
        doc_leftovers = stack.stop()
    title = (
        f"spotgate sim autoscale ramp ({profile.name}): target 4/worker, max {MAX_WORKERS}, "
        f"evict half the ready workers mid-peak with {NOTICE_S:g} s notice"
    )
    doc = {
        "command": shlex.join(["spotgate", *stack.command[3:]]),
        "settings": {
            "profile": profile.name,
            "ramp": [[s.concurrency, s.seconds] for s in profile.steps],
            "tail_max_s": profile.tail_max_s,
            "high_step": HIGH_STEP,
            "eviction_notice_s": NOTICE_S,
            "sample_interval_s": SAMPLE_S,
            "max_tokens": BenchOptions().max_tokens,
            "stream": True,
            "title": title,
        },
        **doc,
        "leftover_worker_pids": doc_leftovers,
    }
    doc["steps"] = report.step_rows(doc)
    doc["headline"] = report.headline(doc)
    console.print(report.render_steps(doc["steps"]))
    console.print(report.render_headline(doc["headline"]))
    json_path, png_path = args.out / "autoscale_ramp.json", args.out / "autoscale_ramp.png"
    json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    report.plot(doc, png_path)
    console.print(f"wrote {json_path}, {png_path} (stack log: {stack.log})")
    if doc_leftovers:
        console.print(f"[red]worker processes outlived the stack: {doc_leftovers}[/red]")
    return 1 if doc["bench"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
