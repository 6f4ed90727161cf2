"""A pool's demand as this gateway process sees it: the demand source of a one-process stack."""

from __future__ import annotations

from spotgate.fleet.observation import PoolDemand
from spotgate.gateway.admission import Admission


class AdmissionDemand:
    """Slots in use plus requests waiting for one: exact, and free to read, in-process.

    Batch lines hold slots too, but only spare ones: they are counted apart, so the
    autoscaler sizes the pool for them through the backlog, not as interactive load."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    async def of(self, pool: str) -> PoolDemand:
        return PoolDemand(
            admission_queue_depth=self._admission.depth(pool),
            gateway_in_flight=self._admission.interactive_in_use(pool),
            batch_in_flight=self._admission.background_in_use(pool),
        )
