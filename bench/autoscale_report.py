"""Turns an autoscale_ramp run document into step stats, headline numbers, a table and a figure.

Kept apart from the runner so every number is derived from the JSON the run
writes (samples, decisions, workers, eviction, step windows) and nothing
else: a saved `autoscale_ramp.json` can be re-rendered or re-plotted later,
and the table can never disagree with the file. All times are seconds since
the load schedule began (its first, idle step included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")  # headless: no display on a bench box, and no GUI event loop needed

import matplotlib.pyplot as plt
from rich.table import Table

T = TypeVar("T")
RATE_WINDOW_S = 2.0
"""Req/s in the figure: completions over the last 2 s; short enough to show a 20 s step's edges."""


def first(items: Iterable[T], predicate: Callable[[T], bool]) -> T | None:
    return next((item for item in items if predicate(item)), None)


def _since(t: float | None, start: float | None) -> float | None:
    return None if t is None or start is None else round(t - start, 2)


def rates(samples: list[dict[str, Any]]) -> list[float]:
    """Req/s at each sample, from the completion counter (the samples have no per-request data)."""
    out: list[float] = []
    for i, sample in enumerate(samples):
        t: float = sample["t"]
        older = (s for s in reversed(samples[:i]) if t - s["t"] >= RATE_WINDOW_S)
        base = next(older, samples[0])
        span = t - base["t"]
        out.append((sample["done"] - base["done"]) / span if span > 0 else 0.0)
    return out


