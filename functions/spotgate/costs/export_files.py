"""The CLI's export files read back as the objects a cost report takes.

`spotgate usage --export usage.csv|.parquet` writes usage records and
`spotgate fleet export DIR` writes the fleet journal's worker spans
(`worker_spans.csv|.parquet`), so a deployment's history can be analysed
where the stack cannot be reached. Reading them back into `UsageRecord` and
`WorkerSpan` lets a notebook run the very `usage_report` that answers
`/admin/usage`, rather than a second cost model that could drift from it.

CSV flattens every cell to text and None to an empty cell; Parquet keeps
types but may hold a column that pyarrow could not type as text. Both are
turned back into the dataclasses' own types, by their annotations, so the
two formats read back equal. A file that is not what the CLI writes (a
missing or unknown column, a token count that is not a whole number, the same
request twice) is refused with a ValueError naming the file, the line and the
column: a report built on a half-read file would add up to the wrong total
without saying so.
"""

from __future__ import annotations

import contextlib
import csv
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from spotgate.fleet.journal_export import SPAN_COLUMNS
from spotgate.fleet.signals import PRIORITIES
from spotgate.fleet.worker_spans import WorkerSpan
from spotgate.gateway.tenancy.usage import USAGE_COLUMNS, UsageRecord

SPANS_NAME = "worker_spans"
READ_PARQUET_HINT = "reading .parquet needs pyarrow: pip install pyarrow (or spotgate[analysis])"
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_NEEDS = {int: "a whole number", float: "a number", bool: "True or False"}
_RecordT = TypeVar("_RecordT")


@dataclass(frozen=True)
class ExportedHistory:
    """What two exports hold, ready for `usage_report(records, spans, ..., since=, until=)`."""

    records: list[UsageRecord]
    """Empty when there was no usage export: a report is then GPU cost alone."""
    spans: list[WorkerSpan]
    since: float
    until: float
    """The window the data covers, [since, until); see `export_window`."""


@dataclass(frozen=True)
class _Kind:
    """A column's Python type, and whether an empty cell (None) is a value of it."""

    base: type
    optional: bool


def _kinds(cls: type) -> dict[str, _Kind]:
    """Each dataclass field's type from its annotation, so a new field is read without a
    change here; a type this module cannot read from text fails at import, not on a file."""
    kinds = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        bases = [a for a in args if a is not type(None)]
        if len(bases) != 1 or bases[0] not in (str, int, float, bool):
            raise TypeError(f"{cls.__name__}.{name}: cannot read {hint} from a file")
        kinds[name] = _Kind(bases[0], optional=len(args) > 1)
    return kinds


_RECORD_KINDS = _kinds(UsageRecord)
_SPAN_KINDS = {**_kinds(WorkerSpan), "seconds": _Kind(float, optional=False)}


def read_usage_records(path: Path) -> list[UsageRecord]:
    """The records `spotgate usage --export` wrote to `path` (.csv or .parquet), in file order.

    Raises ValueError naming the file (and line and column) for a file that is
    not such an export, and ImportError saying what to install for Parquet
    without pyarrow.
    """
    records = _read(path, USAGE_COLUMNS, _RECORD_KINDS, _usage_record)
    first_line: dict[str, str] = {}
    for where, record in records:
        seen = first_line.setdefault(record.request_id, where)
        if seen != where:
            raise ValueError(
                f"{where}: request_id {record.request_id!r} is also at {seen}: a cost report "
                "shares GPU cost out by request id, so each must be there once"
            )
    return [record for _, record in records]


def read_worker_spans(path: Path) -> list[WorkerSpan]:
    """The worker spans `spotgate fleet export DIR` wrote: `path` is DIR or the file itself."""
    return [span for span, _ in _read_spans(path)]


def load_export(
    usage: Path | None,
    fleet_dir: Path,
    *,
    since: float | None = None,
    until: float | None = None,
) -> ExportedHistory:
    """Records from the usage export (none if `usage` is None) and spans from the fleet
    export, over the window they cover unless `since` / `until` say otherwise."""
    records = read_usage_records(usage) if usage is not None else []
    spans = _read_spans(fleet_dir)
    if since is None or until is None:
        try:
            found_since, found_until = export_window(records, spans)
        except ValueError:
            raise ValueError(
                f"{usage or 'no usage export'} and {fleet_dir} hold no usage records and "
                "no worker spans: pass since and until to report on an empty window"
            ) from None
        since = found_since if since is None else since
        until = found_until if until is None else until
    if until < since:
        raise ValueError(f"until ({until}) is before since ({since})")
    return ExportedHistory(records, [span for span, _ in spans], since, until)


def export_window(
    records: Sequence[UsageRecord], spans: Sequence[tuple[WorkerSpan, float]]
) -> tuple[float, float]:
    """[since, until) covering every record and the GPU time the fleet export counted.

    The files do not say which window they were exported for, but each span's
    `seconds` is its time inside that window: an ended span with fewer seconds
    than its length was cut at the window's start, and the export was made at
    the latest of the spans' ends, a running span's start plus its seconds and
    the last request. A running span is then counted back from that time, not
    from its start, which keeps a worker that has run for a month from putting
    a month of idle GPU cost into a week's report. A span's `start` and `end`
    stay as written. When no request and no span says when the export was made
    (every worker still running and started before the window, and no usage
    export), the window found starts at the oldest start: pass `since` and
    `until` to `load_export` then. Raises ValueError when there is no data.
    """
    if not spans and not records:
        raise ValueError("no usage records and no worker spans")
    ats = [record.at for record in records]
    ends = [s.end if s.end is not None else s.start + seconds for s, seconds in spans]
    export_time = max([*ends, *ats])
    counted = [(s, seconds) for s, seconds in spans if seconds > 0]
    starts = [(s.end if s.end is not None else export_time) - sec for s, sec in counted]
    since = min([*starts, *ats], default=export_time)
    until = max(export_time, math.nextafter(max(ats), math.inf) if ats else -math.inf)
    return since, until


