"""The fleet monitor's activities: the only place its ticks touch the registry.

They are plain functions of (services, payload) so the same code runs under
the Azure Functions host, the local runner and unit tests; each host decides
how to supply the services. Payloads and results are JSON types because
they cross the orchestration boundary and are stored in history.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from spotgate.fleet.observation import observe_pool as _observe
from spotgate.orchestrations.services import FleetServices

OBSERVE_POOL = "observe_pool"
RECORD_DECISION = "record_decision"

Activity = Callable[[Any], Any]


def observe_pool(services: FleetServices, payload: dict[str, Any]) -> dict[str, Any]:
    """Expire silent workers and count the pool; the store is the truth the monitor acts on."""
    observation = _observe(
        services.registry,
        str(payload["pool"]),
        heartbeat_timeout_s=services.heartbeat_timeout_s,
        now=services.clock.now(),
    )
    return observation.to_dict()


def record_decision(services: FleetServices, payload: dict[str, Any]) -> None:
    """Make the decision visible outside the orchestration (status pages, audits)."""
    decision = dict(payload["decision"])
    decision.setdefault("pool", payload.get("pool"))
    services.decisions.append(decision)


def activity_table(services: FleetServices) -> dict[str, Activity]:
    """The activities by their registered names, bound to services, for the local runner."""
    return {
        OBSERVE_POOL: partial(observe_pool, services),
        RECORD_DECISION: partial(record_decision, services),
    }
