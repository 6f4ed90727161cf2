"""The fleet policies a simulation compares: a capacity mix plus the autoscaler's knobs.

A simulated policy is nothing but a `FleetPolicyConfig`, the value the real
fleet monitor is started with, so a setting found here is the setting to
deploy. The names are the capacity mixes' registry names (`hedged` is
accepted for `spot-hedge`); the knobs are the autoscaler's and the mix's own
fields, so a sweep varies exactly what an operator can set.

The default target concurrency is derived from the worker profile: a worker
is aimed at `TARGET_SHARE` of the sequences it can run at once (16 of vLLM's
256 on a GPU). Not because decoding slows (a batch of 256 still decodes
fast) but because prefill is one queue per worker: the more requests a worker
takes, the more prompts wait in front of a new one, and the conversation
trace's prompts average 1,155 tokens. A sweep of the Azure conversation trace
(`notebooks/fleet_simulation.ipynb`) shows the trade: at 32 and above one
A100 worker carries the hour and misses the 2 s first-token target for about
1.6 % of requests even on-demand, and a single worker evicted leaves the pool
empty for a whole boot; at 12 to 16 the pool runs three or four workers, every
first token is on time and an eviction costs a fraction of capacity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spotgate.fleet.autoscaler import AutoscalerConfig
from spotgate.fleet.capacity_mix import CapacityMix, CapacityMixConfig
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleetsim.service_profile import ServiceProfile

POLICIES = ("on-demand-only", "spot-only", "spot-first", "spot-hedge")
"""Compared by `spotgate simulate --compare`, the baseline first."""
BASELINE = "on-demand-only"
ALIASES = {"hedged": "spot-hedge", "on-demand": "on-demand-only", "spot": "spot-only"}
TARGET_SHARE = 1 / 16
ZONES = ("1", "2", "3")

AUTOSCALER_KNOBS = frozenset(AutoscalerConfig.__dataclass_fields__)
MIX_KNOBS = frozenset(CapacityMixConfig.__dataclass_fields__) - {"zones"}


def policy_name(name: str) -> str:
    """The registry name for `name`, or a ValueError listing what exists."""
    resolved = ALIASES.get(name, name)
    if resolved not in CapacityMix.names():
        known = ", ".join([*POLICIES, *ALIASES])
        raise ValueError(f"no policy {name!r}: one of {known}")
    return resolved


def policy_config(
    name: str,
    profile: ServiceProfile,
    knobs: Mapping[str, Any] | None = None,
    *,
    max_workers: int = 64,
) -> FleetPolicyConfig:
    """The fleet policy `name` for workers like `profile`, with `knobs` overriding defaults.

    Knobs may name any autoscaler or capacity-mix field (`min_workers`,
    `target_concurrency_per_worker`, `overprovision_spot`, `base_on_demand`,
    ...); an unknown one is an error rather than silently ignored, since a
    sweep over a misspelt knob would compare identical runs.
    """
    knobs = dict(knobs or {})
    unknown = set(knobs) - AUTOSCALER_KNOBS - MIX_KNOBS
    if unknown:
        raise ValueError(f"unknown policy knobs: {', '.join(sorted(unknown))}")
    autoscaling: dict[str, Any] = {
        "min_workers": 1,
        "max_workers": max_workers,
        "target_concurrency_per_worker": max(1.0, profile.max_concurrency * TARGET_SHARE),
        "scale_down_stabilisation_s": 300.0,
        "idle_to_zero_s": 600.0,
    }
    autoscaling |= {k: v for k, v in knobs.items() if k in AUTOSCALER_KNOBS}
    mix: dict[str, Any] = {"zones": list(ZONES)}
    mix |= {k: v for k, v in knobs.items() if k in MIX_KNOBS}
    return FleetPolicyConfig(
        capacity_mix=policy_name(name),
        autoscaling=AutoscalerConfig.from_dict(autoscaling),
        mix=CapacityMixConfig.from_dict(mix),
    )


def parse_knobs(pairs: list[str]) -> dict[str, float]:
    """`["target_concurrency_per_worker=48", "overprovision_spot=2"]` as a dict of numbers."""
    knobs: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"knob {pair!r}: write it as name=value")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"knob {pair!r}: the value must be a number") from None
        knobs[key.strip()] = int(number) if number.is_integer() else number
    return knobs
