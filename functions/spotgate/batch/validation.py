"""A `validating` batch's next state, once its input file is read: run it, or fail it.

This is the orchestration's first step, kept pure so a replayed activity
decides the same way. The model is resolved once, here, for the whole
batch: a name the caller may not use fails the batch now (with OpenAI's
`model_not_found`) rather than every line later, and `pool` fixes which
queue and which workers its lines go to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from spotgate.batch.input_file import InputLimits, InputLine, batch_error, parse_input
from spotgate.batch.objects import (
    CANCELLED,
    CANCELLING,
    FAILED,
    IN_PROGRESS,
    VALIDATING,
    BatchObject,
    LineTask,
    RequestCounts,
)

ModelResolver = Callable[[str], tuple[str, str] | None]
"""A model name as a caller wrote it -> (served model name, pool), or None when the name
is unknown or the batch's owner may not use it."""
OwnerModelResolver = Callable[[str, str], tuple[str, str] | None]
"""(owner key id, model name) -> (served model name, pool), or None: `ModelResolver` for
any owner, as a host builds it once."""


@dataclass(frozen=True, slots=True)
class Validated:
    """The batch in its next state and, when that is `in_progress`, the lines to queue."""

    batch: BatchObject
    lines: tuple[InputLine, ...] = ()

    def tasks(self) -> list[LineTask]:
        return [LineTask(self.batch.id, x.index, x.offset, x.length) for x in self.lines]


def validate(
    batch: BatchObject,
    content: bytes,
    resolve_model: ModelResolver,
    *,
    now: float,
    limits: InputLimits | None = None,
) -> Validated:
    """`in_progress` with its model, pool and line count, or `failed` with OpenAI's errors.

    A batch cancelled while it validated becomes `cancelled` (no line ever ran);
    one in any other status than `validating` is returned as it is.
    """
    if batch.status == CANCELLING:
        return Validated(batch.moved_to(CANCELLED, now))
    if batch.status != VALIDATING:
        return Validated(batch)
    parsed = parse_input(content, batch.endpoint, limits)
    if not parsed.ok:
        errors = list(parsed.errors)
        hidden = parsed.error_count - len(errors)
        if hidden > 0:
            message = f"{hidden} more errors not shown ({parsed.error_count} in all)."
            errors.append(batch_error("too_many_errors", message))
        return Validated(failed(batch, errors, now))
    assert parsed.model is not None
    resolved = resolve_model(parsed.model)
    if resolved is None:
        message = f"The model '{parsed.model}' does not exist or you do not have access to it."
        error = batch_error("model_not_found", message, param="body.model", line=parsed.model_line)
        return Validated(failed(batch, [error], now))
    served, pool = resolved
    running = replace(
        batch.moved_to(IN_PROGRESS, now),
        model=served,
        pool=pool,
        request_counts=RequestCounts(total=len(parsed.lines)),
    )
    return Validated(running, parsed.lines)


def failed(batch: BatchObject, errors: list[dict[str, Any]], now: float) -> BatchObject:
    """The batch failed before any line ran, for `errors` (OpenAI's `errors.data`)."""
    return replace(batch.moved_to(FAILED, now), errors=errors)


class InputValidator:
    """`validate` as the orchestration's `BatchValidator`: built once by the host, it
    resolves each batch's model for that batch's owner."""

    def __init__(
        self, resolve_model: OwnerModelResolver, limits: InputLimits | None = None
    ) -> None:
        self._resolve = resolve_model
        self._limits = limits

    def validate(
        self, batch: BatchObject, content: bytes, now: float
    ) -> tuple[BatchObject, list[tuple[int, int]]]:
        outcome = validate(
            batch, content, partial(self._resolve, batch.owner), now=now, limits=self._limits
        )
        return outcome.batch, [(line.offset, line.length) for line in outcome.lines]
