"""Tables to CSV and Parquet and back: the given columns in order, values, types and nulls."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from spotgate.table_export import write_table

COLUMNS = ("pool", "worker_id", "at", "count", "spot", "note")
ROWS: list[dict[str, Any]] = [
    {"pool": "gpu", "worker_id": "w1", "at": 1.5, "count": 3, "spot": True, "note": None},
    {"pool": "gpu", "worker_id": 'w,2 "quoted"\nline', "at": 2.0, "count": 0, "spot": False},
    {"pool": "cpu", "worker_id": "w3", "at": 3.25, "count": 7, "spot": True, "_etag": "x"},
]


def test_csv_round_trip_keeps_the_given_columns_in_order(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    assert write_table(path, COLUMNS, ROWS) == 3
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header, *rows = list(reader)
    assert header == list(COLUMNS)
    assert rows == [
        ["gpu", "w1", "1.5", "3", "True", ""],
        ["gpu", 'w,2 "quoted"\nline', "2.0", "0", "False", ""],
        ["cpu", "w3", "3.25", "7", "True", ""],
    ]


def test_parquet_round_trip_keeps_values_types_and_nulls(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "rows.parquet"
    assert write_table(path, COLUMNS, iter(ROWS)) == 3
    table = pq.read_table(path)
    assert table.column_names == list(COLUMNS)
    assert table.to_pylist() == [{name: row.get(name) for name in COLUMNS} for row in ROWS]
    schema = table.schema
    assert (schema.field("at").type, schema.field("count").type) == (pa.float64(), pa.int64())
    assert schema.field("spot").type == pa.bool_()


def test_nested_values_are_json_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "nested.csv"
    write_table(path, ["per_zone", "codes"], [{"per_zone": {"1": 2}, "codes": ["a", "b"]}])
    with path.open(newline="", encoding="utf-8") as file:
        [row] = list(csv.DictReader(file))
    assert json.loads(row["per_zone"]) == {"1": 2}
    assert json.loads(row["codes"]) == ["a", "b"]


def test_a_column_parquet_cannot_type_is_written_as_text(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "mixed.parquet"
    write_table(path, ["value"], [{"value": 1}, {"value": "one"}, {"value": None}])
    assert pq.read_table(path).column("value").to_pylist() == ["1", "one", None]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_no_rows_is_a_header_only_file(tmp_path: Path, suffix: str) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")

    def nothing() -> Iterator[Mapping[str, Any]]:
        yield from ()

    path = tmp_path / f"empty{suffix}"
    assert write_table(path, COLUMNS, nothing()) == 0
    if suffix == ".csv":
        assert path.read_text().splitlines() == [",".join(COLUMNS)]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        assert (table.num_rows, table.column_names) == (0, list(COLUMNS))


@pytest.mark.parametrize("name", ["rows.json", "rows", "rows.csv.gz", "rows.xlsx"])
def test_other_suffixes_are_refused_before_the_file_is_touched(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"must end in \.csv or \.parquet"):
        write_table(tmp_path / name, COLUMNS, ROWS)
    assert list(tmp_path.iterdir()) == []
