"""A batch input file checked the way OpenAI checks it, before a single line is queued.

The file is JSONL, one request a line:
`{"custom_id": "...", "method": "POST", "url": "<the batch's endpoint>", "body": {...}}`.
Every request names the same model (OpenAI runs a batch on one model), and
every `custom_id` is unique: it is how a caller matches outputs to inputs,
which come back in no promised order.

What comes out is where each request is, as exact byte ranges into the
uploaded bytes: a queue message carries a range rather than the line (a
Storage queue message holds 64 KB, a line up to the gateway's body limit),
and the runner reads just that range. The ranges are `line_spans`', the one
splitter the enqueuer uses too, so a line's index is the same everywhere:
blank lines are skipped, and a Windows line's CR stays in its range (JSON
reads it as whitespace).

A bad file is reported as OpenAI does, in `errors.data`: one entry per bad
line, `{"code", "message", "param", "line"}` with 1-based physical line
numbers, so an editor's "go to line" finds it. Only the first `max_errors`
are kept (a 50,000-line file of garbage must not make a 50,000-entry batch
object); `error_count` says how many there were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from spotgate.batch.line_spans import line_spans

MAX_CUSTOM_ID_CHARS = 512
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class InputLimits:
    """OpenAI's bound on requests (50,000), and the gateway's: a line may be no larger
    than a request body the gateway accepts, since each line becomes one."""

    max_file_bytes: int = 100 * 1024 * 1024
    max_lines: int = 50_000
    max_line_bytes: int = 4 * 1024 * 1024
    max_errors: int = 100


@dataclass(frozen=True, slots=True)
class InputLine:
    """One request: `index` counts requests from 0 (the output's order), `line` is its
    1-based line in the file, `offset` and `length` its bytes without the line end."""

    index: int
    line: int
    custom_id: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class ParsedInput:
    model: str | None
    model_line: int | None
    lines: tuple[InputLine, ...]
    errors: tuple[dict[str, Any], ...]
    error_count: int

    @property
    def ok(self) -> bool:
        return self.error_count == 0


def batch_error(
    code: str, message: str, *, param: str | None = None, line: int | None = None
) -> dict[str, Any]:
    """One entry of OpenAI's batch `errors.data`."""
    return {"code": code, "message": message, "param": param, "line": line}


class _Scan:
    """What the lines seen so far fix for the ones after: ids taken, the batch's model."""

    def __init__(self, endpoint: str, limits: InputLimits) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.requests = 0
        self.seen: dict[str, int] = {}
        self.model: str | None = None
        self.model_line: int | None = None
        self.lines: list[InputLine] = []
        self.errors: list[dict[str, Any]] = []
        self.error_count = 0

    def fail(self, error: dict[str, Any]) -> None:
        self.error_count += 1
        if len(self.errors) < self.limits.max_errors:
            self.errors.append(error)

    def result(self) -> ParsedInput:
        if self.requests == 0 and self.error_count == 0:
            self.fail(batch_error("empty_file", "The input file holds no requests."))
        return ParsedInput(
            self.model, self.model_line, tuple(self.lines), tuple(self.errors), self.error_count
        )


def parse_input(content: bytes, endpoint: str, limits: InputLimits | None = None) -> ParsedInput:
    """Every request of `content` with its byte range, or the errors that fail the batch."""
    limits = limits or InputLimits()
    scan = _Scan(endpoint, limits)
    if len(content) > limits.max_file_bytes:
        message = (
            f"The input file is {len(content)} bytes; a batch takes at most "
            f"{limits.max_file_bytes} bytes."
        )
        scan.fail(batch_error("file_too_large", message))
        return scan.result()
    line, counted_to = 1, 0
    for offset, length in line_spans(content):
        line += content.count(b"\n", counted_to, offset)
        counted_to = offset
        if scan.requests == limits.max_lines:
            message = (
                f"The input file holds more than {limits.max_lines} requests; "
                "split it into several batches."
            )
            scan.fail(batch_error("too_many_lines", message, line=line))
            break
        scan.requests += 1
        _check_line(scan, content, offset, length, line)
    return scan.result()


def _check_line(scan: _Scan, content: bytes, offset: int, length: int, line: int) -> None:
    record = _record(scan, content, offset, length, line)
    if record is None:
        return
    custom_id, model = record.get("custom_id"), _model_of(record)
    error = _request_error(record, scan.endpoint, line)
    if error is None and custom_id in scan.seen:
        message = (
            f"custom_id '{custom_id}' is on line {scan.seen[str(custom_id)]} and again on "
            f"line {line}; each request needs its own."
        )
        error = batch_error("duplicate_custom_id", message, param="custom_id", line=line)
    if error is None and scan.model is not None and model != scan.model:
        message = (
            f"Line {line} asks for model '{model}' but line {scan.model_line} asks for "
            f"'{scan.model}'; a batch runs on one model."
        )
        error = batch_error("mismatched_model", message, param="body.model", line=line)
    if isinstance(custom_id, str) and _valid_custom_id(custom_id):
        scan.seen.setdefault(custom_id, line)
    if scan.model is None and model is not None:
        scan.model, scan.model_line = model, line
    if error is not None:
        scan.fail(error)
        return
    assert isinstance(custom_id, str)
    scan.lines.append(InputLine(len(scan.lines), line, custom_id, offset, length))


def _record(
    scan: _Scan, content: bytes, offset: int, length: int, line: int
) -> dict[str, Any] | None:
    """The line as a JSON object, or None once its error is recorded."""
    if length > scan.limits.max_line_bytes:
        message = (
            f"Line {line} is {length} bytes; a request may be at most "
            f"{scan.limits.max_line_bytes} bytes."
        )
        scan.fail(batch_error("line_too_large", message, line=line))
        return None
    try:
        record = orjson.loads(content[offset : offset + length])
    except orjson.JSONDecodeError as exc:
        if content.startswith(UTF8_BOM, offset):
            reason = "starts with a UTF-8 byte order mark; save the file as UTF-8 without one"
        elif "utf-8" in exc.msg.lower():
            reason = "is not valid UTF-8"
        else:
            reason = f"is not valid JSON ({exc.msg} at column {exc.colno})"
        scan.fail(batch_error("invalid_json_line", f"Line {line} {reason}.", line=line))
        return None
    if not isinstance(record, dict):
        scan.fail(batch_error("invalid_json_line", f"Line {line} is not a JSON object.", line=line))
        return None
    return record


def _valid_custom_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CUSTOM_ID_CHARS


def _model_of(record: dict[str, Any]) -> str | None:
    body = record.get("body")
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else None


def _request_error(record: dict[str, Any], endpoint: str, line: int) -> dict[str, Any] | None:
    """The first thing wrong with the request on `line`, in the order a reader checks it."""

    def error(code: str, message: str, param: str) -> dict[str, Any]:
        return batch_error(code, f"Line {line}: {message}", param=param, line=line)

    for name in ("custom_id", "method", "url", "body"):
        if name not in record:
            return error("missing_required_parameter", f"'{name}' is required.", name)
    if not _valid_custom_id(record["custom_id"]):
        limit = MAX_CUSTOM_ID_CHARS
        message = f"custom_id must be a non-empty string of at most {limit} characters."
        return error("invalid_custom_id", message, "custom_id")
    if record["method"] != "POST":
        return error("invalid_method", "method must be 'POST'.", "method")
    if record["url"] != endpoint:
        return error("invalid_url", f"url must be the batch's endpoint '{endpoint}'.", "url")
    body = record["body"]
    if not isinstance(body, dict):
        return error("invalid_body", "body must be a JSON object.", "body")
    if "model" not in body:
        return error("missing_required_parameter", "body.model is required.", "body.model")
    if _model_of(record) is None:
        return error("invalid_body", "body.model must be a non-empty string.", "body.model")
    if body.get("stream") not in (None, False):
        return error(
            "invalid_body", "a batch request cannot stream; drop body.stream.", "body.stream"
        )
    return None