def _usage_record(values: dict[str, Any], where: str) -> UsageRecord:
    return UsageRecord(**values)


def _span(values: dict[str, Any], where: str) -> tuple[WorkerSpan, float]:
    seconds = values.pop("seconds")
    if values["priority"] not in PRIORITIES:
        raise ValueError(
            f"{where}: column priority: {values['priority']!r} is not one of {PRIORITIES}"
        )
    if seconds < 0:
        raise ValueError(f"{where}: column seconds: {seconds!r} is negative")
    return WorkerSpan(**values), seconds


def _read_spans(path: Path) -> list[tuple[WorkerSpan, float]]:
    """Spans with their `seconds` column, which `export_window` needs and WorkerSpan lacks."""
    file = _spans_file(path)
    return [span for _, span in _read(file, SPAN_COLUMNS, _SPAN_KINDS, _span)]


def _spans_file(path: Path) -> Path:
    """`path` itself, or the one worker_spans file in the folder: two (CSV and Parquet from
    two exports into one folder) may differ, so which one is meant must be said."""
    if not path.is_dir():
        return path
    found = [path / f"{SPANS_NAME}{suffix}" for suffix in (".csv", ".parquet")]
    found = [file for file in found if file.exists()]
    if not found:
        raise FileNotFoundError(
            f"no {SPANS_NAME}.csv or {SPANS_NAME}.parquet in {path}: "
            f"write one with `spotgate fleet export {path}`"
        )
    if len(found) > 1:
        raise ValueError(
            f"{path} holds both {found[0].name} and {found[1].name}: pass the file to read"
        )
    return found[0]


def _read(
    path: Path,
    columns: Sequence[str],
    kinds: Mapping[str, _Kind],
    build: Callable[[dict[str, Any], str], _RecordT],
) -> list[tuple[str, _RecordT]]:
    """(where, object) for each row of `path`, after its header is checked against `columns`."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path, columns)
    elif suffix == ".parquet":
        rows = _parquet_rows(path, columns)
    else:
        raise ValueError(f"cannot read {path}: the file must end in .csv or .parquet")
    found = []
    for where, row in rows:
        values = {name: _convert(row[name], kinds[name], where, name) for name in columns}
        found.append((where, build(values, where)))
    return found


def _check_header(path: Path, header: Sequence[str], columns: Sequence[str]) -> None:
    doubled = sorted({name for name in header if list(header).count(name) > 1})
    missing = [name for name in columns if name not in header]
    unknown = [name for name in header if name not in columns]
    for problem, names in (("repeated", doubled), ("missing", missing), ("unknown", unknown)):
        if names:
            raise ValueError(
                f"{path}: {problem} column(s) {', '.join(map(repr, names))}; "
                f"an export has exactly {', '.join(columns)}"
            )


def _csv_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows as text, read as they are used; an empty cell is None, as the writer wrote None
    (utf-8-sig: a spreadsheet that saved the file may have put a byte-order mark in front)."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: the file is empty (not even a header)")
        _check_header(path, header, columns)
        for cells in reader:
            where = f"{path}:{reader.line_num}"
            if len(cells) != len(header):
                raise ValueError(f"{where}: {len(cells)} values for {len(header)} columns")
            yield where, {name: cell or None for name, cell in zip(header, cells, strict=True)}


def _parquet_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows as the values Parquet typed them (a column of nulls only is all None)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError(READ_PARQUET_HINT) from error
    try:
        table = pq.read_table(str(path))
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    _check_header(path, table.column_names, columns)
    for number, row in enumerate(table.to_pylist(), start=1):
        yield f"{path}: row {number}", row


def _convert(value: Any, kind: _Kind, where: str, column: str) -> Any:
    """`value` (text from CSV, or what Parquet held) as `kind`; ValueError saying what is wrong."""
    if value is None:
        if kind.optional:
            return None
        if kind.base is str:
            return ""  # CSV writes "" and None alike: a text column cannot tell them apart
        raise ValueError(f"{where}: column {column} is empty; it needs {_NEEDS[kind.base]}")
    try:
        if kind.base is str:
            return _text(value)
        if kind.base is bool:
            return _bool(value)
        if kind.base is int:
            return _int(value)
        return _float(value)
    except ValueError as error:
        raise ValueError(f"{where}: column {column}: {error}") from None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a zone "1" that a Parquet writer typed as a number
    raise ValueError(f"{value!r} is not text")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.strip().lower() in _TRUE:
            return True
        if value.strip().lower() in _FALSE:
            return False
    raise ValueError(f"{value!r} is not True or False")


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number: Any = value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            with contextlib.suppress(ValueError):
                number = float(value.strip())
    if isinstance(number, float) and number.is_integer():
        return int(number)  # 12.0: a column a tool turned into floats
    raise ValueError(f"{value!r} is not a whole number")


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    else:
        raise ValueError(f"{value!r} is not a number")
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number
