"""A Batch API backlog as the fleet monitor sizes the pool for it.

Batch lines only fill the slots interactive traffic leaves free: the pool gets
the larger of what the load needs and what the backlog needs to finish in
time, never the sum, and one worker at least while a line waits.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from spotgate.fleet.autoscaler import (
    Autoscaler,
    AutoscalerConfig,
    AutoscalerState,
    ScaleTarget,
)
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.observation import (
    BatchBacklogView,
    PoolDemand,
    PoolObservation,
    WithBatchBacklog,
)
from spotgate.fleet.planner import PolicyState, plan_tick
from spotgate.fleet.signals import PoolSignals, WorkerSignal
from spotgate.settings import Settings

T0 = 1_700_000_000.0
MIN = 60.0
# 16 slots a worker, drain within 20 minutes
CONFIG = AutoscalerConfig(
    min_workers=0, max_workers=10, target_concurrency_per_worker=16, batch_drain_target_s=20 * MIN
)


def signals(
    lines: int,
    *,
    live: int = 0,
    at: float = 0.0,
    line_s: float | None = None,
    deadline_s: float | None = None,
    in_flight: int = 0,
) -> PoolSignals:
    return PoolSignals.build(
        "pool-a",
        T0 + at,
        gateway_in_flight=in_flight,
        batch_queue_depth=lines,
        batch_line_s=line_s,
        batch_deadline_s=deadline_s,
        workers=[WorkerSignal(f"w{i}") for i in range(live)],
    )


def decide(
    s: PoolSignals, config: AutoscalerConfig = CONFIG, state: AutoscalerState | None = None
) -> ScaleTarget:
    return Autoscaler.make("queue-depth", config).decide(s, state)


@pytest.mark.parametrize(("line_s", "workers"), [(0.5, 1), (6.0, 2), (12.0, 4)])
def test_a_5000_line_batch_gets_the_workers_that_finish_it_in_20_minutes(
    line_s: float, workers: int
) -> None:
    """5,000 lines x line_s slot-seconds over 16 slots x 1,200 s; never max_workers at once."""
    target, code, why, _ = decide(signals(5000, line_s=line_s))
    assert (target, code) == (workers, "scale_up_for_batch")
    assert why == f"scale up: batch backlog 5000 lines needs {workers} to finish in 20 min"


def test_the_configured_pace_stands_in_until_a_line_was_measured() -> None:
    config = replace(CONFIG, batch_line_estimate_s=12.0)
    assert decide(signals(5000), config).target == 4
    assert decide(signals(5000, line_s=0.5), config).target == 1


def test_a_close_deadline_asks_for_more_workers_than_the_drain_target() -> None:
    far = decide(signals(5000, line_s=12.0, deadline_s=24 * 3600))
    close = decide(signals(5000, line_s=12.0, deadline_s=15 * MIN))
    assert far.target == 4
    # 15 min left less the 5 min margin: 60,000 slot-seconds in 10 minutes over 16 slots
    assert close.target == 7
    assert "finish in 10 min (deadline in 15 min)" in close.reason


def test_a_tiny_backlog_with_a_day_to_go_still_starts_a_worker() -> None:
    target, code, *_ = decide(signals(3, deadline_s=24 * 3600))
    assert (target, code) == (1, "scale_up_for_batch")


def test_a_batch_past_its_deadline_asks_for_the_most_the_pool_may_have() -> None:
    target, code, why, _ = decide(signals(5000, line_s=2.0, deadline_s=30.0))
    assert (target, code) == (10, "scale_up_for_batch")
    assert why.endswith("max_workers 10")


def test_interactive_load_larger_than_the_backlog_need_wins_and_is_not_added_to() -> None:
    """64 requests need 4 workers; the backlog needs 2: the pool gets 4, not 6."""
    target, code, why, _ = decide(signals(5000, line_s=6.0, in_flight=64))
    assert (target, code) == (4, "scale_up_for_load")
    assert "batch backlog 5000 lines needs 2" in why


def test_a_backlog_larger_than_the_load_sets_the_size() -> None:
    target, code, *_ = decide(signals(5000, line_s=12.0, in_flight=16))
    assert (target, code) == (4, "scale_up_for_batch")


def test_a_waiting_backlog_keeps_the_pool_from_idling_to_zero() -> None:
    state = None
    for at in (0.0, 600.0, 3600.0, 7200.0):
        target, code, why, state = decide(signals(3, live=1, at=at), state=state)
        assert (target, code) == (1, "steady")
        assert "batch backlog 3 lines" in why


def test_the_monitor_says_why_it_scaled_for_the_backlog() -> None:
    policy = FleetPolicyConfig(autoscaling=CONFIG)
    observed = PoolObservation(signals(4200, line_s=9.0))
    decision = plan_tick(observed, policy, PolicyState({}, {}), None, 1).decision
    assert decision.desired == 2 and decision.codes[0] == "scale_up_for_batch"
    assert decision.reason.startswith("scale up: batch backlog 4200 lines needs 2 to finish")
    assert decision.load == 0, "the backlog is not shown as load: it is not running"


# signals and settings


def test_signals_written_before_batch_deadlines_load_with_none() -> None:
    old = {"pool": "p", "now": T0, "gateway_in_flight": 2, "batch_queue_depth": 7}
    loaded = PoolSignals.from_dict(old)
    assert loaded.batch_queue_depth == 7
    assert (loaded.batch_deadline_s, loaded.batch_line_s) == (None, None)


def test_batch_signals_survive_json() -> None:
    s = signals(40, line_s=1.5, deadline_s=3600.0, live=2)
    assert PoolSignals.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_a_monitor_started_before_the_batch_knobs_keeps_running_with_their_defaults() -> None:
    old_input = {"autoscaling": {"min_workers": 0, "max_workers": 4}, "drain_timeout_s": 60.0}
    policy = FleetPolicyConfig.from_dict(old_input)
    assert policy.autoscaling.batch_drain_target_s == 1800.0
    assert policy.autoscaling.batch_line_estimate_s == 2.0
    assert policy.autoscaling.batch_deadline_margin_s == 300.0


def test_batch_knobs_come_from_settings_and_pool_policies() -> None:
    settings = Settings(
        batch_drain_target_s=600,
        batch_deadline_margin_s=120,
        pool_policies={"big": {"autoscaling": {"batch_line_estimate_s": 4.0}}},
    )
    big = settings.fleet_policy("big").autoscaling
    assert (big.batch_drain_target_s, big.batch_line_estimate_s) == (600, 4.0)
    assert big.batch_deadline_margin_s == 120
    assert settings.fleet_policy("default").autoscaling.batch_line_estimate_s == 2.0


def test_a_nonsensical_batch_knob_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="batch_drain_target_s"):
        AutoscalerConfig(batch_drain_target_s=0)


# where the backlog comes from


class Interactive:
    async def of(self, pool: str) -> PoolDemand:
        return PoolDemand(admission_queue_depth=2, gateway_in_flight=5, batch_queue_depth=9)


class Backlog:
    def __init__(self, view: BatchBacklogView | Exception) -> None:
        self.view = view
        self.asked: list[str] = []

    async def backlog(self, pool: str) -> BatchBacklogView:
        self.asked.append(pool)
        if isinstance(self.view, Exception):
            raise self.view
        return self.view


async def test_the_batch_runner_fills_the_backlog_of_the_demand() -> None:
    backlog = Backlog(BatchBacklogView(lines=4200, deadline_s=3000.0, line_s=0.8))
    demand = await WithBatchBacklog(Interactive(), backlog).of("pool-a")
    assert demand == PoolDemand(
        admission_queue_depth=2,
        gateway_in_flight=5,
        batch_queue_depth=4200,
        batch_deadline_s=3000.0,
        batch_line_s=0.8,
    )
    assert backlog.asked == ["pool-a"]


async def test_an_unreadable_backlog_keeps_the_tick_going_on_the_inner_figures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="spotgate.fleet"):
        demand = await WithBatchBacklog(Interactive(), Backlog(OSError("store down"))).of("p")
    assert demand == await Interactive().of("p")
    assert "store down" in caplog.text


def busy_with_batch(
    *, at: float, batch_in_flight: int, lines: int, engines_running: float, live: int = 1
) -> PoolSignals:
    """A pool whose engines report `engines_running` (heartbeats lag) while batch lines run."""
    per_worker = engines_running / live
    return PoolSignals.build(
        "pool-a",
        T0 + at,
        batch_in_flight=batch_in_flight,
        batch_queue_depth=lines,
        workers=[WorkerSignal(f"w{i}", running=per_worker) for i in range(live)],
    )


def test_batch_lines_running_are_not_load_the_pool_grows_for() -> None:
    scaler = Autoscaler.make("queue-depth", replace(CONFIG, min_workers=0, max_workers=4))
    decision = scaler.decide(
        busy_with_batch(at=0, batch_in_flight=16, lines=40, engines_running=16),
        AutoscalerState(target=1),
    )
    assert (
        scaler.demand(busy_with_batch(at=0, batch_in_flight=16, lines=40, engines_running=16)) == 0
    )
    assert decision.target == 1, decision.reason  # 40 lines fit one worker's spare slots


def test_engines_still_counting_finished_batch_lines_do_not_scale_the_pool_up() -> None:
    scaler = Autoscaler.make("queue-depth", replace(CONFIG, min_workers=0, max_workers=4))
    state = scaler.decide(
        busy_with_batch(at=0, batch_in_flight=16, lines=16, engines_running=16),
        AutoscalerState(target=1),
    ).state
    # the batch is over; the engines' last heartbeat still says 16 running
    after = scaler.decide(
        busy_with_batch(at=5, batch_in_flight=0, lines=0, engines_running=48), state
    )
    assert after.target <= 1, after.reason
    # once their heartbeats have caught up, the engines' count is trusted again
    later = scaler.decide(
        busy_with_batch(at=30, batch_in_flight=0, lines=0, engines_running=48), after.state
    )
    assert later.target == 3, later.reason
