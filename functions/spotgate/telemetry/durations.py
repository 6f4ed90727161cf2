"""Durations as people read them on a console: "2.8 s", "1 min 12 s", "2 h 5 min".

Raw floats ("27.9784s") make a reader count digits; a tenth of a second is
all the precision a start-up time or a heartbeat age needs.
"""

from __future__ import annotations

import math


def format_duration(seconds: float) -> str:
    """`seconds` for a human: tenths below a minute, whole seconds below an hour."""
    if not math.isfinite(seconds):
        return "forever" if seconds > 0 else "0.0 s"
    seconds = max(0.0, seconds)
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    total = round(seconds)
    if total < 3600:
        minutes, rest = divmod(total, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(total // 60, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
