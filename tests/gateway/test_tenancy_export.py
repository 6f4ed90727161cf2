"""Usage records out to CSV and Parquet, and back: the export's columns, order, types and nulls.

CSV holds text only, so its round trip parses cells back by the record's
field types; Parquet must give back the very values, of the very types.
"""

from __future__ import annotations

import csv
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spotgate.gateway.tenancy.export import PARQUET_HINT, write_rows
from spotgate.gateway.tenancy.usage import USAGE_COLUMNS, UsageRecord


def _records() -> list[UsageRecord]:
    return [
        UsageRecord(
            at=1_700_000_000.125,
            request_id="req-1",
            key_id="key_a",
            model="gpt-small",
            path="/v1/chat/completions",
            status=200,
            pool="gpu",
            worker_id="default-w1",
            priority="spot",
            sku="Standard_NC4as_T4_v3",
            cache="MISS",
            prompt_tokens=120,
            completion_tokens=30,
            ttft_ms=12.0,
            duration_ms=340.25,
            revenue_usd=0.0015,
            batch_id="batch-1",
        ),
        UsageRecord(
            at=1_700_000_001.0,
            request_id='req-2, with "quotes"\nand a newline',
            key_id=None,
            model="auto",
            path="/v1/embeddings",
            status=401,
            error_code="invalid_api_key",
        ),
        UsageRecord(
            at=1_700_000_002.5,
            request_id="req-3",
            key_id="key_b",
            model="gpt-small",
            path="/v1/completions",
            status=200,
            cache="HIT",
            spillover="openai",
            prompt_tokens=7,
            completion_tokens=0,
            estimated=True,
            duration_ms=3.0,
            spillover_cost_usd=0.25,
        ),
    ]


def _rows(records: list[UsageRecord]) -> list[dict[str, Any]]:
    return [record.to_dict() for record in records]


def _parse_cell(hint: Any, cell: str) -> Any:
    """A CSV cell back to the field's type: "" is None where the field may be None."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if cell == "" and type(None) in options:
        return None
    kind = next(option for option in options if option is not type(None))
    if kind is bool:
        return {"True": True, "False": False}[cell]
    return kind(cell)


def _from_csv(path: Path) -> tuple[list[str], list[UsageRecord]]:
    hints = typing.get_type_hints(UsageRecord)
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        records = [
            UsageRecord.from_dict({name: _parse_cell(hints[name], row[name]) for name in row})
            for row in reader
        ]
        return list(reader.fieldnames or []), records


def test_usage_rows_round_trip_through_csv(tmp_path: Path) -> None:
    records = _records()
    path = tmp_path / "usage.csv"
    assert write_rows(_rows(records), USAGE_COLUMNS, path) == 3
    header, back = _from_csv(path)
    assert header == list(USAGE_COLUMNS)
    assert back == records


def test_usage_rows_round_trip_through_parquet(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    records = _records()
    path = tmp_path / "usage.parquet"
    assert write_rows(_rows(records), USAGE_COLUMNS, path) == 3
    table = pq.read_table(path)
    assert table.column_names == list(USAGE_COLUMNS)
    back = [UsageRecord.from_dict(row) for row in table.to_pylist()]
    assert back == records
    for got, want in zip(back, records, strict=True):
        assert {k: type(v) for k, v in got.to_dict().items()} == {
            k: type(v) for k, v in want.to_dict().items()
        }


def test_parquet_keeps_column_types(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "usage.parquet"
    write_rows(_rows(_records()), USAGE_COLUMNS, path)
    schema = pq.read_schema(path)
    assert schema.field("at").type == pa.float64()
    assert schema.field("status").type == pa.int64()
    assert schema.field("estimated").type == pa.bool_()
    assert schema.field("ttft_ms").type == pa.float64()  # 12.0 and nulls
    assert schema.field("key_id").type == pa.string()


def test_columns_are_the_given_ones_in_order(tmp_path: Path) -> None:
    """Extra keys (a store's `_etag`) are dropped, a missing column is empty or null."""
    rows: list[dict[str, Any]] = [{"b": 2, "a": 1, "_etag": "x"}, {"a": 3}]
    csv_path = tmp_path / "rows.csv"
    write_rows(rows, ["a", "b"], csv_path)
    assert csv_path.read_text().splitlines() == ["a,b", "1,2", "3,"]
    pq = pytest.importorskip("pyarrow.parquet")
    parquet_path = tmp_path / "rows.parquet"
    write_rows(rows, ["a", "b"], parquet_path)
    assert pq.read_table(parquet_path).to_pylist() == [{"a": 1, "b": 2}, {"a": 3, "b": None}]


def test_rows_may_be_a_generator_and_none_at_all(tmp_path: Path) -> None:
    def generate() -> Iterator[dict[str, Any]]:
        yield from _rows(_records())

    assert write_rows(generate(), USAGE_COLUMNS, tmp_path / "gen.csv") == 3
    empty_csv = tmp_path / "empty.csv"
    assert write_rows([], USAGE_COLUMNS, empty_csv) == 0
    assert empty_csv.read_text().splitlines() == [",".join(USAGE_COLUMNS)]
    pq = pytest.importorskip("pyarrow.parquet")
    assert write_rows(generate(), USAGE_COLUMNS, tmp_path / "gen.parquet") == 3
    empty_parquet = tmp_path / "empty.parquet"
    assert write_rows(iter([]), USAGE_COLUMNS, empty_parquet) == 0
    table = pq.read_table(empty_parquet)
    assert (table.num_rows, table.column_names) == (0, list(USAGE_COLUMNS))


def test_suffix_is_case_insensitive_and_others_are_refused(tmp_path: Path) -> None:
    assert write_rows([{"a": 1}], ["a"], tmp_path / "UPPER.CSV") == 1
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        write_rows([{"a": 1}], ["a"], tmp_path / "rows.json")
    assert not (tmp_path / "rows.json").exists()


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what `import pyarrow` fails on
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "usage.parquet"
    with pytest.raises(ImportError, match="pip install pyarrow") as caught:
        write_rows(_rows(_records()), USAGE_COLUMNS, path)
    assert str(caught.value) == PARQUET_HINT
    assert not path.exists()
