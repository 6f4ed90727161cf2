"""How many workers a pool should have: pure policies, registered by name.

A policy is a function of (signals, state) with no clock and no I/O, because
the fleet monitor calls it inside a replaying orchestrator. What it must
remember between ticks (when load last dropped, since when the pool is idle)
lives in `AutoscalerState`, which turns into a plain dict so it can travel
through `continue_as_new`.

Every answer carries a `reason` for operators (it opens the monitor's `why`,
and its wording may change) and a stable `code` for programs and tests; the
codes are a contract:

- `steady`: the load fits the current size.
- `scale_up_for_load`: more workers, because the load needs them.
- `scale_up_for_batch`: more workers, because the batch backlog needs them to finish in time.
- `raised_to_min`: more workers, up to `min_workers`.
- `clamped_to_max`: fewer workers at once, down to a lowered `max_workers`.
- `scale_down_pending`: the load needs fewer, held until the stabilisation window ends.
- `scale_down_after_window`: fewer workers, the lower size having sufficed for the window.
- `idle_hold`: an idle pool kept at one worker until the idle period ends.
- `idle_to_zero`: an idle `min_workers 0` pool scaled to zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

from spotgate.fleet.batch_need import BatchNeed, batch_need
from spotgate.fleet.signals import PoolSignals
from spotgate.named_policy import NamedPolicy


@dataclass(frozen=True)
class AutoscalerConfig:
    """Tunables any autoscaler may read; one type for all, so the monitor passes them blindly."""

    min_workers: int = 0
    max_workers: int = 8
    target_concurrency_per_worker: float = 8.0
    scale_down_stabilisation_s: float = 300.0
    idle_to_zero_s: float = 600.0
    batch_drain_target_s: float = 1800.0
    """How soon a batch backlog should be worked off when no deadline asks for sooner."""
    batch_line_estimate_s: float = 2.0
    """Seconds one batch line holds a slot, until the batch runner has measured it."""
    batch_deadline_margin_s: float = 300.0
    """A backlog is planned to finish this long before its earliest batch expires."""

    def __post_init__(self) -> None:
        if self.min_workers < 0 or self.max_workers < max(self.min_workers, 1):
            raise ValueError("need 0 <= min_workers <= max_workers and max_workers >= 1")
        if self.target_concurrency_per_worker <= 0:
            raise ValueError("target_concurrency_per_worker must be positive")
        if self.batch_drain_target_s <= 0 or self.batch_line_estimate_s <= 0:
            raise ValueError("batch_drain_target_s and batch_line_estimate_s must be positive")
        if self.batch_deadline_margin_s < 0:
            raise ValueError("batch_deadline_margin_s must be >= 0")

    def clamp(self, n: int) -> int:
        return max(self.min_workers, min(self.max_workers, n))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AutoscalerConfig:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in (data or {}).items() if k in fields})


@dataclass(frozen=True)
class AutoscalerState:
    """The memory that makes hysteresis possible.

    `target` is the last target given (None before the first tick, when the
    pool's live size stands in for it). While the wanted size stays below it,
    `lower_since` is when that started and `lower_peak` the highest wanted
    size seen since: scaling down to the peak is safe because it covered the
    whole window. `idle_since` is when the pool last became free of load.
    """

    target: int | None = None
    lower_since: float | None = None
    lower_peak: int | None = None
    idle_since: float | None = None
    batch_seen_at: float | None = None
    """When batch lines last ran or waited: until the engines' heartbeats have caught up
    (`ENGINE_LAG_S`), their running count still holds batch lines."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AutoscalerState:
        data = data or {}

        def opt_int(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(value)

        def opt_float(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(
            target=opt_int("target"),
            lower_since=opt_float("lower_since"),
            lower_peak=opt_int("lower_peak"),
            idle_since=opt_float("idle_since"),
            batch_seen_at=opt_float("batch_seen_at"),
        )


ENGINE_LAG_S = 15.0
"""Engines report their running count in heartbeats (every 5 s on Azure): a few of them
after a batch ends, their count may still hold its lines."""

STEADY = "steady"
SCALE_UP_FOR_LOAD = "scale_up_for_load"
SCALE_UP_FOR_BATCH = "scale_up_for_batch"
RAISED_TO_MIN = "raised_to_min"
CLAMPED_TO_MAX = "clamped_to_max"
SCALE_DOWN_PENDING = "scale_down_pending"
SCALE_DOWN_AFTER_WINDOW = "scale_down_after_window"
IDLE_HOLD = "idle_hold"
IDLE_TO_ZERO = "idle_to_zero"
CODES = (
    STEADY,
    SCALE_UP_FOR_LOAD,
    SCALE_UP_FOR_BATCH,
    RAISED_TO_MIN,
    CLAMPED_TO_MAX,
    SCALE_DOWN_PENDING,
    SCALE_DOWN_AFTER_WINDOW,
    IDLE_HOLD,
    IDLE_TO_ZERO,
)
"""Every code an autoscaler may answer with (see the module docstring)."""


class ScaleTarget(NamedTuple):
    """A tuple so callers can write `target, code, reason, state = policy.decide(...)`."""

    target: int
    code: str
    reason: str
    state: AutoscalerState


class Autoscaler(NamedPolicy, family="autoscaler"):
    """Turns load into a worker count for one pool.

    `Autoscaler.make(name, config)` builds the one registered as `name` (default: queue-depth).
    """

    def __init__(self, config: AutoscalerConfig | None = None) -> None:
        self.config = config or AutoscalerConfig()

    def decide(self, signals: PoolSignals, state: AutoscalerState | None = None) -> ScaleTarget:
        raise NotImplementedError

    def demand(self, signals: PoolSignals, *, engines: bool = True) -> float:
        """Interactive work the pool must serve: running, queued at the gateway, queued in engines.

        Running is the larger of this gateway's count and the engines' own: with
        several gateway instances, the engines' heartbeats see everyone's traffic.
        Batch lines are not in it (they run on spare slots; `batch_need` sizes for them).
        The gateway counts them apart; the engines cannot, and their count lags a
        heartbeat behind lines that come and go many times a second, so while a batch
        runs only the gateway's count (summed over instances) is trusted.
        """
        running = float(signals.gateway_in_flight)
        if engines and signals.batch_in_flight == 0 and signals.batch_queue_depth == 0:
            running = max(running, signals.running)
        return running + signals.admission_queue_depth + signals.waiting

    def batch_need(self, signals: PoolSignals) -> BatchNeed:
        """Workers the batch backlog needs to finish inside its window (fleet/batch_need.py)."""
        cfg = self.config
        return batch_need(
            signals,
            slots_per_worker=cfg.target_concurrency_per_worker,
            drain_target_s=cfg.batch_drain_target_s,
            line_estimate_s=cfg.batch_line_estimate_s,
            deadline_margin_s=cfg.batch_deadline_margin_s,
        )

    @staticmethod
    def dump_state(state: AutoscalerState) -> dict[str, Any]:
        return state.to_dict()

    @staticmethod
    def load_state(data: Mapping[str, Any] | None) -> AutoscalerState:
        return AutoscalerState.from_dict(data)


class QueueDepth(Autoscaler, name="queue-depth", default=True):
    """Enough workers that each carries about `target_concurrency_per_worker` requests.

    Load is the gateway's in-flight requests plus its admission queue plus the
    engines' own waiting queues: all work that a worker will have to serve.
    A batch backlog asks for the workers it needs to finish in time, and the
    pool gets the larger of that and what the load needs: batch lines fill the
    slots interactive traffic leaves free, they do not add to it.
    Scale-up is immediate because a queued request is a user waiting; scale-down
    waits for the stabilisation window because a GPU worker takes minutes to come
    back, and load that dips between bursts must not cost a cold start.
    """

    def decide(self, signals: PoolSignals, state: AutoscalerState | None = None) -> ScaleTarget:
        cfg = self.config
        state = state or AutoscalerState()
        now = signals.now
        batch_now = signals.batch_in_flight > 0 or signals.batch_queue_depth > 0
        seen = now if batch_now else state.batch_seen_at
        load = self.demand(signals, engines=seen is None or now - seen >= ENGINE_LAG_S)
        batch = self.batch_need(signals)
        for_load = math.ceil(load / cfg.target_concurrency_per_worker)
        wanted = cfg.clamp(max(for_load, batch.workers))
        current = state.target if state.target is not None else signals.live_total
        idle = load <= 0 and batch.lines <= 0
        idle_since = (state.idle_since if state.idle_since is not None else now) if idle else None
        also = f", {batch.describe()}" if batch.lines else ""
        state = replace(state, idle_since=idle_since, batch_seen_at=seen)
        fresh = replace(state, lower_since=None, lower_peak=None)

        if current > cfg.max_workers:
            why = f"clamped to max_workers {cfg.max_workers}"
            return self._result(cfg.max_workers, CLAMPED_TO_MAX, why, fresh)
        if wanted >= current:
            if wanted > current:
                if wanted == cfg.min_workers and current < cfg.min_workers:
                    why = f"raised to min_workers {cfg.min_workers}"
                    return self._result(wanted, RAISED_TO_MIN, why, fresh)
                if batch.workers > for_load:
                    capped = f", max_workers {cfg.max_workers}" if wanted < batch.workers else ""
                    why = f"scale up: {batch.describe()}{capped}"
                    return self._result(wanted, SCALE_UP_FOR_BATCH, why, fresh)
                why = f"scale up: load {load:g} needs {wanted}{also}"
                return self._result(wanted, SCALE_UP_FOR_LOAD, why, fresh)
            why = f"steady: load {load:g} fits {current}{also}"
            return self._result(current, STEADY, why, fresh)

        if wanted == 0 and idle_since is not None and now - idle_since >= cfg.idle_to_zero_s:
            why = f"scale to zero: idle for {now - idle_since:.0f}s"
            return self._result(0, IDLE_TO_ZERO, why, fresh)
        floor = max(wanted, 1) if cfg.min_workers == 0 and current >= 1 else wanted
        if floor >= current:
            left = cfg.idle_to_zero_s - (now - (idle_since if idle_since is not None else now))
            return self._result(current, IDLE_HOLD, f"idle: zero after {left:.0f}s more", fresh)

        since = state.lower_since if state.lower_since is not None else now
        peak = max(floor, state.lower_peak if state.lower_peak is not None else floor)
        held = now - since
        if held >= cfg.scale_down_stabilisation_s:
            why = f"scale down: {peak} has sufficed for {held:.0f}s{also}"
            return self._result(peak, SCALE_DOWN_AFTER_WINDOW, why, fresh)
        left = cfg.scale_down_stabilisation_s - held
        why = f"holding {current}: load {load:g} needs {floor}, scale down in {left:.0f}s{also}"
        pending = replace(state, lower_since=since, lower_peak=peak)
        return self._result(current, SCALE_DOWN_PENDING, why, pending)

    @staticmethod
    def _result(target: int, code: str, reason: str, state: AutoscalerState) -> ScaleTarget:
        return ScaleTarget(target, code, reason, replace(state, target=target))
