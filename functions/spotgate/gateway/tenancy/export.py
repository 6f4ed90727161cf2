"""Usage records (and reports built from them) to a file someone else analyses.

The columns are given, in order, rather than taken from the rows: an export
of usage has the same header from SQLite and Cosmos DB (`USAGE_COLUMNS`),
even when the first rows lack a field or a store adds its own (`_etag`).
How a table becomes CSV or Parquet is `spotgate.table_export`'s, shared with
the fleet journal's export, so the two read back alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from spotgate.table_export import PARQUET_HINT, write_table

__all__ = ["PARQUET_HINT", "write_rows"]


def write_rows(rows: Iterable[dict[str, Any]], columns: Sequence[str], path: Path) -> int:
    """Write `rows` as `columns` to `path`, CSV or Parquet by its suffix; return the row count.

    Raises ValueError for any other suffix, and ImportError (saying what to
    install) for Parquet without pyarrow, before the file is touched.
    """
    return write_table(path, columns, rows)
