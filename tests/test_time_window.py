"""How a report's window start is written on the command line."""

from __future__ import annotations

import pytest

from spotgate.time_window import parse_since

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("text", "since"),
    [
        ("30m", NOW - 1800),
        ("24h", NOW - 86400),
        ("7d", NOW - 7 * 86400),
        (" 2w ", NOW - 14 * 86400),
        ("90s", NOW - 90),
        ("1.5h", NOW - 5400),
        ("7D", NOW - 7 * 86400),
        ("2023-11-14", 1_699_920_000.0),  # midnight UTC, whatever the local zone
        ("2023-11-14T20:00:00", 1_699_992_000.0),
        ("2023-11-14T22:00:00+02:00", 1_699_992_000.0),
    ],
)
def test_durations_and_dates(text: str, since: float) -> None:
    assert parse_since(text, NOW) == since


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "neither a duration"),
        ("7", "neither a duration"),
        ("-1d", "neither a duration"),
        ("", "neither a duration"),
        ("0h", "longer than zero"),
        ("2030-01-01", "in the future"),
    ],
)
def test_anything_else_says_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_since(text, NOW)
