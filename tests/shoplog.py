"""Reading the demo shop's request log, for tests and benchmarks that check the crawler's manners."""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: Path) -> list[dict[str, object]]:
    """The requests the shop received, one dict per request, in arrival order."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most times falling in any half-open window of `window` seconds."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
