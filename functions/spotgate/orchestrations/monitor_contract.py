"""The fleet monitor's contract with whoever starts, pokes or reads it: no Durable SDK here.

The orchestrator (`fleet_monitor.py`) needs the Durable Functions SDK; the
API, the watchdog and the local stack only need its name, its instance ids,
its wake event and its input, so those live here and importing them costs
nothing. `MonitorPlan` is how every host starts monitors: the same input
whether the watchdog, an operator's POST or the local stack starts one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spotgate.fleet.decision import Decision
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.planner import PolicyState

ORCHESTRATOR_NAME = "fleet_monitor"
WAKE_EVENT = "wake"
HISTORY_LIMIT = 10
DEFAULT_TICK_SECONDS = 5.0
DEFAULT_TICKS_PER_RUN = 12


def monitor_instance_id(pool: str) -> str:
    """One instance per pool, with a fixed id, so starting it twice can never fork a pool."""
    return f"fleet-monitor-{pool}"


@dataclass
class MonitorState:
    """What survives continue_as_new: tick counter, policy and its memory, recent decisions."""

    pool: str
    tick: int = 0
    tick_seconds: float = DEFAULT_TICK_SECONDS
    ticks_per_run: int = DEFAULT_TICKS_PER_RUN
    policy: FleetPolicyConfig = field(default_factory=FleetPolicyConfig)
    policy_state: PolicyState = field(default_factory=lambda: PolicyState({}, {}))
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_input(cls, data: Any) -> MonitorState:
        if not isinstance(data, dict) or not data.get("pool"):
            raise ValueError("fleet_monitor needs an input object with a 'pool'.")
        state = cls(
            pool=str(data["pool"]),
            tick=int(data.get("tick", 0)),
            tick_seconds=float(data.get("tick_seconds", DEFAULT_TICK_SECONDS)),
            ticks_per_run=int(data.get("ticks_per_run", DEFAULT_TICKS_PER_RUN)),
            policy=FleetPolicyConfig.from_dict(data.get("policy")),
            policy_state=PolicyState.from_dict(data.get("policy_state")),
            history=list(data.get("history") or [])[-HISTORY_LIMIT:],
        )
        if state.tick_seconds <= 0 or state.ticks_per_run < 1:
            raise ValueError("tick_seconds must be > 0 and ticks_per_run >= 1.")
        return state

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "tick": self.tick,
            "tick_seconds": self.tick_seconds,
            "ticks_per_run": self.ticks_per_run,
            "policy": self.policy.to_dict(),
            "policy_state": self.policy_state.to_dict(),
            "history": list(self.history),
        }

    def last_decision(self) -> Decision | None:
        return Decision.from_dict(self.history[-1]) if self.history else None

    def record(self, decision: Decision, policy_state: PolicyState) -> None:
        self.tick = decision.tick
        self.policy_state = policy_state
        self.history = [*self.history, decision.to_dict()][-HISTORY_LIMIT:]


def initial_state(
    pool: str,
    *,
    tick_seconds: float = DEFAULT_TICK_SECONDS,
    ticks_per_run: int = DEFAULT_TICKS_PER_RUN,
    policy: FleetPolicyConfig | None = None,
) -> dict[str, Any]:
    state = MonitorState(pool, tick_seconds=tick_seconds, ticks_per_run=ticks_per_run)
    if policy is not None:
        state.policy = policy
    return state.to_dict()


@dataclass(frozen=True)
class MonitorPlan:
    """Which pools get a monitor, and what each one starts with."""

    pools: tuple[str, ...]
    policies: Mapping[str, FleetPolicyConfig]
    tick_seconds: float = DEFAULT_TICK_SECONDS
    ticks_per_run: int = DEFAULT_TICKS_PER_RUN

    def start_input(self, pool: str) -> dict[str, Any]:
        """The first input of `pool`'s monitor (its policy, its tick)."""
        return initial_state(
            pool,
            tick_seconds=self.tick_seconds,
            ticks_per_run=self.ticks_per_run,
            policy=self.policies.get(pool),
        )
