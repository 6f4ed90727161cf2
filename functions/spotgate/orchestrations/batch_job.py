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
    FINALISE_BATCH,
    PREPARE_BATCH,
    WAIT,
)

BATCH_ORCHESTRATOR = "batch_job"
POLLS_PER_RUN = 60
DEFAULT_POLL_S = 2.0


def batch_instance_id(batch_id: str) -> str:
    return f"batch-{batch_id}"


def batch_job(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    state: dict[str, Any] = dict(context.get_input() or {})
    batch_id = str(state["batch_id"])
    poll_s = float(state.get("poll_s", DEFAULT_POLL_S))
    if state.get("phase", "prepare") == "prepare":
        prepared = yield context.call_activity(PREPARE_BATCH, {"batch_id": batch_id})
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
        progress = yield context.call_activity(BATCH_PROGRESS, {"batch_id": batch_id})
        context.set_custom_status(progress["view"])
        if progress["next"] != WAIT:
            final = yield context.call_activity(
                FINALISE_BATCH, {"batch_id": batch_id, "outcome": progress["next"]}
            )
            context.set_custom_status(final)
            return final
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=poll_s))
    context.continue_as_new(state)
    return None
