"""Worker selection policies, registered by name so a new policy is one class and its test."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar

from spotgate.fleet.worker import Worker
from spotgate.gateway.load import OutstandingRequests


class SelectionPolicy:
    """Picks the worker for one request among the candidates routing allows."""

    registry: ClassVar[dict[str, type[SelectionPolicy]]] = {}
    name: ClassVar[str]

    def __init_subclass__(cls, *, name: str, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name
        SelectionPolicy.registry[name] = cls

    def __init__(self, load: OutstandingRequests) -> None:
        self.load = load

    def choose(self, candidates: Sequence[Worker], request: dict[str, object]) -> Worker:
        raise NotImplementedError

    @classmethod
    def make(cls, name: str, load: OutstandingRequests) -> SelectionPolicy:
        try:
            return cls.registry[name](load)
        except KeyError:
            known = ", ".join(sorted(cls.registry))
            raise ValueError(f"unknown selection policy {name!r}; known: {known}") from None


class LeastOutstanding(SelectionPolicy, name="least-outstanding"):
    """Fewest requests in flight from this gateway; ties rotate so equal workers share load."""

    def __init__(self, load: OutstandingRequests) -> None:
        super().__init__(load)
        self._turn = itertools.count()

    def choose(self, candidates: Sequence[Worker], request: dict[str, object]) -> Worker:
        if len(candidates) == 1:
            return candidates[0]
        offset = next(self._turn) % len(candidates)
        best = candidates[offset]
        best_load = self.load.of(best.id)
        for i in range(1, len(candidates)):
            worker = candidates[(offset + i) % len(candidates)]
            load = self.load.of(worker.id)
            if load < best_load:
                best, best_load = worker, load
        return best