def _ok(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples where /fleet answered (a failed poll is kept in the JSON but carries no levels)."""
    return [s for s in samples if s.get("ready") is not None]


def step_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per ramp step plus the idle tail: the bench's numbers next to the pool's range."""
    bench_steps = doc["bench"]["steps"]
    samples = _ok(doc["samples"])
    rows = []
    for i, window in enumerate(doc["windows"]):
        inside = [s["ready"] for s in samples if window["start"] <= s["t"] < window["end"]]
        bench = bench_steps[i] if i < len(bench_steps) else None
        rows.append(
            {
                "step": window["label"],
                "clients": window["clients"],
                "seconds": round(window["end"] - window["start"], 2),
                "requests": bench["requests"] if bench else 0,
                "errors": bench["errors"] if bench else 0,
                "req_per_s": bench["req_per_s"] if bench else 0.0,
                "p50_ms": bench["latency_ms"]["p50"] if bench else None,
                "p99_ms": bench["latency_ms"]["p99"] if bench else None,
                "max_ready": max(inside, default=None),
                "min_ready": min(inside, default=None),
            }
        )
    return rows


def headline(doc: dict[str, Any]) -> dict[str, Any]:
    """The few numbers that say whether the fleet kept up; None means "did not happen"."""
    windows, samples = doc["windows"], _ok(doc["samples"])
    ready_at = sorted(w["ready_at"] for w in doc["workers"].values() if w["ready_at"] is not None)
    load = first(windows, lambda w: w["clients"] > 0)
    high = windows[doc["settings"]["high_step"]]
    load_end = windows[-1]["start"]  # the idle tail starts when the last clients are told to stop
    out: dict[str, Any] = {
        "load_to_first_ready_s": _since(
            first(ready_at, lambda t: load is not None and t >= load["start"]),
            load["start"] if load else None,
        ),
        "high_step_to_first_new_ready_s": _since(
            first(ready_at, lambda t: t >= high["start"]), high["start"]
        ),
    }
    ev = doc.get("eviction") or {}
    before = [s for s in samples if high["start"] <= s["t"] < ev.get("t", high["end"])]
    peak = max((s["ready"] for s in before), default=None)
    reached = first(before, lambda s: s["ready"] == peak)
    out["high_step_to_peak_ready_s"] = _since(reached["t"] if reached else None, high["start"])
    out["high_step_peak_ready"] = peak
    if ev.get("t") is not None:
        out.update(_eviction_numbers(doc, ev, samples))
    zero = first(
        samples,
        lambda s: s["t"] >= load_end and s["ready"] + s["provisioning"] + s["draining"] == 0,
    )
    out["load_stop_to_zero_s"] = _since(zero["t"] if zero else None, load_end)
    desired = [s["desired"] for s in samples if s["desired"] is not None]
    out["desired_path"] = "→".join(
        str(d) for i, d in enumerate(desired) if i == 0 or d != desired[i - 1]
    )
    out["failed_requests"] = doc["bench"]["errors"]
    out["errors_by_kind"] = doc["bench"]["errors_by_kind"]
    out["leftover_worker_processes"] = len(doc.get("leftover_worker_pids") or [])
    return out


def _eviction_numbers(
    doc: dict[str, Any], ev: dict[str, Any], samples: list[dict[str, Any]]
) -> dict[str, Any]:
    """Eviction -> replacement asked for (monitor decision or a provisioning rise) -> ready."""
    t = ev["t"]
    decisions = sorted(doc["decisions"], key=lambda d: d["t"])
    # its own `provision` list, not the word in `reason`: "provisioning 0->1" has it too
    asked = first(decisions, lambda d: d["t"] >= t and bool(d["provision"]))
    previous = first(reversed(samples), lambda s: s["t"] < t)
    level = previous["provisioning"] if previous else 0
    rise = first(samples, lambda s: s["t"] >= t and s["provisioning"] > level)
    candidates = [float(x["t"]) for x in (asked, rise) if x is not None]
    known = set(ev.get("known") or ())
    new_ready = sorted(
        w["ready_at"]
        for wid, w in doc["workers"].items()
        if wid not in known and w["ready_at"] is not None and w["ready_at"] >= t
    )
    # the ready count lags the notice by up to a sample: restored means after it has dipped
    dip = first(samples, lambda s: s["t"] >= t and s["ready"] < ev["ready_before"])
    restored = dip and first(
        samples, lambda s: s["t"] > dip["t"] and s["ready"] >= ev["ready_before"]
    )
    return {
        "evicted_workers": len(ev.get("workers") or ()),
        "eviction_to_decision_provision_s": _since(asked["t"] if asked else None, t),
        "eviction_to_provisioning_rise_s": _since(rise["t"] if rise else None, t),
        "eviction_to_replacement_requested_s": _since(min(candidates, default=None), t),
        "eviction_to_replacement_ready_s": _since(new_ready[0] if new_ready else None, t),
        "eviction_to_ready_restored_s": _since(restored["t"] if restored else None, t),
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def render_steps(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="autoscale ramp: steps")
    columns = ("step", "clients", "seconds", "requests", "errors", "req/s", "p50 ms", "p99 ms")
    for column in (*columns, "max ready", "min ready"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for r in rows:
        errors = f"[red]{r['errors']}[/red]" if r["errors"] else "0"
        table.add_row(
            r["step"],
            str(r["clients"]),
            _fmt(r["seconds"]),
            f"{r['requests']:,}",
            errors,
            _fmt(r["req_per_s"]),
            _fmt(r["p50_ms"]),
            _fmt(r["p99_ms"]),
            _fmt(r["max_ready"]),
            _fmt(r["min_ready"]),
        )
    return table


def render_headline(numbers: dict[str, Any]) -> Table:
    table = Table(title="autoscale ramp: headline")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in numbers.items():
        style = "red" if key in ("failed_requests", "leftover_worker_processes") and value else ""
        text = _fmt(value, " s" if key.endswith("_s") else "")
        table.add_row(key, f"[{style}]{text}[/{style}]" if style else text)
    return table


def plot(doc: dict[str, Any], path: Path) -> None:
    """Load on top, pool below, one time axis; dotted lines at step changes, red at the storm."""
    samples = _ok(doc["samples"])
    t = [s["t"] for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 7), height_ratios=(1, 1.2))
    top.step(t, [s["clients"] for s in samples], where="post", color="tab:blue", label="clients")
    top.set_ylabel("clients (closed loop)")
    rate_axis = top.twinx()
    rate_axis.plot(t, rates(samples), color="tab:orange", label=f"req/s ({RATE_WINDOW_S:g} s)")
    rate_axis.set_ylabel("requests / s")
    lines = top.get_legend_handles_labels()[0] + rate_axis.get_legend_handles_labels()[0]
    top.legend(lines, [str(line.get_label()) for line in lines], loc="upper right")
    for key, color, style, z in (
        ("ready", "tab:green", "-", 2),
        ("provisioning", "tab:olive", "-", 2),
        ("draining", "tab:purple", ":", 2),
        ("desired", "black", "--", 3),  # on top: where ready meets it, both stay visible
    ):
        values = [s[key] if s[key] is not None else float("nan") for s in samples]
        bottom.step(t, values, where="post", color=color, ls=style, label=key, lw=1.6, zorder=z)
    bottom.set_ylabel("workers")
    bottom.set_xlabel("seconds since the load schedule began")
    bottom.legend(loc="upper right")
    bottom.yaxis.get_major_locator().set_params(integer=True)
    for window in doc["windows"][1:]:
        for axis in (top, bottom):
            axis.axvline(window["start"], color="grey", linestyle=":", lw=1)
        top.annotate(
            f" {window['clients']}",
            (window["start"], 0.97),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            color="grey",
            va="top",
        )
    ev = doc.get("eviction") or {}
    if ev.get("t") is not None:
        for axis in (top, bottom):
            axis.axvline(ev["t"], color="red", linestyle="--", lw=1.2)
        bottom.annotate(
            f"evict {len(ev['workers'])} ({ev['notice_s']:g} s notice)",
            (ev["t"], 0.5),
            xycoords=("data", "axes fraction"),
            color="red",
            fontsize=9,
            ha="right",
            va="center",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    fig.suptitle(doc["settings"]["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
