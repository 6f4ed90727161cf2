"""The traces a simulation replays: the packaged Azure hours as documented, and synthetic
loads whose size and shape follow from their rate, reproducible by seed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from spotgate.fleetsim.traces import Trace, load_trace, synthetic

SIZES = [(100, 10)]  # synthetic tests draw from this, not the packaged trace


@pytest.fixture(scope="module")
def conv() -> Trace:
    return load_trace("conv")


def mean(values: list[int]) -> float:
    return sum(values) / len(values)


def test_the_conversation_trace_is_the_documented_hour(conv: Trace) -> None:
    # traces/README.md: 19,366 requests, 18:15 to 19:14 UTC, 1,155 prompt and 211
    # completion tokens on average
    assert len(conv.requests) == 19_366
    assert 55 * 60 <= conv.duration_s <= 60 * 60
    assert conv.requests[0].at == 0.0
    assert mean([r.prompt_tokens for r in conv.requests]) == pytest.approx(1_155, abs=1)
    assert mean([r.completion_tokens for r in conv.requests]) == pytest.approx(211, abs=1)
    ats = [r.at for r in conv.requests]
    assert ats == sorted(ats)


def test_the_code_trace_is_the_documented_hour() -> None:
    code = load_trace("code")
    assert len(code.requests) == 8_819
    assert 55 * 60 <= code.duration_s <= 60 * 60
    assert mean([r.prompt_tokens for r in code.requests]) == pytest.approx(2_048, abs=1)
    assert mean([r.completion_tokens for r in code.requests]) == pytest.approx(28, abs=1)


def test_a_window_keeps_only_its_requests_retimed_from_zero(conv: Trace) -> None:
    inside = [r for r in conv.requests if 600.0 <= r.at < 900.0]
    window = conv.window(600.0, 300.0)
    assert len(window.requests) == len(inside) > 0
    assert [r.at for r in window.requests] == pytest.approx([r.at - 600.0 for r in inside])
    assert [r.prompt_tokens for r in window.requests] == [r.prompt_tokens for r in inside]
    assert all(0.0 <= r.at < 300.0 for r in window.requests)
    assert len(conv.window(3000.0).requests) == sum(1 for r in conv.requests if r.at >= 3000)


def test_scaling_by_two_replays_the_same_requests_in_half_the_time(conv: Trace) -> None:
    window = conv.window(0.0, 600.0)
    fast = window.scaled(2.0)
    assert fast.duration_s == pytest.approx(window.duration_s / 2)
    assert len(fast.requests) == len(window.requests)
    assert [(r.prompt_tokens, r.completion_tokens) for r in fast.requests] == [
        (r.prompt_tokens, r.completion_tokens) for r in window.requests
    ]
    with pytest.raises(ValueError, match="positive"):
        window.scaled(0)


@pytest.mark.parametrize("shape", ["poisson", "diurnal", "bursty"])
def test_a_synthetic_load_averages_its_rate(shape: str) -> None:
    rate, duration = 2.0, 3600.0
    trace = synthetic(shape, rate=rate, duration_s=duration, seed=1, sizes=SIZES)
    expected = rate * duration
    assert abs(len(trace.requests) - expected) < 5 * math.sqrt(expected)  # 5 Poisson sd
    assert all(0.0 <= r.at < duration for r in trace.requests)
    assert {(r.prompt_tokens, r.completion_tokens) for r in trace.requests} == {(100, 10)}


def test_the_packaged_poisson_load_draws_its_sizes_from_the_conversation_trace(
    conv: Trace,
) -> None:
    trace = load_trace("poisson", rate=2.0, duration_s=600.0)
    expected = 2.0 * 600.0
    assert abs(len(trace.requests) - expected) < 5 * math.sqrt(expected)
    known = {(r.prompt_tokens, r.completion_tokens) for r in conv.requests}
    assert {(r.prompt_tokens, r.completion_tokens) for r in trace.requests} <= known


def count(trace: Trace, start: float, end: float) -> int:
    return sum(1 for r in trace.requests if start <= r.at < end)


def test_the_diurnal_curve_peaks_mid_window_at_four_times_its_trough() -> None:
    duration = 3600.0
    trace = synthetic("diurnal", rate=5.0, duration_s=duration, seed=2, sizes=SIZES)
    # rate * (1 - 0.6 cos(2 pi t / d)): 0.4 x rate at the ends, 1.6 x mid-window
    ends = count(trace, 0, 180) + count(trace, duration - 180, duration)
    middle = count(trace, duration / 2 - 180, duration / 2 + 180)
    assert 3.0 < middle / ends < 5.0


def test_bursts_come_every_ten_minutes_at_four_times_the_base_rate() -> None:
    trace = synthetic("bursty", rate=5.0, duration_s=3600.0, seed=3, sizes=SIZES)
    bursts = sum(count(trace, s, s + 60) for s in range(0, 3600, 600))
    between = sum(count(trace, s + 60, s + 120) for s in range(0, 3600, 600))
    assert 3.0 < bursts / between < 5.0


def test_the_same_seed_gives_the_same_trace_and_another_seed_another() -> None:
    one = synthetic("poisson", rate=1.0, duration_s=600.0, seed=7, sizes=[(1, 1), (2, 2)])
    again = synthetic("poisson", rate=1.0, duration_s=600.0, seed=7, sizes=[(1, 1), (2, 2)])
    other = synthetic("poisson", rate=1.0, duration_s=600.0, seed=8, sizes=[(1, 1), (2, 2)])
    assert one == again
    assert one.requests != other.requests


def test_no_rate_or_no_time_gives_an_empty_trace() -> None:
    assert synthetic("poisson", rate=0.0, duration_s=60.0, sizes=SIZES).requests == ()
    assert synthetic("poisson", rate=1.0, duration_s=0.0, sizes=SIZES).requests == ()
    assert Trace("empty", ()).duration_s == 0.0


def test_an_unknown_trace_or_shape_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="conv, code, poisson, diurnal, bursty"):
        load_trace("nonesuch")
    with pytest.raises(ValueError, match="unknown shape 'square'"):
        synthetic("square", rate=1.0, duration_s=60.0, sizes=SIZES)


def test_a_csv_in_the_azure_format_is_read_sorted_and_retimed(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:45.2000000,0,12\n"  # earlier, and an empty prompt
        "2023-11-16 18:15:50,20,0\n"
    )
    trace = load_trace(str(path))
    assert trace.name == "mine"
    # epoch seconds in a float keep about a microsecond, the trace's 100 ns digits aside
    assert [r.at for r in trace.requests] == pytest.approx([0.0, 1.48059, 4.8], abs=1e-6)
    assert [(r.prompt_tokens, r.completion_tokens) for r in trace.requests] == [
        (1, 12),  # no zero-token requests: at least one token each way
        (374, 44),
        (20, 1),
    ]


def test_a_malformed_csv_row_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46,374,44\n"
        "2023-11-16 18:15:47,many,44\n"
    )
    with pytest.raises(ValueError, match=r"bad\.csv:3: not a trace row"):
        load_trace(str(path))
