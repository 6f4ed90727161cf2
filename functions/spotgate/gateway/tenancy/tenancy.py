"""Keys, limits and metering as one part of the runtime: its steps, and what it starts and stops.

A host builds it from three stores (keys, usage, counters) and the secret
store; the pipeline gets its steps, in the order they must run:
authorise (received) -> model access (resolved) -> metering (finished) ->
rate limits (resolved; finished after metering, which it settles from).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from spotgate.background import cancel_and_wait
from spotgate.clock import Clock
from spotgate.gateway.catalog import ModelCatalog
from spotgate.gateway.serving import ServingStep
from spotgate.gateway.tenancy.access import AuthoriseStep, ModelAccessStep, may_use, model_names
from spotgate.gateway.tenancy.authority import Caller, KeyAuthority
from spotgate.gateway.tenancy.directory import KeyDirectory
from spotgate.gateway.tenancy.limit_step import RateLimitStep
from spotgate.gateway.tenancy.limiter import STALE_S, Limiter
from spotgate.gateway.tenancy.metering import MeteringStep
from spotgate.gateway.tenancy.ports import CounterStore, KeyStore, UsageStore
from spotgate.gateway.tenancy.pricing import Prices
from spotgate.gateway.tenancy.recorder import UsageRecorder

log = logging.getLogger("spotgate.tenancy")

HEARTBEAT_S = STALE_S / 3


@dataclass(frozen=True)
class TenancyStores:
    keys: KeyStore
    usage: UsageStore
    counters: CounterStore


class Tenancy:
    def __init__(
        self,
        authority: KeyAuthority,
        directory: KeyDirectory,
        limiter: Limiter,
        recorder: UsageRecorder,
        prices: Prices,
        metering: MeteringStep,
        counters: CounterStore,
        clock: Clock,
    ) -> None:
        self.authority = authority
        self.directory = directory
        self.limiter = limiter
        self.recorder = recorder
        self.prices = prices
        self._counters = counters
        self._clock = clock
        self._rate_limits = RateLimitStep(limiter, clock)
        self.steps: tuple[ServingStep, ...] = (
            AuthoriseStep(authority),
            ModelAccessStep(),
            metering,
            self._rate_limits,
        )
        self._heartbeat: asyncio.Task[None] | None = None

    @staticmethod
    def visible_models(caller: Caller, catalog: ModelCatalog) -> dict[str, Any]:
        """`/v1/models` as this caller may use it (OpenAI lists only what a key can call)."""
        listing = catalog.listing()
        if caller.key is None or not (caller.key.models or caller.key.groups):
            return listing
        visible = []
        for item in listing["data"]:
            model = catalog.resolve(item["id"])
            if model is not None and may_use(caller.key, *model_names(model)):
                visible.append(item)
        return {**listing, "data": visible}

    @property
    def usage(self) -> UsageStore:
        return self.recorder.store

    async def start(self) -> None:
        await self.directory.start()
        await self.recorder.start()
        self._heartbeat = asyncio.get_running_loop().create_task(self._beating())

    async def close(self) -> None:
        """After the router closed: every request has finished and been recorded."""
        await cancel_and_wait(self._heartbeat)
        await self._rate_limits.drain()
        await self.recorder.close()
        await self.directory.close()
        await self._counters.close()

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.limiter.heartbeat(self._clock.now())
            except Exception as exc:
                log.warning("could not renew this instance's parallel-request counts: %r", exc)
