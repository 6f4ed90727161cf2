"""Reading back what `spotgate usage --export` and `spotgate fleet export` write."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from spotgate.costs import export_files
from spotgate.costs.export_files import (
    export_window,
    load_export,
    read_usage_records,
    read_worker_spans,
)
from spotgate.costs.price_table import PriceTable
from spotgate.costs.report import GROUPINGS, IDLE_ROW, usage_report
from spotgate.fleet.journal_export import SPAN_COLUMNS, JournalSnapshot, write_snapshot
from spotgate.fleet.worker_spans import WorkerSpan
from spotgate.gateway.tenancy.usage import USAGE_COLUMNS, UsageRecord
from spotgate.table_export import write_table
from tests.costs.scenario import T0, H, record, span

SAMPLE = Path(__file__).resolve().parents[2] / "notebooks" / "data" / "sample_export"
FORMATS = ("csv", "parquet")
SUMMED = ("requests", "prompt_tokens", "completion_tokens", "cache_hits", "errors")

RECORDS = [
    record("r1", T0 + 10.5, key_id="key_a", worker_id="w1", priority="spot", sku="gpu-a",
           prompt_tokens=120, completion_tokens=30, ttft_ms=41.25, duration_ms=310.5,
           revenue_usd=0.000105),
    record("r2", T0 + 11, key_id=None, status=429, pool=None, error_code="rate_limit_exceeded"),
    record("r3", T0 + 12, key_id="key_b", worker_id="cache", cache="HIT", prompt_tokens=8,
           completion_tokens=7, revenue_usd=0.5e-5),
    record("r4", T0 + 13, key_id="key_b", worker_id="spillover:openai", spillover="openai",
           prompt_tokens=2000, completion_tokens=1, spillover_cost_usd=0.0042, revenue_usd=0.01),
    record("r5", T0 + 14, key_id="key_a", worker_id="w2", priority="on-demand", status=499,
           error_code="client_gone", estimated=True, prompt_tokens=50, completion_tokens=3,
           batch_id="batch_1", duration_ms=12.0),
]  # fmt: skip
"""Every kind of cell: None and text, ints, floats (whole and not), both booleans."""

SPANS = [
    span("w1", "spot", T0 - 2 * H, T0 + 600, end_reason="evicted"),
    span("w2", "on-demand", T0 + 5, None, zone=None),
    span("w3", "spot", T0 + 30, None, sku=None, zone="3"),
]
EXPORT_SINCE, EXPORT_NOW = T0 - H, T0 + 900
"""w1 started before the window, so the export counts only its last hour and ten minutes."""


def snapshot(spans: list[WorkerSpan] = SPANS) -> JournalSnapshot:
    return JournalSnapshot(EXPORT_SINCE, EXPORT_NOW, [], [], [], spans)


def write_usage(path: Path, records: list[UsageRecord] = RECORDS) -> Path:
    write_table(path, USAGE_COLUMNS, [r.to_dict() for r in records])  # as `spotgate usage`
    return path


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def cells(record: UsageRecord) -> list[Any]:
    return [record.to_dict()[c] for c in USAGE_COLUMNS]


def test_every_column_of_both_exports_is_read() -> None:
    assert tuple(export_files._RECORD_KINDS) == USAGE_COLUMNS
    assert tuple(export_files._SPAN_KINDS) == SPAN_COLUMNS


@pytest.mark.parametrize("fmt", FORMATS)
def test_usage_records_read_back_equal_with_their_types(fmt: str, tmp_path: Path) -> None:
    back = read_usage_records(write_usage(tmp_path / f"usage.{fmt}"))
    assert back == RECORDS
    assert type(back[0].prompt_tokens) is int and type(back[0].at) is float
    assert back[4].estimated is True and back[0].estimated is False
    assert back[1].key_id is None and back[1].ttft_ms is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_usage_export_reads_as_no_records(fmt: str, tmp_path: Path) -> None:
    assert read_usage_records(write_usage(tmp_path / f"usage.{fmt}", [])) == []


def test_parquet_columns_of_only_nulls_and_whole_floats_read_as_their_fields(
    tmp_path: Path,
) -> None:
    """pyarrow types a column of Nones as null and whole-number floats stay floats."""
    records = [record("a", T0, duration_ms=5.0, revenue_usd=0.0)]
    assert read_usage_records(write_usage(tmp_path / "u.parquet", records)) == records


@pytest.mark.parametrize("fmt", FORMATS)
def test_worker_spans_read_back_equal_from_the_folder_or_the_file(fmt: str, tmp_path: Path) -> None:
    counts = write_snapshot(snapshot(), tmp_path, fmt)  # as `spotgate fleet export`
    assert counts[f"worker_spans.{fmt}"] == 3
    assert read_worker_spans(tmp_path) == SPANS
    assert read_worker_spans(tmp_path / f"worker_spans.{fmt}") == SPANS


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_export_finds_the_window_the_fleet_export_covered(fmt: str, tmp_path: Path) -> None:
    write_snapshot(snapshot(), tmp_path / "fleet", fmt)
    history = load_export(write_usage(tmp_path / f"usage.{fmt}"), tmp_path / "fleet")
    assert history.records == RECORDS and history.spans == SPANS
    assert history.since == pytest.approx(EXPORT_SINCE)  # not w1's start, an hour earlier
    assert history.until == pytest.approx(EXPORT_NOW)


def test_the_window_covers_every_record() -> None:
    since, until = export_window(RECORDS, [])
    assert since == RECORDS[0].at
    assert until == math.nextafter(RECORDS[-1].at, math.inf)  # the last one is in [since, until)


def test_a_long_running_worker_is_counted_from_the_window_not_its_start() -> None:
    """A worker up for a month, exported for a week: the report must not price the month."""
    week = 7 * 24 * H
    month_old = span("w0", "spot", T0 - 30 * 24 * H, None)
    requests = [record("first", T0 - week + 100), record("last", T0 - 1)]
    since, until = export_window(requests, [(month_old, week - 1)])  # exported at T0 - 1
    assert since == pytest.approx(T0 - week)
    assert until == math.nextafter(T0 - 1, math.inf)


def test_a_window_given_overrides_the_one_found(tmp_path: Path) -> None:
    write_snapshot(snapshot(), tmp_path, "csv")
    history = load_export(None, tmp_path, since=T0, until=T0 + 60)
    assert (history.since, history.until) == (T0, T0 + 60)
    with pytest.raises(ValueError, match="before since"):
        load_export(None, tmp_path, since=T0, until=T0 - 1)


def test_empty_exports_have_no_window_to_find(tmp_path: Path) -> None:
    write_snapshot(snapshot([]), tmp_path, "csv")
    with pytest.raises(ValueError, match="pass since and until"):
        load_export(None, tmp_path)
    assert load_export(None, tmp_path, since=T0, until=T0 + 1).spans == []


def test_without_a_usage_export_the_report_is_the_fleets_gpu_cost(tmp_path: Path) -> None:
    write_snapshot(snapshot(SPANS[:2]), tmp_path, "csv")
    history = load_export(None, tmp_path)
    prices = PriceTable.parse(
        "date,region,sku,gpus,spot_hourly_usd,on_demand_hourly_usd,source\n"
        "2026-01-01,r,gpu-a,1,0.60,2.40,test\n"
    )
    report = usage_report(
        history.records, history.spans, prices, by="key", since=history.since,
        until=history.until, region="r", now=history.until,
    )  # fmt: skip
    (row,) = report.rows
    assert row["group"] == IDLE_ROW and row["requests"] == 0
    spot_s, on_demand_s = 600 + H, EXPORT_NOW - (T0 + 5)  # w1 in the window; w2 to the export
    cost = spot_s * 0.60 / H + on_demand_s * 2.40 / H
    assert report.totals["cost_usd"] == pytest.approx(cost)
    assert report.totals["revenue_usd"] == 0
    assert report.totals["gpu_hours"] == pytest.approx((spot_s + on_demand_s) / H)


# The committed sample: a real run of the local sim stack (notebooks/data/sample_export/).


def test_the_committed_sample_loads_and_its_reports_add_up() -> None:
    history = load_export(SAMPLE / "usage.csv", SAMPLE / "fleet")
    assert len(history.records) == 1205 and len(history.spans) == 3
    assert {s.end_reason for s in history.spans} == {"process ended (killed)", None}
    prices = PriceTable.load()
    with (SAMPLE / "fleet" / "worker_hours.csv").open() as file:
        exported_hours = sum(float(row["gpu_hours"]) for row in csv.DictReader(file))
    for by in GROUPINGS:
        report = usage_report(
            history.records, history.spans, prices, by=by, since=history.since,
            until=history.until, region="local", now=history.until,
        )  # fmt: skip
        totals = report.totals
        assert totals["requests"] == 1205, by
        assert totals["revenue_usd"] > 0 and totals["cost_usd"] > 0, by
        assert totals["margin_usd"] == pytest.approx(totals["revenue_usd"] - totals["cost_usd"])
        for column in SUMMED:
            assert sum(row[column] for row in report.rows) == totals[column], (by, column)
        for column in ("revenue_usd", "cost_usd"):
            assert sum(r[column] for r in report.rows) == pytest.approx(totals[column]), by
        assert totals["gpu_hours"] == pytest.approx(exported_hours, abs=1e-8), by
        assert not [w for w in report.warnings if "price" in w or "SKU" in w], by


def test_the_committed_sample_reads_the_same_through_parquet(tmp_path: Path) -> None:
    records = read_usage_records(SAMPLE / "usage.csv")
    assert read_usage_records(write_usage(tmp_path / "usage.parquet", records)) == records


def mangled_sample(tmp_path: Path, edit: Any) -> Path:
    """The sample's usage.csv with `edit(header, rows)` applied, as someone's spreadsheet might."""
    with (SAMPLE / "usage.csv").open(newline="") as file:
        header, *rows = list(csv.reader(file))
    edit(header, rows)
    return write_csv(tmp_path / "usage.csv", header, rows)


def test_a_sample_missing_a_column_is_refused_naming_it(tmp_path: Path) -> None:
    def drop_revenue(header: list[str], rows: list[list[str]]) -> None:
        at = header.index("revenue_usd")
        for line in [header, *rows]:
            del line[at]

    path = mangled_sample(tmp_path, drop_revenue)
    with pytest.raises(ValueError, match=r"usage\.csv: missing column\(s\) 'revenue_usd'"):
        read_usage_records(path)


def test_a_sample_with_a_token_count_in_words_is_refused_naming_the_line(tmp_path: Path) -> None:
    def in_words(header: list[str], rows: list[list[str]]) -> None:
        rows[41][header.index("completion_tokens")] = "twelve"

    path = mangled_sample(tmp_path, in_words)
    with pytest.raises(ValueError, match=r"usage\.csv:43: column completion_tokens: 'twelve'"):
        read_usage_records(path)


def test_a_sample_with_a_request_twice_is_refused(tmp_path: Path) -> None:
    """The report shares cost by request id: a repeat would count one request's cost twice."""

    def repeat(header: list[str], rows: list[list[str]]) -> None:
        rows.append(list(rows[7]))

    with pytest.raises(ValueError, match=r"usage\.csv:1207: request_id .* is also at .*:9"):
        read_usage_records(mangled_sample(tmp_path, repeat))


BAD_CELLS = [
    ("prompt_tokens", "12.5", "is not a whole number"),
    ("prompt_tokens", "", "is empty; it needs a whole number"),
    ("status", "True", "is not a whole number"),
    ("revenue_usd", "nan", "is not a finite number"),
    ("revenue_usd", "$1.00", "is not a number"),
    ("at", "inf", "is not a finite number"),
    ("estimated", "maybe", "is not True or False"),
]


@pytest.mark.parametrize(("column", "cell", "message"), BAD_CELLS)
def test_a_bad_cell_is_refused_naming_file_line_and_column(
    column: str, cell: str, message: str, tmp_path: Path
) -> None:
    rows = [cells(r) for r in RECORDS]
    rows[2][USAGE_COLUMNS.index(column)] = cell
    path = write_csv(tmp_path / "usage.csv", list(USAGE_COLUMNS), rows)
    with pytest.raises(ValueError, match=rf"usage\.csv:4: column {column}.*{message}"):
        read_usage_records(path)


def test_text_a_spreadsheet_wrote_still_reads(tmp_path: Path) -> None:
    """A byte-order mark, whole numbers as 12.0, booleans as TRUE: the same records."""
    rows = [cells(r) for r in RECORDS]
    rows[0][USAGE_COLUMNS.index("prompt_tokens")] = "120.0"
    rows[4][USAGE_COLUMNS.index("estimated")] = "TRUE"
    path = write_csv(tmp_path / "usage.csv", list(USAGE_COLUMNS), rows)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_usage_records(path) == RECORDS


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ([*USAGE_COLUMNS, "notes"], r"unknown column\(s\) 'notes'"),
        ([*USAGE_COLUMNS, "model"], r"repeated column\(s\) 'model'"),
        (list(SPAN_COLUMNS), r"missing column\(s\) 'at', 'request_id'"),
    ],
)
def test_a_header_that_is_not_the_exports_is_refused(
    header: list[str], message: str, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "usage.csv", header, [])
    with pytest.raises(ValueError, match=rf"usage\.csv: {message}"):
        read_usage_records(path)


