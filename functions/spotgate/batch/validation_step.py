"""What preparing a batch needs from validation: the batch in its next status, and where
its lines are (the spans `line_spans` gives, one per request, in index order)."""

from __future__ import annotations

from typing import Protocol

from spotgate.batch.objects import BatchObject


class BatchValidator(Protocol):
    def validate(
        self, batch: BatchObject, content: bytes, now: float
    ) -> tuple[BatchObject, list[tuple[int, int]]]:
        """`in_progress` (model, pool and total set) with every line's (offset, length), or
        `failed` with OpenAI's per-line errors and no spans."""
        ...
