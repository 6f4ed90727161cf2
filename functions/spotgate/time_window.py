"""Where a report's window starts, as people write it: "24h", "7d", "30m" or an ISO date.

A date or time without a zone is UTC, not the local zone of whoever runs the
command, so the same command gives the same window on a laptop and in CI.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_since(text: str, now: float) -> float:
    """Unix seconds of `text`: a duration before `now` ("7d") or a UTC date/time.

    ValueError, saying what is accepted, for anything else, a zero or
    infinite duration, and a time after `now`.
    """
    value = text.strip().lower()
    ago = _AGO.fullmatch(value)
    if ago:
        seconds = float(ago.group(1)) * _UNITS[ago.group(2)]
        if seconds <= 0 or not math.isfinite(seconds):
            raise ValueError(f"{text!r}: the window must be longer than zero")
        return now - seconds
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 24h, 7d, 2w) nor an ISO date (2024-05-01)"
        ) from None
    since = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if since > now:
        raise ValueError(f"{text!r} is in the future")
    return since
