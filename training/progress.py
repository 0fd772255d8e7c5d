"""Progress of the long stages: a bar with its ETA on a terminal, one log line per epoch anywhere."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from tqdm import tqdm

log = logging.getLogger("training.progress")


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Bar:
    """A tqdm bar over `total` items when stderr is a terminal; nothing in logs or pipes."""

    def __init__(self, total: int, desc: str, unit: str = "photo") -> None:
        self.bar = (
            tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True) if sys.stderr.isatty() else None
        )
        self.started = time.monotonic()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.close()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
