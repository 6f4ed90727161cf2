"""One pool's scaling configuration, as one value the monitor carries in its orchestration input.

It names the policies (by registry name) and their tunables, plus the
deadlines the reconciler enforces. It travels through `continue_as_new` with
the policies' state, so a running monitor keeps the settings it was started
with until an operator restarts it: a config change is a deliberate act,
never a surprise halfway through a drain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spotgate.fleet.autoscaler import Autoscaler, AutoscalerConfig
from spotgate.fleet.capacity_mix import CapacityMix, CapacityMixConfig


@dataclass(frozen=True)
class FleetPolicyConfig:
    autoscaler: str = Autoscaler.default
    autoscaling: AutoscalerConfig = field(default_factory=AutoscalerConfig)
    capacity_mix: str = CapacityMix.default
    mix: CapacityMixConfig = field(default_factory=CapacityMixConfig)
    drain_timeout_s: float = 300.0
    provision_timeout_s: float = 900.0
    eviction_grace_s: float = 60.0
    lost_worker_grace_s: float = 60.0
    """A worker whose agent went quiet is deleted after this, unless it is back first
    (or at once, when this tick provisions capacity that replaces it)."""
    dry_run: bool = False

    def __post_init__(self) -> None:
        Autoscaler.make(self.autoscaler, self.autoscaling)  # fail at start, not at the first tick
        CapacityMix.make(self.capacity_mix, self.mix)
        deadlines = (self.drain_timeout_s, self.provision_timeout_s, self.eviction_grace_s)
        if min(*deadlines, self.lost_worker_grace_s) < 0:
            raise ValueError("timeouts must be >= 0")

    @property
    def lookback_s(self) -> float:
        """How far back evictions and refusals matter to the mix: the longest of its windows."""
        m = self.mix
        return max(
            m.spot_failure_window_s,
            m.eviction_window_s,
            m.spot_healthy_cooldown_s,
            m.zone_cooldown_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "autoscaler": self.autoscaler,
            "autoscaling": self.autoscaling.to_dict(),
            "capacity_mix": self.capacity_mix,
            "mix": self.mix.to_dict(),
            "drain_timeout_s": self.drain_timeout_s,
            "provision_timeout_s": self.provision_timeout_s,
            "eviction_grace_s": self.eviction_grace_s,
            "lost_worker_grace_s": self.lost_worker_grace_s,
            "dry_run": self.dry_run,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> FleetPolicyConfig:
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fleet policy settings: {', '.join(sorted(unknown))}")
        if "autoscaling" in data:
            data["autoscaling"] = AutoscalerConfig.from_dict(data["autoscaling"])
        if "mix" in data:
            data["mix"] = CapacityMixConfig.from_dict(data["mix"])
        return cls(**data)

    def fixed_size(self, workers: int) -> FleetPolicyConfig:
        """The same policy pinned to exactly `workers`: a pool that is only kept whole."""
        autoscaling = AutoscalerConfig.from_dict(
            self.autoscaling.to_dict() | {"min_workers": workers, "max_workers": max(workers, 1)}
        )
        return FleetPolicyConfig.from_dict(self.to_dict() | {"autoscaling": autoscaling.to_dict()})
