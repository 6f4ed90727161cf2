"""Runs registered Durable orchestrators in-process, on the SDK's own replay engine.

The local stack has no Functions host, but orchestrator code must not get a
second, friendlier execution model: what passes here should pass on Azure.
So this runner plays only the host's part: it keeps each instance's history
in the host's JSON shape, calls the registered handle (`handle(context_json)
-> state_json`), and turns the returned actions into history: activity
results encoded by the SDK's own df_dumps, timers fired by the event loop,
events appended when they arrive (even with no wait open, as on the host).
ContinueAsNew starts a fresh history, so an eternal orchestration's memory
stays bounded. The clock stamps history and status; timers wait the real
seconds between "now" and their fireAt.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.durable_functions.models.actions.ActionType import ActionType
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType as Ev
from azure.durable_functions.models.utils.df_serialization import df_dumps

from spotgate.adapters.local.durable_protocol import (
    Handle,
    action_key,
    as_handle,
    context_json,
    decode_activity_input,
    event,
    execution_started,
    flatten_actions,
    invoke,
    orchestration_status,
    orchestrators_from_blueprint,
    parse_timestamp,
)
from spotgate.clock import Clock

__all__ = ["InstanceNotFound", "LocalOrchestrationRunner", "orchestrators_from_blueprint"]

log = logging.getLogger(__name__)

ACTIVE = ("Pending", "Running")
# Actions that take a sequence number in the SDK: the ids of TaskScheduled and TimerCreated.
_SEQUENCED = {ActionType.CALL_ACTIVITY, ActionType.CREATE_TIMER}
_EPOCH = datetime.fromtimestamp(0, UTC)


class InstanceNotFound(LookupError):
    pass


@dataclass
class _Instance:
    name: str
    instance_id: str
    input: str  # JSON of the current execution's input
    created: datetime
    updated: datetime
    status: str = "Pending"
    custom_status: Any = None
    output: Any = None
    generation: int = 0  # executions ended by continue_as_new
    history: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)  # not yet shown to the code
    scheduled: list[tuple[int, str]] = field(default_factory=list)  # action keys in history
    timers: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    work: set[asyncio.Task[None]] = field(default_factory=set)
    signal: asyncio.Event = field(default_factory=asyncio.Event)
    driver: asyncio.Task[None] | None = None
    last_started: datetime = _EPOCH


class LocalOrchestrationRunner:
    """Satisfies orchestrations.control.OrchestrationControl, plus stop() and list_instances()."""

    available = True  # in this process, from the start

    def __init__(
        self,
        orchestrators: dict[str, Any],
        activities: dict[str, Callable[[Any], Any]],
        clock: Clock,
        *,
        activity_threads: bool = False,
    ) -> None:
        # Activities run on the loop by default: the in-memory registry they touch is shared
        # with request handlers on the same loop and is not thread-safe.
        self._orchestrators: dict[str, Handle] = {n: as_handle(o) for n, o in orchestrators.items()}
        self._activities = dict(activities)
        self._clock = clock
        self._threads = activity_threads
        self._instances: dict[str, _Instance] = {}

    async def start(self, name: str, instance_id: str | None, input: Any = None) -> str:
        if name not in self._orchestrators:
            raise KeyError(f"No orchestrator named '{name}'.")
        instance_id = instance_id or uuid.uuid4().hex
        old = self._instances.get(instance_id)
        if old is not None:  # start_new replaces an existing instance, as on the host
            await self._halt(old)
        now = self._now()
        inst = _Instance(name, instance_id, df_dumps(input), created=now, updated=now)
        inst.pending.append(execution_started(name, inst.input, now))
        inst.driver = asyncio.create_task(self._drive(inst), name=f"orchestration:{instance_id}")
        self._instances[instance_id] = inst
        return instance_id

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        inst = self._require(instance_id)
        if inst.status not in ACTIVE:
            log.debug("event %s for finished instance %s dropped", name, instance_id)
            return
        raised = event(Ev.EVENT_RAISED, self._now(), Name=name, Input=df_dumps(data))
        self._deliver(inst, inst.generation, raised)

    async def terminate(self, instance_id: str, reason: str) -> None:
        inst = self._require(instance_id)
        if inst.status in ACTIVE:
            await self._halt(inst)
            self._finish(inst, "Terminated", reason)

    def status(self, instance_id: str) -> dict[str, Any] | None:
        inst = self._instances.get(instance_id)
        return None if inst is None else self._status(inst)

    async def get_status(self, instance_id: str) -> dict[str, Any] | None:
        return self.status(instance_id)

    def management_links(self, base_url: str, instance_id: str) -> dict[str, str]:
        """The same paths on the local app as the host's webhook API offers on Azure."""
        status = f"{base_url.rstrip('/')}/orchestrations/{instance_id}"
        return {
            "id": instance_id,
            "statusQueryGetUri": status,
            "terminatePostUri": f"{status}/terminate",
            "sendEventPostUri": f"{status}/raiseEvent/{{eventName}}",
        }

    def list_instances(self) -> list[dict[str, Any]]:
        return [self._status(i) for i in self._instances.values()]

    async def stop(self) -> None:
        """Cancel every driver, timer and activity; statuses stay as a host would leave them."""
        for inst in list(self._instances.values()):
            await self._halt(inst)

    # the host's side of the replay protocol

    async def _drive(self, inst: _Instance) -> None:
        while inst.status in ACTIVE:
            if not inst.pending:
                inst.signal.clear()
                await inst.signal.wait()
                continue
            try:
                self._episode(inst)
            except Exception as exc:
                log.exception("orchestration %s crashed in the runner", inst.instance_id)
                self._finish(inst, "Failed", f"Local runner error: {exc}")
            await asyncio.sleep(0)

    def _episode(self, inst: _Instance) -> None:
        """One orchestrator invocation: replay the whole history plus the new events."""
        inst.last_started = max(self._now(), inst.last_started)
        inst.history += [event(Ev.ORCHESTRATOR_STARTED, inst.last_started), *inst.pending]
        inst.pending = []
        payload = context_json(inst.instance_id, inst.input, inst.history)
        state, error = invoke(self._orchestrators[inst.name], payload)
        for played in inst.history:
            played["IsPlayed"] = True
        if "customStatus" in state or error is None:
            inst.custom_status = state.get("customStatus")
        if error is not None:
            self._finish(inst, "Failed", f"Orchestrator function '{inst.name}' failed: {error}")
            return
        continue_input = self._apply(inst, flatten_actions(state.get("actions", [])))
        inst.history.append(event(Ev.ORCHESTRATOR_COMPLETED, self._now()))
        inst.updated = self._now()
        if inst.status not in ACTIVE:
            return  # _apply failed it
        if state.get("isDone") and continue_input is not None:
            self._continue_as_new(inst, continue_input)
        elif state.get("isDone"):
            self._finish(inst, "Completed", state.get("output"))
        else:
            inst.status = "Running"

    def _apply(self, inst: _Instance, actions: list[dict[str, Any]]) -> str | None:
        """Start the actions not yet in history; returns a ContinueAsNew input, if any.

        V2+ lists every action of the execution, so the head must match history
        (replay must reproduce it) and only the tail is new.
        """
        seq, continue_input = 0, None
        for index, action in enumerate(actions):
            kind, key, task_id = ActionType(action["actionType"]), action_key(action), seq
            if kind in _SEQUENCED:
                seq += 1
            if kind == ActionType.CREATE_TIMER and action.get("isCanceled"):
                timer = inst.timers.pop(task_id, None)
                if timer is not None:
                    timer.cancel()
            if index < len(inst.scheduled):
                if inst.scheduled[index] != key:
                    was = inst.scheduled[index]
                    detail = f"action {index} was {was} in history, replay gave {key}"
                    self._finish(inst, "Failed", f"Non-deterministic orchestration: {detail}.")
                    return None
                continue
            inst.scheduled.append(key)
            if kind == ActionType.CALL_ACTIVITY:
                self._schedule_activity(inst, task_id, action["functionName"], action["input"])
            elif kind == ActionType.CREATE_TIMER:
                self._schedule_timer(inst, task_id, action)
            elif kind == ActionType.CONTINUE_AS_NEW:
                continue_input = action.get("input") or "null"
            elif kind != ActionType.WAIT_FOR_EXTERNAL_EVENT:
                self._finish(inst, "Failed", f"Action {kind.name} is not supported locally.")
                return None
        return continue_input

    def _schedule_activity(self, inst: _Instance, task_id: int, name: str, raw: str) -> None:
        inst.history.append(event(Ev.TASK_SCHEDULED, self._now(), task_id, Name=name, Input=raw))
        task = asyncio.create_task(self._run_activity(inst, inst.generation, task_id, name, raw))
        inst.work.add(task)
        task.add_done_callback(inst.work.discard)

    async def _run_activity(
        self, inst: _Instance, gen: int, task_id: int, name: str, raw: str
    ) -> None:
        try:
            function = self._activities.get(name)
            if function is None:
                raise LookupError(f"The function '{name}' doesn't exist.")
            payload = decode_activity_input(raw)
            if self._threads:
                result = await asyncio.to_thread(function, payload)
            else:
                result = function(payload)
            if inspect.isawaitable(result):
                result = await result
            done = event(Ev.TASK_COMPLETED, self._now(), TaskScheduledId=task_id)
            done["Result"] = df_dumps(result)  # as ActivityTriggerConverter.encode
        except Exception as exc:
            done = event(
                Ev.TASK_FAILED,
                self._now(),
                TaskScheduledId=task_id,
                Reason=f"Activity function '{name}' failed: {exc}",
                Details="".join(traceback.format_exception_only(exc)).strip(),
            )
        self._deliver(inst, gen, done)

    def _schedule_timer(self, inst: _Instance, task_id: int, action: dict[str, Any]) -> None:
        fire_at = action["fireAt"]
        inst.history.append(event(Ev.TIMER_CREATED, self._now(), task_id, FireAt=fire_at))
        if action.get("isCanceled"):
            return
        gen = inst.generation

        def fire() -> None:
            inst.timers.pop(task_id, None)
            fired = event(Ev.TIMER_FIRED, self._now(), TimerId=task_id, FireAt=fire_at)
            self._deliver(inst, gen, fired)

        delay = max(0.0, parse_timestamp(fire_at).timestamp() - self._clock.now())
        inst.timers[task_id] = asyncio.get_running_loop().call_later(delay, fire)

    def _continue_as_new(self, inst: _Instance, new_input: str) -> None:
        """A fresh execution: old timers and activity results are dropped, as on the host."""
        self._cancel_work(inst)
        inst.generation += 1
        inst.input = new_input
        inst.history, inst.scheduled = [], []
        inst.pending = [execution_started(inst.name, new_input, self._now())]
        inst.status = "Running"

    def _deliver(self, inst: _Instance, gen: int, new_event: dict[str, Any]) -> None:
        if gen == inst.generation and inst.status in ACTIVE:
            inst.pending.append(new_event)
            inst.signal.set()

    # bookkeeping

    def _finish(self, inst: _Instance, status: str, output: Any) -> None:
        inst.status, inst.output, inst.updated = status, output, self._now()
        self._cancel_work(inst)

    def _cancel_work(self, inst: _Instance) -> None:
        for timer in inst.timers.values():
            timer.cancel()
        inst.timers.clear()
        for task in inst.work:
            task.cancel()

    async def _halt(self, inst: _Instance) -> None:
        self._cancel_work(inst)
        tasks = [*inst.work, *([inst.driver] if inst.driver else [])]
        for task in tasks:
            task.cancel()
        current = asyncio.current_task()
        await asyncio.gather(*(t for t in tasks if t is not current), return_exceptions=True)

    def _require(self, instance_id: str) -> _Instance:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise InstanceNotFound(f"No orchestration instance '{instance_id}'.")
        return inst

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), UTC)

    def _status(self, inst: _Instance) -> dict[str, Any]:
        status = orchestration_status(
            inst.name, inst.instance_id, inst.status, inst.input, inst.created, inst.updated
        )
        status.update(customStatus=inst.custom_status, output=inst.output)
        # diagnostics the host does not report
        status.update(continuedAsNew=inst.generation, historyEvents=len(inst.history))
        return status
