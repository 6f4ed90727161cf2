"""A pool's demand as this gateway process sees it: the load source of a one-process stack."""

from __future__ import annotations

from spotgate.fleet.observation import PoolLoad
from spotgate.gateway.admission import Admission


class AdmissionPoolLoad:
    """Slots in use plus requests waiting for one: exact, and free to read, in-process."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    async def load(self, pool: str) -> PoolLoad:
        return PoolLoad(
            admission_queue_depth=self._admission.depth(pool),
            gateway_in_flight=self._admission.in_use(pool),
        )
