"""One orchestration per batch: validate, fan the lines out to the pool's queue in chunks,
watch them finish, write the output and error files.

The lines themselves are run by the batch line runner on whichever gateway
instance has spare slots (batch/runner.py); this orchestration only moves the
batch through OpenAI's statuses and shows progress in its custom status, so
`GET /orchestrations/batch-<id>` and `GET /v1/batches/<id>` tell the same
story. Polling, not events: a count every few seconds costs one query, and a
lost event would leave a batch stuck. The history stays short: every
`POLLS_PER_RUN` polls the orchestration continues as new.

Deterministic, like every orchestrator: time comes from the context, I/O
from activities (orchestrations/batch_activities.py).
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from spotgate.batch.objects import IN_PROGRESS
from spotgate.orchestrations.batch_activities import (
    BATCH_PROGRESS,
    ENQUEUE_LINES,
    FAIL_BATCH,
    FINALISE_BATCH,
    PREPARE_BATCH,
    WAIT,
)

BATCH_ORCHESTRATOR = "batch_job"
POLLS_PER_RUN = 60
DEFAULT_POLL_S = 2.0
ATTEMPTS = 4
RETRY_PAUSE_S = 5.0


def batch_instance_id(batch_id: str) -> str:
    return f"batch-{batch_id}"


def batch_job(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    state: dict[str, Any] = dict(context.get_input() or {})
    batch_id = str(state["batch_id"])
    try:
        return (yield from _run(context, state))
    except Exception as error:  # an activity that kept failing: never leave the batch stuck
        view = yield context.call_activity(
            FAIL_BATCH, {"batch_id": batch_id, "message": _first_line(error)}
        )
        context.set_custom_status(view)
        return view


def _run(
    context: df.DurableOrchestrationContext, state: dict[str, Any]
) -> Generator[Any, Any, Any]:
    batch_id = str(state["batch_id"])
    poll_s = float(state.get("poll_s", DEFAULT_POLL_S))
    pause_s = float(state.get("retry_pause_s", RETRY_PAUSE_S))
    if state.get("phase", "prepare") == "prepare":
        prepared = yield from _call(context, PREPARE_BATCH, {"batch_id": batch_id}, pause_s)
        context.set_custom_status(prepared["view"])
        if prepared["view"]["status"] != IN_PROGRESS:
            return prepared["view"]
        enqueues = [
            context.call_activity(ENQUEUE_LINES, {"batch_id": batch_id, **chunk})
            for chunk in prepared["chunks"]
        ]
        if enqueues:
            yield context.task_all(enqueues)
        state["phase"] = "run"
    for _ in range(POLLS_PER_RUN):
        progress = yield from _call(context, BATCH_PROGRESS, {"batch_id": batch_id}, pause_s)
        context.set_custom_status(progress["view"])
        if progress["next"] != WAIT:
            final = yield from _call(
                context,
                FINALISE_BATCH,
                {"batch_id": batch_id, "outcome": progress["next"]},
                pause_s,
            )
            context.set_custom_status(final)
            return final
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=poll_s))
    context.continue_as_new(state)
    return None


def _call(
    context: df.DurableOrchestrationContext,
    name: str,
    payload: dict[str, Any],
    pause_s: float = RETRY_PAUSE_S,
) -> Generator[Any, Any, Any]:
    """The activity's result, asked again after a pause when it fails (a store that is
    briefly unreachable); the last failure is raised once `ATTEMPTS` are spent."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return (yield context.call_activity(name, payload))
        except Exception:
            if attempt == ATTEMPTS:
                raise
            pause = timedelta(seconds=pause_s * attempt)
            yield context.create_timer(context.current_utc_datetime + pause)
    raise AssertionError("unreachable")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:500] if text else type(error).__name__
