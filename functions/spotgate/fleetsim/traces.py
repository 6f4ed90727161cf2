"""Requests to replay: the Azure LLM inference trace 2023, or a synthetic load of a known shape.

A trace is arrival times and token counts, nothing else: what a fleet must
serve. The Azure traces are real production load (about an hour each,
packaged with their attribution in `traces/README.md`); the generators give
shapes the real hour does not have (a steady Poisson rate, a day's curve
compressed, bursts), seeded so a run can be repeated exactly.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

AZURE_TRACES = {
    "conv": "AzureLLMInferenceTrace_conv.csv",
    "code": "AzureLLMInferenceTrace_code.csv",
}
SYNTHETIC = ("poisson", "diurnal", "bursty")


@dataclass(frozen=True, slots=True)
class TraceRequest:
    at: float
    """Seconds from the start of the trace."""
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Trace:
    name: str
    requests: tuple[TraceRequest, ...]

    @property
    def duration_s(self) -> float:
        return self.requests[-1].at if self.requests else 0.0

    def window(self, start_s: float = 0.0, duration_s: float | None = None) -> Trace:
        """The requests in [start, start + duration), re-timed to start at 0."""
        end = math.inf if duration_s is None else start_s + duration_s
        picked = tuple(
            TraceRequest(r.at - start_s, r.prompt_tokens, r.completion_tokens)
            for r in self.requests
            if start_s <= r.at < end
        )
        return Trace(self.name, picked)

    def scaled(self, rate: float) -> Trace:
        """The same requests `rate` times as fast (2.0: twice the load in half the time)."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        return Trace(
            f"{self.name} x{rate:g}",
            tuple(
                TraceRequest(r.at / rate, r.prompt_tokens, r.completion_tokens)
                for r in self.requests
            ),
        )


def _parse_time(text: str) -> float:
    # the trace has 7 fractional digits; datetime takes 6
    whole, _, fraction = text.strip().partition(".")
    moment = datetime.fromisoformat(whole)
    return moment.timestamp() + (float("0." + fraction) if fraction else 0.0)


def read_azure_trace(path: Path | str, name: str | None = None) -> Trace:
    """A CSV with TIMESTAMP, ContextTokens, GeneratedTokens (the Azure trace's columns)."""
    rows: list[tuple[float, int, int]] = []
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                rows.append(
                    (
                        _parse_time(row["TIMESTAMP"]),
                        int(row["ContextTokens"]),
                        int(row["GeneratedTokens"]),
                    )
                )
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: not a trace row ({exc})") from None
    rows.sort()
    start = rows[0][0] if rows else 0.0
    requests = tuple(TraceRequest(at - start, max(1, p), max(1, g)) for at, p, g in rows)
    return Trace(name or Path(path).stem, requests)


def load_trace(name: str, *, seed: int = 0, duration_s: float = 3600.0, rate: float = 5.0) -> Trace:
    """`conv` or `code` (the Azure traces), a path to a CSV in their format, or a synthetic
    shape (`poisson`, `diurnal`, `bursty`) at `rate` requests a second on average."""
    if name in AZURE_TRACES:
        packaged = resources.files(__package__ or "spotgate.fleetsim").joinpath("traces")
        with resources.as_file(packaged.joinpath(AZURE_TRACES[name])) as path:
            return read_azure_trace(path, name)
    if name in SYNTHETIC:
        return synthetic(name, rate=rate, duration_s=duration_s, seed=seed)
    path = Path(name)
    if path.exists():
        return read_azure_trace(path)
    choices = ", ".join([*AZURE_TRACES, *SYNTHETIC])
    raise ValueError(f"no trace {name!r}: use one of {choices}, or a CSV path")


def synthetic(
    shape: str,
    *,
    rate: float,
    duration_s: float,
    seed: int = 0,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> Trace:
    """Arrivals of `shape` averaging `rate` a second; token sizes drawn from `sizes`
    (pairs of prompt and completion tokens), by default the conversation trace's."""
    rng = random.Random(seed)
    pool = (
        list(sizes)
        if sizes
        else [(r.prompt_tokens, r.completion_tokens) for r in load_trace("conv").requests]
    )
    times = list(_arrivals(shape, rate, duration_s, rng))
    requests = tuple(TraceRequest(t, *rng.choice(pool)) for t in times)
    return Trace(f"{shape} {rate:g}/s", requests)


def _arrivals(shape: str, rate: float, duration_s: float, rng: random.Random) -> Iterator[float]:
    """A non-homogeneous Poisson process by thinning: candidates at the peak rate, each kept
    with probability rate(t) / peak."""
    if rate <= 0 or duration_s <= 0:
        return
    level: Callable[[float], float]
    if shape == "poisson":
        peak = rate

        def level(t: float) -> float:
            return rate

    elif shape == "diurnal":  # a day's curve in the window: trough a quarter of the peak
        peak = 1.6 * rate

        def level(t: float) -> float:
            return rate * (1 - 0.6 * math.cos(2 * math.pi * t / duration_s))

    elif shape == "bursty":  # a 60 s burst at 4x every 10 minutes, the rest slower
        base = rate / 1.3

        def level(t: float) -> float:
            return base * 4 if t % 600 < 60 else base

        peak = base * 4
    else:
        raise ValueError(f"unknown shape {shape!r}: one of {', '.join(SYNTHETIC)}")
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= duration_s:
            return
        if rng.random() * peak <= level(t):
            yield t
