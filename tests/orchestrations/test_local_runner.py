"""The local runner's host behaviour, with small orchestrators written for the purpose."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import pytest

from spotgate.adapters.local.durable_runner import InstanceNotFound, LocalOrchestrationRunner
from spotgate.clock import SystemClock


def echo_twice(context: Any) -> Generator[Any, Any, Any]:
    first = yield context.call_activity("echo", context.get_input())
    second = yield context.call_activity("echo", {"again": first})
    return second


def catches_failure(context: Any) -> Generator[Any, Any, Any]:
    try:
        yield context.call_activity("boom", None)
    except Exception as exc:
        return f"caught: {exc}"
    return "not reached"


def fails(context: Any) -> Generator[Any, Any, Any]:
    yield context.call_activity("boom", None)


def waits_for_go(context: Any) -> Generator[Any, Any, Any]:
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=30))
    go = context.wait_for_external_event("go")
    winner = yield context.task_any([timer, go])
    if winner is go:
        timer.cancel()
        return {"go": go.result}
    return "timed out"


def sleeps(context: Any) -> Generator[Any, Any, Any]:
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=0.05))
    return "slept"


_flip = {"n": 0}


def nondeterministic(context: Any) -> Generator[Any, Any, Any]:
    _flip["n"] += 1  # a replay takes the other branch: forbidden in orchestrator code
    yield context.call_activity("echo" if _flip["n"] % 2 else "boom", None)
    yield context.call_activity("echo", None)


def boom(_: Any) -> None:
    raise RuntimeError("disk on fire")


ORCHESTRATORS = {
    f.__name__: f
    for f in (echo_twice, catches_failure, fails, waits_for_go, sleeps, nondeterministic)
}
ACTIVITIES = {"echo": lambda payload: (payload, "as-tuple"), "boom": boom}


@pytest.fixture
async def runner() -> Any:
    runner = LocalOrchestrationRunner(ORCHESTRATORS, ACTIVITIES, SystemClock())
    yield runner
    await runner.stop()


async def finished(runner: LocalOrchestrationRunner, instance_id: str) -> dict[str, Any]:
    async with asyncio.timeout(3):
        while True:
            status = runner.status(instance_id)
            if status is not None and status["runtimeStatus"] not in ("Pending", "Running"):
                return status
            await asyncio.sleep(0.01)


async def test_activity_results_cross_as_json_like_on_the_host(runner: Any) -> None:
    await runner.start("echo_twice", "e", {"n": 1})
    status = await finished(runner, "e")
    assert status["runtimeStatus"] == "Completed"
    # tuples come back as lists: the result went through df_dumps into history
    assert status["output"] == [{"again": [{"n": 1}, "as-tuple"]}, "as-tuple"]


async def test_activity_failure_is_thrown_into_the_orchestrator(runner: Any) -> None:
    await runner.start("catches_failure", "c", None)
    status = await finished(runner, "c")
    assert status["runtimeStatus"] == "Completed"
    assert "Activity function 'boom' failed: disk on fire" in status["output"]


async def test_unhandled_failure_fails_the_instance(runner: Any) -> None:
    await runner.start("fails", "f", None)
    status = await finished(runner, "f")
    assert status["runtimeStatus"] == "Failed"
    assert status["output"].startswith("Orchestrator function 'fails' failed:")
    assert "disk on fire" in status["output"]


async def test_event_wins_and_its_data_arrives(runner: Any) -> None:
    await runner.start("waits_for_go", "w", None)
    await asyncio.sleep(0.05)
    assert runner.status("w")["runtimeStatus"] == "Running"
    await runner.raise_event("w", "go", {"x": 1})
    status = await finished(runner, "w")
    assert status["output"] == {"go": {"x": 1}}


async def test_event_raised_before_the_wait_is_buffered(runner: Any) -> None:
    await runner.start("waits_for_go", "b", None)
    await runner.raise_event("b", "go", "early")  # before the first episode ran
    assert (await finished(runner, "b"))["output"] == {"go": "early"}


async def test_timer_fires_in_real_time(runner: Any) -> None:
    await runner.start("sleeps", "s", None)
    assert runner.status("s")["runtimeStatus"] == "Pending"
    assert (await finished(runner, "s"))["output"] == "slept"


async def test_replay_that_changes_its_actions_is_failed_as_nondeterministic(runner: Any) -> None:
    _flip["n"] = 0
    await runner.start("nondeterministic", "n", None)
    status = await finished(runner, "n")
    assert status["runtimeStatus"] == "Failed"
    assert "Non-deterministic" in status["output"]


async def test_unknown_names_and_instances(runner: Any) -> None:
    with pytest.raises(KeyError):
        await runner.start("nope", "x", None)
    with pytest.raises(InstanceNotFound):
        await runner.raise_event("missing", "go")
    with pytest.raises(InstanceNotFound):
        await runner.terminate("missing", "why")
    assert runner.status("missing") is None


async def test_start_replaces_an_instance_and_stop_leaves_no_tasks(runner: Any) -> None:
    await runner.start("waits_for_go", "r", None)
    await asyncio.sleep(0.02)
    await runner.start("waits_for_go", "r", None)
    await asyncio.sleep(0.02)
    assert len(runner.list_instances()) == 1
    await runner.stop()
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in others if t.get_name().startswith("orchestration:")]
