"""How many workers a pool's batch backlog needs to finish in time: pure, for the autoscaler.

Batch lines run only on the slots interactive traffic leaves free, so the
backlog is not load to add on top: the autoscaler sizes the pool for the
larger of the two. A backlog needs its slot-seconds (lines x seconds a line
holds a slot) spread over the time it may take: the target drain time, or
less when the earliest batch's deadline, minus a safety margin, comes first.
It gets one worker at least while any line waits, or a batch with a day's
window would wait for interactive traffic that may never come.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spotgate.fleet.signals import PoolSignals

MIN_DRAIN_S = 60.0
"""A deadline that is (nearly) past still leaves this long to drain: the backlog then asks
for as much as the pool may have instead of dividing by zero."""


@dataclass(frozen=True)
class BatchNeed:
    lines: int = 0
    workers: int = 0
    drain_s: float = 0.0
    line_s: float = 0.0
    deadline_s: float | None = None
    """Seconds to the earliest deadline, when that (not the target) set `drain_s`."""

    def describe(self) -> str:
        """The words an operator reads in the monitor's `why`; empty with no backlog."""
        if self.lines <= 0:
            return ""
        text = (
            f"batch backlog {self.lines} lines needs {self.workers} "
            f"to finish in {_span(self.drain_s)}"
        )
        if self.deadline_s is not None:
            text += f" (deadline in {_span(self.deadline_s)})"
        return text


def batch_need(
    signals: PoolSignals,
    *,
    slots_per_worker: float,
    drain_target_s: float,
    line_estimate_s: float,
    deadline_margin_s: float,
) -> BatchNeed:
    lines = signals.batch_queue_depth
    if lines <= 0:
        return BatchNeed()
    measured = signals.batch_line_s
    line_s = measured if measured is not None and measured > 0 else line_estimate_s
    drain_s, deadline_s = drain_target_s, signals.batch_deadline_s
    if deadline_s is not None and deadline_s - deadline_margin_s < drain_target_s:
        drain_s = deadline_s - deadline_margin_s
    else:
        deadline_s = None
    drain_s = max(drain_s, MIN_DRAIN_S)
    workers = max(1, math.ceil(lines * line_s / (slots_per_worker * drain_s)))
    return BatchNeed(lines, workers, drain_s, line_s, deadline_s)


def _span(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{max(seconds, 0):.0f}s"
