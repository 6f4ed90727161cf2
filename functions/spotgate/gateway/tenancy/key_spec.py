"""What an admin may say about a key, checked before it reaches the store.

Every field is bounded (lengths, counts, ranges): the admin API is a
boundary too, and a key record is read on every request of every instance.
`expires_at` takes unix seconds or an ISO 8601 date or time (UTC unless it
says otherwise), as the CLI's `--expires 2027-01-31` sends it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from spotgate.errors import InvalidRequest

Name = Annotated[str, Field(min_length=1, max_length=200)]
Count = Annotated[int, Field(gt=0, le=10**12)]
MAX_METADATA_BYTES = 4096


class PriceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_per_1m: float = Field(default=0.0, ge=0, le=1e6)
    output_per_1m: float = Field(default=0.0, ge=0, le=1e6)


class ModelLimitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rpm: Count | None = None
    tpm: Count | None = None


class KeyChanges(BaseModel):
    """The editable fields; absent ones are left as they are (PATCH) or default (POST)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    owner: Name | None = None
    models: Annotated[list[Name], Field(max_length=256)] | None = None
    groups: Annotated[list[Name], Field(max_length=64)] | None = None
    rpm: Count | None = None
    tpm: Count | None = None
    model_limits: Annotated[dict[Name, ModelLimitSpec], Field(max_length=256)] | None = None
    max_parallel: Annotated[int, Field(gt=0, le=100_000)] | None = None
    budget_usd: Annotated[float, Field(ge=0, le=1e9)] | None = None
    budget_period: Literal["day", "month", "total"] | None = None
    expires_at: float | None = None
    prices: Annotated[dict[Name, PriceSpec], Field(max_length=256)] | None = None
    cache_group: Name | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("expires_at", mode="before")
    @classmethod
    def _when(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("must be unix seconds or an ISO 8601 date") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
        if isinstance(value, float | int) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(orjson.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
        return value

    def changes(self) -> dict[str, Any]:
        """Only what the admin sent (an explicit null clears a field)."""
        return self.model_dump(exclude_unset=True)


class NewKey(KeyChanges):
    name: Name


def _invalid(exc: ValidationError) -> InvalidRequest:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return InvalidRequest(f"Invalid key field '{where}': {error['msg']}.", param=where or None)


def parse_new_key(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    try:
        spec = NewKey.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    fields = spec.changes()
    return fields.pop("name"), fields


def parse_key_changes(body: dict[str, Any]) -> dict[str, Any]:
    try:
        changes = KeyChanges.model_validate(body).changes()
    except ValidationError as exc:
        raise _invalid(exc) from None
    if "name" in changes and changes["name"] is None:
        raise InvalidRequest("A key's 'name' cannot be removed.", param="name")
    return changes
