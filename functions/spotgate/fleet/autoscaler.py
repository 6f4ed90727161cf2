"""How many workers a pool should have: pure policies, registered by name.

A policy is a function of (signals, state) with no clock and no I/O, because
the fleet monitor calls it inside a replaying orchestrator. What it must
remember between ticks (when load last dropped, since when the pool is idle)
lives in `AutoscalerState`, which turns into a plain dict so it can travel
through `continue_as_new`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, NamedTuple

from spotgate.fleet.signals import PoolSignals


@dataclass(frozen=True)
class AutoscalerConfig:
    """Tunables any autoscaler may read; one type for all, so the monitor passes them blindly."""

    min_workers: int = 0
    max_workers: int = 8
    target_concurrency_per_worker: float = 8.0
    scale_down_stabilisation_s: float = 300.0
    idle_to_zero_s: float = 600.0

    def __post_init__(self) -> None:
        if self.min_workers < 0 or self.max_workers < max(self.min_workers, 1):
            raise ValueError("need 0 <= min_workers <= max_workers and max_workers >= 1")
        if self.target_concurrency_per_worker <= 0:
            raise ValueError("target_concurrency_per_worker must be positive")

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
        )


class ScaleTarget(NamedTuple):
    """A tuple so callers can write `target, reason, state = policy.decide(...)`."""

    target: int
    reason: str
    state: AutoscalerState


class Autoscaler:
    """Turns load into a worker count for one pool."""

    registry: ClassVar[dict[str, type[Autoscaler]]] = {}
    name: ClassVar[str]
    default: ClassVar[str] = "queue-depth"

    def __init_subclass__(cls, *, name: str, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name
        Autoscaler.registry[name] = cls

    def __init__(self, config: AutoscalerConfig | None = None) -> None:
        self.config = config or AutoscalerConfig()

    @classmethod
    def make(cls, name: str | None = None, config: AutoscalerConfig | None = None) -> Autoscaler:
        name = name or cls.default
        try:
            policy = cls.registry[name]
        except KeyError:
            known = ", ".join(sorted(cls.registry))
            raise ValueError(f"unknown autoscaler {name!r}; known: {known}") from None
        return policy(config)

    def decide(self, signals: PoolSignals, state: AutoscalerState | None = None) -> ScaleTarget:
        raise NotImplementedError

    def load(self, signals: PoolSignals) -> float:
        """Work the pool must serve: running, queued at the gateway, queued in engines, batch.

        Running is the larger of this gateway's count and the engines' own: with
        several gateway instances, the engines' heartbeats see everyone's traffic.
        """
        running = max(float(signals.gateway_in_flight), signals.running)
        return running + signals.admission_queue_depth + signals.waiting + signals.batch_queue_depth

    @staticmethod
    def dump_state(state: AutoscalerState) -> dict[str, Any]:
        return state.to_dict()

    @staticmethod
    def load_state(data: Mapping[str, Any] | None) -> AutoscalerState:
        return AutoscalerState.from_dict(data)


class QueueDepth(Autoscaler, name="queue-depth"):
    """Enough workers that each carries about `target_concurrency_per_worker` requests.

    Load is the gateway's in-flight requests plus its admission queue plus the
    engines' own waiting queues plus queued batch jobs: all work that a worker
    will have to serve.
    Scale-up is immediate because a queued request is a user waiting; scale-down
    waits for the stabilisation window because a GPU worker takes minutes to come
    back, and load that dips between bursts must not cost a cold start.
    """

    def decide(self, signals: PoolSignals, state: AutoscalerState | None = None) -> ScaleTarget:
        cfg = self.config
        state = state or AutoscalerState()
        now = signals.now
        load = self.load(signals)
        wanted = cfg.clamp(math.ceil(load / cfg.target_concurrency_per_worker))
        current = state.target if state.target is not None else signals.live_total
        idle_since = (
            (state.idle_since if state.idle_since is not None else now) if load <= 0 else None
        )
        state = replace(state, idle_since=idle_since)
        fresh = replace(state, lower_since=None, lower_peak=None)

        if current > cfg.max_workers:
            return self._result(cfg.max_workers, f"clamped to max_workers {cfg.max_workers}", fresh)
        if wanted >= current:
            if wanted > current:
                why = f"scale up: load {load:g} needs {wanted}"
                if wanted == cfg.min_workers and current < cfg.min_workers:
                    why = f"raised to min_workers {cfg.min_workers}"
                return self._result(wanted, why, fresh)
            return self._result(current, f"steady: load {load:g} fits {current}", fresh)

        if wanted == 0 and idle_since is not None and now - idle_since >= cfg.idle_to_zero_s:
            return self._result(0, f"scale to zero: idle for {now - idle_since:g}s", fresh)
        floor = max(wanted, 1) if cfg.min_workers == 0 and current >= 1 else wanted
        if floor >= current:
            left = cfg.idle_to_zero_s - (now - (idle_since if idle_since is not None else now))
            return self._result(current, f"idle: zero after {left:g}s more", fresh)

        since = state.lower_since if state.lower_since is not None else now
        peak = max(floor, state.lower_peak if state.lower_peak is not None else floor)
        held = now - since
        if held >= cfg.scale_down_stabilisation_s:
            why = f"scale down: {peak} has sufficed for {held:g}s"
            return self._result(peak, why, fresh)
        left = cfg.scale_down_stabilisation_s - held
        why = f"holding {current}: load {load:g} needs {floor}, scale down in {left:g}s"
        return self._result(current, why, replace(state, lower_since=since, lower_peak=peak))

    @staticmethod
    def _result(target: int, reason: str, state: AutoscalerState) -> ScaleTarget:
        return ScaleTarget(target, reason, replace(state, target=target))
