"""The File and Batch objects in OpenAI's shapes, plus what only the gateway may know.

`owner` (the key id of the caller that made it) never leaves the gateway: a
file or batch is visible only to its owner, and another caller's id is a 404
rather than a 403, so ids cannot be probed. Status names and timestamps are
OpenAI's (https://platform.openai.com/docs/api-reference/batch/object).
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import Any

BATCH_PURPOSE = "batch"
BATCH_OUTPUT_PURPOSE = "batch_output"
COMPLETION_WINDOW = "24h"
COMPLETION_WINDOW_S = 24 * 3600.0
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")

VALIDATING = "validating"
FAILED = "failed"
IN_PROGRESS = "in_progress"
FINALIZING = "finalizing"
COMPLETED = "completed"
EXPIRED = "expired"
CANCELLING = "cancelling"
CANCELLED = "cancelled"
TERMINAL = frozenset({FAILED, COMPLETED, EXPIRED, CANCELLED})
"""A batch in one of these never changes again."""
RUNNABLE = frozenset({IN_PROGRESS})
"""Lines of a batch run only in these; any other status drops them from the queue."""

_STATUS_STAMP = {
    IN_PROGRESS: "in_progress_at",
    FINALIZING: "finalizing_at",
    COMPLETED: "completed_at",
    FAILED: "failed_at",
    EXPIRED: "expired_at",
    CANCELLING: "cancelling_at",
    CANCELLED: "cancelled_at",
}


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(12)


@dataclass(slots=True)
class FileObject:
    id: str
    owner: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    expires_at: int | None = None

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileObject:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(slots=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0

    def done(self) -> int:
        return self.completed + self.failed


@dataclass(slots=True)
class BatchObject:
    """A batch; `pool` and `model` are fixed when its input validates (one model a batch,
    as OpenAI requires), `errors` holds the validation failures in OpenAI's list shape."""

    id: str
    owner: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    expires_at: int
    status: str = VALIDATING
    metadata: dict[str, str] | None = None
    model: str | None = None
    pool: str | None = None
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = field(default_factory=RequestCounts)

    def moved_to(self, status: str, at: float) -> BatchObject:
        """This batch in `status`, stamped with OpenAI's `<status>_at` (the first time only)."""
        moved = replace(self, status=status)
        stamp = _STATUS_STAMP.get(status)
        if stamp is not None and getattr(moved, stamp) is None:
            setattr(moved, stamp, int(at))
        return moved

    def to_openai(self) -> dict[str, Any]:
        counts = self.request_counts
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {
                "total": counts.total,
                "completed": counts.completed,
                "failed": counts.failed,
            },
            "metadata": self.metadata,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchObject:
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        counts = values.get("request_counts")
        if isinstance(counts, dict):
            values["request_counts"] = RequestCounts(**counts)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class LineTask:
    """One queue message: where a batch line is, never the line itself (a Storage queue
    message holds 64 KB; a line may be larger), so every message is a few dozen bytes."""

    batch_id: str
    index: int
    offset: int
    length: int

    def to_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "index": self.index, "offset": self.offset,
                "length": self.length}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LineTask:
        return cls(str(data["batch_id"]), int(data["index"]), int(data["offset"]),
                   int(data["length"]))  # fmt: skip


@dataclass(frozen=True, slots=True)
class LineResult:
    """A line's outcome, as one line of the output file (status 200) or the error file.

    `response` is OpenAI's `{"status_code", "request_id", "body"}`; `error` its
    `{"code", "message"}` for a line that got no response at all.
    """

    batch_id: str
    index: int
    custom_id: str
    response: dict[str, Any] | None
    error: dict[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        return self.response is not None and self.response.get("status_code") == 200

    def output_line(self) -> dict[str, Any]:
        return {
            "id": f"batch_req_{self.batch_id.removeprefix('batch_')}_{self.index}",
            "custom_id": self.custom_id,
            "response": self.response,
            "error": self.error,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LineResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
