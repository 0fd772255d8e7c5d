"""Progress of long work: a bar with its ETA on a terminal, and nothing in logs or pipes, where
each stage logs its own lines."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from tqdm import tqdm


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Bar:
    """A tqdm bar over `total` items when stderr is a terminal; nothing in logs or pipes."""

    def __init__(self, total: int, desc: str, unit: str = "photo", shown: bool = True) -> None:
        self.bar = (
            tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
            if shown and sys.stderr.isatty()
            else None
        )
        self.started = time.monotonic()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
