"""What a client may ask of the Files and Batches endpoints, checked field by field.

Everything here arrives from the client, so every field is type-checked and
bounded before the service sees it, and each refusal names the field
(`param`) in OpenAI's error shape. Bounds are OpenAI's: metadata is at most
16 pairs with keys of 64 and values of 512 characters; a list page holds at
most 100 batches or 10,000 files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spotgate.batch.objects import BATCH_ENDPOINTS, COMPLETION_WINDOW
from spotgate.errors import InvalidRequest

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_ID_CHARS = 128
BATCH_PAGE = (20, 100)
"""(default, most) batches a list page holds."""
FILE_PAGE = (10_000, 10_000)
_CREATE_FIELDS = frozenset(
    {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
)


@dataclass(frozen=True, slots=True)
class CreateBatch:
    """A checked `POST /v1/batches` body: building one with a bad value raises."""

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None

    def __post_init__(self) -> None:
        _one_of("endpoint", self.endpoint, BATCH_ENDPOINTS)
        _one_of("completion_window", self.completion_window, (COMPLETION_WINDOW,))
        check_metadata(self.metadata)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CreateBatch:
        unknown = sorted(set(body) - _CREATE_FIELDS)
        if unknown:
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {unknown[0]}.", param=unknown[0]
            )
        if body.get("output_expires_after") is not None:
            raise InvalidRequest(
                "output_expires_after is not supported: output files are kept until deleted.",
                param="output_expires_after",
                code="unsupported_parameter",
            )
        return cls(
            input_file_id=required_id(body, "input_file_id"),
            endpoint=_one_of("endpoint", body.get("endpoint"), BATCH_ENDPOINTS),
            completion_window=_one_of(
                "completion_window", body.get("completion_window"), (COMPLETION_WINDOW,)
            ),
            metadata=check_metadata(body.get("metadata")),
        )


def required_id(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise InvalidRequest(
            f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
        )
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise InvalidRequest(
            f"'{name}' must be a non-empty string of at most {MAX_ID_CHARS} characters.",
            param=name,
            code="invalid_value",
        )
    return value


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value is None:
        raise InvalidRequest(
            f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
        )
    if value not in allowed:
        shown = repr(value)[:80] if isinstance(value, str) else type(value).__name__
        raise InvalidRequest(
            f"Invalid value for '{name}': {shown}. Supported values are: "
            + ", ".join(f"'{a}'" for a in allowed)
            + ".",
            param=name,
            code="invalid_value",
        )
    return str(value)


def check_metadata(value: object) -> dict[str, str] | None:
    """OpenAI's metadata: up to 16 string pairs, keys <= 64 and values <= 512 characters."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad_metadata("metadata must be an object of string keys and string values.")
    if len(value) > MAX_METADATA_PAIRS:
        raise _bad_metadata(
            f"metadata holds {len(value)} pairs; at most {MAX_METADATA_PAIRS} are allowed."
        )
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise _bad_metadata(
                f"metadata key '{key[:MAX_METADATA_KEY_CHARS]}...' is longer than "
                f"{MAX_METADATA_KEY_CHARS} characters."
            )
        if not isinstance(item, str):
            raise _bad_metadata(f"metadata['{key}'] must be a string.")
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise _bad_metadata(
                f"metadata['{key}'] is longer than {MAX_METADATA_VALUE_CHARS} characters."
            )
    return dict(value)


def _bad_metadata(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="metadata", code="invalid_value")


def page_limit(raw: str | None, page: tuple[int, int]) -> int:
    """The `limit` query parameter: 1 to the page's most, its default when absent."""
    default, most = page
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 1 <= int(raw) <= most:
        raise InvalidRequest(
            f"'limit' must be an integer from 1 to {most}.", param="limit", code="invalid_value"
        )
    return int(raw)


def sort_order(raw: str | None) -> str:
    if raw is None or raw in ("asc", "desc"):
        return raw or "desc"
    raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order", code="invalid_value")
