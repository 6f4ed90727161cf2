"""Durations the dev console and `spotgate fleet` show: read at a glance, never "27.9784s"."""

from __future__ import annotations

import math

import pytest

from spotgate.telemetry.durations import format_duration


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.04, "0.0 s"),
        (2.83, "2.8 s"),
        (27.9784, "28.0 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min"),  # not "60.0 s"
        (71.5, "1 min 12 s"),
        (312.0, "5 min 12 s"),
        (3600.0, "1 h"),
        (7500.0, "2 h 5 min"),
        (-0.3, "0.0 s"),  # a clock that stepped back
        (math.inf, "forever"),
    ],
)
def test_durations_read_like_a_person_would_say_them(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown
