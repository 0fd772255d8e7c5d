"""Progress of training: a bar with its ETA on a terminal (core/progress.py), one log line per
epoch anywhere."""

from __future__ import annotations

import logging

from core.progress import Bar, duration

__all__ = ["Bar", "duration", "log"]

log = logging.getLogger("training.progress")
