"""The host's half of the Durable replay protocol, as the Python SDK 1.7.0 expects it.

The Functions host talks to the Python orchestrator in JSON: a context with
the full history in, an OrchestratorState with the actions out. These are the
shapes and encodings the local runner must reproduce exactly, kept apart from
the runner's scheduling so each can be read against the SDK source on its own:
`models/DurableOrchestrationContext.py` (context fields),
`models/history/HistoryEvent.py` (event fields), `models/actions/*` (actions)
and `azure.functions.durable_functions.ActivityTriggerConverter` (payloads).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from azure.durable_functions.models.history.HistoryEventType import HistoryEventType
from azure.durable_functions.models.utils.df_serialization import df_loads
from azure.durable_functions.orchestrator import Orchestrator

Handle = Callable[[str], str]

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # the SDK's DATETIME_STRING_FORMAT
_ERROR_LABEL = "$OutOfProcData$:"
_STATUS_TIME = "%Y-%m-%dT%H:%M:%SZ"


def iso(dt: datetime) -> str:
    return dt.strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def event(
    kind: HistoryEventType, at: datetime, event_id: int = -1, **fields: Any
) -> dict[str, Any]:
    """A history event; scheduled tasks and timers carry their sequence number as EventId."""
    data = {"EventType": int(kind), "EventId": event_id, "IsPlayed": False, "Timestamp": iso(at)}
    data.update(fields)
    return data


def execution_started(name: str, input_json: str, at: datetime) -> dict[str, Any]:
    # The SDK reads `Version` off this event unconditionally; leaving it out raises.
    return event(HistoryEventType.EXECUTION_STARTED, at, Name=name, Input=input_json, Version="")


def context_json(instance_id: str, input_json: str, history: list[dict[str, Any]]) -> str:
    """The orchestration trigger payload: input stays a JSON string, as the host sends it."""
    return json.dumps(
        {
            "history": history,
            "instanceId": instance_id,
            "isReplaying": False,
            "parentInstanceId": None,
            "input": input_json,
            "upperSchemaVersion": 1,  # V2 actions: one flat list per execution
            "upperSchemaVersionNew": 2,  # V3; no long-timer settings, so plain timers
        }
    )


def invoke(handle: Handle, payload: str) -> tuple[dict[str, Any], str | None]:
    """Run one replay; returns the OrchestratorState and the error if user code raised.

    On an exception the SDK raises instead of returning, with the state JSON
    appended to the message after a label; the host splits it the same way.
    """
    try:
        return json.loads(handle(payload)), None
    except Exception as exc:
        message, _, data = str(exc).partition(_ERROR_LABEL)
        state = json.loads(data) if data else {}
        return state, message.strip() or type(exc).__name__


def orchestration_status(
    name: str,
    instance_id: str,
    runtime_status: str,
    input_json: str,
    created: datetime,
    updated: datetime,
) -> dict[str, Any]:
    """The status query's shape (DurableOrchestrationStatus JSON): times to the second, UTC."""
    return {
        "name": name,
        "instanceId": instance_id,
        "runtimeStatus": runtime_status,
        "input": json.loads(input_json),
        "customStatus": None,
        "output": None,
        "createdTime": created.strftime(_STATUS_TIME),
        "lastUpdatedTime": updated.strftime(_STATUS_TIME),
    }


def flatten_actions(actions: Any) -> list[dict[str, Any]]:
    """Atomic actions in scheduling order; V1 nests lists, V2+ nests compound actions."""
    if isinstance(actions, list):
        return [a for item in actions for a in flatten_actions(item)]
    if "compoundActions" in actions:
        return flatten_actions(actions["compoundActions"])
    return [actions]


def action_key(action: dict[str, Any]) -> tuple[int, str]:
    """What a replay must reproduce for an action already in history.

    DTFx compares type and name; timers add fireAt here, which catches
    orchestrator code that reads the wall clock instead of the context.
    """
    detail = action.get("functionName") or action.get("externalEventName") or action.get("fireAt")
    return int(action["actionType"]), str(detail or "")


def decode_activity_input(raw: str) -> Any:
    """As ActivityTriggerConverter.decode: JSON if it parses, the raw string otherwise."""
    try:
        return df_loads(raw)
    except json.JSONDecodeError:
        return raw


def orchestrators_from_blueprint(blueprint: Any) -> dict[str, Handle]:
    """Name -> replay handle of every orchestration trigger on a Blueprint or FunctionApp."""
    handles: dict[str, Handle] = {}
    for builder in blueprint._function_builders:  # a Blueprint has no public accessor
        function = builder.build()
        trigger = function.get_trigger()
        if trigger is not None and trigger.get_binding_name() == "orchestrationTrigger":
            handles[function.get_function_name()] = function.get_user_function()
    return handles


def as_handle(orchestrator: Any) -> Handle:
    """Accept a replay handle, a decorated FunctionBuilder or a bare generator function."""
    if hasattr(orchestrator, "build"):
        orchestrator = orchestrator.build().get_user_function()
    if inspect.isgeneratorfunction(orchestrator):
        return cast(Handle, Orchestrator.create(orchestrator))
    if not callable(orchestrator):
        raise TypeError(f"Not an orchestrator: {orchestrator!r}")
    return cast(Handle, orchestrator)
