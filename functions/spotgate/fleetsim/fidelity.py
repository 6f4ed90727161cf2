"""The simulator's side of a fidelity check: a trace replayed as the local sim stack runs it.

`spotgate dev --engine sim` runs the real gateway, fleet monitor and agents
over local worker processes; the simulator runs the same fleet code over
simulated ones. A fidelity check (tests/integration/test_simulator_fidelity.py)
replays one trace through both and compares what each reports: worker-hours,
P95 TTFT, failures. This module sets up the simulator's run to match the stack:

- the worker profile is the sim engine's measured one, with the engine's flags
  (`--ttft-ms`, `--tokens-per-s`, `--max-concurrency`) and the stack's
  `--provision-delay` added to the measured boot (`local_sim_profile`);
- spot evictions come at fixed trace times, each to the oldest ready worker, as
  a test gives them to a live stack (`POST /fleet/workers/{id}/evict`); there are
  no random ones (`ScheduledEviction`);
- the pool starts the trace at its minimum, as an idle stack does, not sized for
  the trace's opening load as a long-running service would be;
- the fleet policy is the stack's own `FleetPolicyConfig` (the caller builds it
  with the code the stack uses) and the monitor ticks at the stack's tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

from spotgate.costs.price_table import PriceTable
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleetsim.metrics import RunResult
from spotgate.fleetsim.scenarios import Scenario
from spotgate.fleetsim.service_profile import ServiceProfile, load_profile
from spotgate.fleetsim.simulation import POOL, Simulation, SimulationConfig
from spotgate.fleetsim.traces import Trace

LOCAL_SIM_PROFILE = "sim-model@local-sim"
LOCAL_REGION = "local"
"""The packaged price table's region for the notional `local-sim` price."""


@dataclass(frozen=True)
class ScheduledEviction:
    """A spot eviction notice at `at_s` (trace time) to the oldest ready worker."""

    at_s: float


def local_sim_profile(
    *,
    ttft_ms: float,
    tokens_per_s: float,
    max_concurrency: int,
    provision_delay_s: float,
    base: ServiceProfile | None = None,
) -> ServiceProfile:
    """The sim engine's measured profile for a stack started with these flags.

    The calibration measured the engine at its defaults; its time to first token,
    per-stream pacing and batch slots are its configuration (engines/sim: token k
    of a stream at ttft + k / tokens_per_s, streams never slow each other), so the
    flags replace them one for one. `boot_to_ready_s` was measured with no
    provisioning delay: the stack's delay comes before the worker process starts.
    """
    profile = base or load_profile(LOCAL_SIM_PROFILE)
    return replace(
        profile,
        ttft_base_ms=ttft_ms,
        decode_tokens_per_s_single=tokens_per_s,
        decode_tokens_per_s_max=tokens_per_s * max_concurrency,
        max_concurrency=max_concurrency,
        boot_to_ready_s=profile.boot_to_ready_s + provision_delay_s,
    )


class _IdleStart(Simulation):
    """A run whose warm-up announces no load: the pool meets the trace at its minimum."""

    def _opening_in_flight(self) -> int:
        return 0


def simulate_local(
    trace: Trace,
    policy: FleetPolicyConfig,
    profile: ServiceProfile,
    *,
    tick_s: float,
    slots_per_worker: int,
    capacity_wait_s: float,
    evictions: Sequence[ScheduledEviction] = (),
    eviction_notice_s: float = 30.0,
    warm_up_s: float = 30.0,
    prices: PriceTable | None = None,
) -> RunResult:
    """`trace` through the simulator as the local stack with `policy` would serve it.

    `slots_per_worker` is the gateway's `worker_max_concurrency` (requests it
    sends one worker at once; beyond the engine's own slots they queue in the
    engine) and `capacity_wait_s` its wait for a free worker. `warm_up_s` of
    ticks before the trace bring the pool up to its minimum, as a stack is up
    before a test sends anything.
    """
    scenario = Scenario(
        "fidelity",
        notice_s=eviction_notice_s,
        description="no random evictions; the scheduled ones only",
    )
    config = SimulationConfig(
        policy=policy,
        profile=profile,
        scenario=scenario,
        policy_name="local-stack",
        region=LOCAL_REGION,
        tick_seconds=tick_s,
        capacity_wait_s=capacity_wait_s,
        slots_per_worker=slots_per_worker,
        warm_up_s=warm_up_s,
    )
    simulation = _IdleStart(trace, config, prices or PriceTable.load())
    for eviction in evictions:
        simulation.events.at(eviction.at_s, partial(_evict_oldest, simulation))
    return asyncio.run(simulation.run())


async def _evict_oldest(simulation: Simulation) -> None:
    """The notice the scenario's random evictions give, to the first ready VM provisioned."""
    ready = simulation.cloud.ready(POOL)  # dict order: the order they were provisioned
    if ready:
        await simulation.cloud._notice(ready[0])
