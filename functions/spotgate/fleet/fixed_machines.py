"""Workers on machines the fleet manager did not create and cannot delete: a fixed list.

A worker may only enrol if the fleet manager knows its instance and the
address the instance has (registry.py): a leaked fleet token alone must not
add a worker. With a cloud, the listing of the scale sets is that knowledge;
without one (`spotgate serve` next to GPU boxes someone else runs), the
operator's list is. So this compute provider lists the machines and never
provisions or deletes anything: the monitor still routes around silent
workers, drains on eviction notices and reports, but a machine it wants gone
stays until its operator stops it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from spotgate.fleet.compute import Instance, ProvisionRequest


@dataclass(frozen=True)
class FixedMachine:
    worker_id: str
    pool: str
    url: str
    """Where its engine listens; its agent may enrol at this address only."""

    @classmethod
    def parse(cls, spec: str, default_pool: str = "default") -> FixedMachine:
        """`ID=URL` or `POOL/ID=URL`, e.g. `big/gpu-1=http://10.0.0.5:8000`; the URL's host
        must be an IP address, as the registry compares addresses, not names."""
        name, sep, url = spec.partition("=")
        pool, _, worker_id = name.rpartition("/")
        if not sep or not worker_id.strip() or not url.strip():
            raise ValueError(f"'{spec}': expected ID=URL or POOL/ID=URL")
        try:
            ipaddress.ip_address(urlsplit(url.strip()).hostname or "")
        except ValueError:
            raise ValueError(f"'{spec}': the URL's host must be an IP address") from None
        return cls(worker_id.strip(), pool.strip() or default_pool, url.strip())

    @property
    def instance(self) -> Instance:
        parts = urlsplit(self.url)
        return Instance(
            worker_id=self.worker_id,
            pool=self.pool,
            priority="on-demand",
            private_ip=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 80),
        )


class FixedMachines:
    """A ComputeProvider over a fixed list: asked to add or delete, it returns no ids."""

    def __init__(self, machines: Sequence[FixedMachine]) -> None:
        self._machines = tuple(machines)

    async def provision(self, request: ProvisionRequest) -> list[str]:
        return []

    async def delete(self, pool: str, worker_ids: Sequence[str]) -> list[str]:
        return []

    async def instances(self, pool: str) -> list[Instance]:
        return [m.instance for m in self._machines if m.pool == pool]

    async def close(self) -> None:
        return None
