"""Rows to a file someone else analyses: CSV or Parquet, chosen by the file's suffix.

The columns are given, in order, rather than taken from the rows, so an
export has the same header whichever store the rows came from and however
sparse the first rows are. A row's missing column is empty (CSV) or null
(Parquet); keys that are not columns (a store's `_etag`) are dropped.

CSV needs only the standard library, so every install can export. Parquet
keeps types (numbers, booleans, nulls) that CSV flattens to text, but needs
pyarrow, which is large: it is imported only when a `.parquet` file is
asked for, and is an optional extra (`pip install pyarrow`, or the
`analysis` extra), so the gateway itself never loads it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

SUFFIXES = (".csv", ".parquet")
PARQUET_HINT = "writing .parquet needs pyarrow: pip install pyarrow (or spotgate[analysis])"


def write_table(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> int:
    """Write `rows` as `columns` to `path`, CSV or Parquet by its suffix; return the row count.

    Raises ValueError for any other suffix, and ImportError (saying what to
    install) for Parquet without pyarrow, before the file is touched.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _write_csv(path, columns, rows)
    if suffix == ".parquet":
        return _write_parquet(path, columns, rows)
    raise ValueError(f"cannot export to {path.name!r}: the file must end in .csv or .parquet")


def _csv_cell(value: Any) -> Any:
    """Nested values as JSON, which a reader can parse, rather than Python's repr."""
    if isinstance(value, Mapping | list | tuple):
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    return value


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> int:
    """Streamed row by row; None is an empty cell, and reading back every cell is text."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(name)) for name in columns])
            count += 1
    return count


def _write_parquet(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> int:
    """One table; pyarrow infers each column's type from all its values (ints and floats
    mixed make a double column; a column of only nulls is typed null). A column it
    cannot type (numbers and text mixed) is written as text rather than refused."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError(PARQUET_HINT) from error
    data: dict[str, list[Any]] = {name: [] for name in columns}
    count = 0
    for row in rows:
        for name in columns:
            data[name].append(row.get(name))
        count += 1
    arrays = {}
    for name, values in data.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[name] = pa.array([None if v is None else str(_csv_cell(v)) for v in values])
    pq.write_table(pa.table(arrays), str(path))
    return count