def test_files_that_are_no_export_at_all_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: the file is empty"):
        read_usage_records(tmp_path / "empty.csv")
    (tmp_path / "usage.json").write_text("[]")
    with pytest.raises(ValueError, match=r"must end in \.csv or \.parquet"):
        read_usage_records(tmp_path / "usage.json")
    (tmp_path / "fake.parquet").write_text("at,request_id\n")
    with pytest.raises(ValueError, match=r"fake\.parquet: not a readable Parquet file"):
        read_usage_records(tmp_path / "fake.parquet")
    short = write_csv(tmp_path / "short.csv", list(USAGE_COLUMNS), [cells(RECORDS[0])[:-1]])
    with pytest.raises(ValueError, match=r"short\.csv:2: 20 values for 21 columns"):
        read_usage_records(short)
    with pytest.raises(FileNotFoundError):
        read_usage_records(tmp_path / "absent.csv")


def test_a_span_with_an_unknown_priority_is_refused(tmp_path: Path) -> None:
    rows = [[*span("w1", "spot", T0, None).to_dict().values(), 1.0]]
    rows[0][SPAN_COLUMNS.index("priority")] = "preemptible"
    write_csv(tmp_path / "worker_spans.csv", list(SPAN_COLUMNS), rows)
    with pytest.raises(ValueError, match=r"worker_spans\.csv:2: column priority: 'preemptible'"):
        read_worker_spans(tmp_path)


def test_a_fleet_folder_must_hold_exactly_one_spans_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="spotgate fleet export"):
        read_worker_spans(tmp_path)
    write_snapshot(snapshot(), tmp_path, "csv")
    write_snapshot(snapshot(), tmp_path, "parquet")
    with pytest.raises(ValueError, match=r"both worker_spans\.csv and worker_spans\.parquet"):
        read_worker_spans(tmp_path)


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_usage(tmp_path / "usage.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        read_usage_records(path)


def test_the_sample_is_small_enough_to_commit() -> None:
    size = sum(f.stat().st_size for f in SAMPLE.rglob("*") if f.is_file())
    assert size < 500_000
