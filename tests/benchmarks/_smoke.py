"""The smoke size every benchmark takes: `--smoke` runs the same code path on tiny inputs in
seconds. `make test` runs each benchmark so (tests/test_benchmarks.py), so a change that breaks
one fails there; the figures still come from the full runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

# Read once from the command line: the sizes below, and helpers such as the grocery stand-in, ask it
# before a benchmark's own parser runs.
SMOKE = "--smoke" in sys.argv[1:]

HELP = "seconds on tiny inputs, the same code path (what `make test` runs); the figures come from full runs"

# Training at smoke size: one small member on small photos, a short head fit.
SMALL_TRAIN: dict[str, Any] = {"members": ("efficientnet_lite0",), "image_size": 64, "batch_size": 16, "head_epochs": 5}


def parser(description: str | None) -> argparse.ArgumentParser:
    """A benchmark's argument parser, with `--smoke` already on it."""
    made = argparse.ArgumentParser(description=description.strip().splitlines()[0] if description else None)
    made.add_argument("--smoke", action="store_true", help=HELP)
    return made


def sized(full: Any, smoke: Any) -> Any:
    """`full` for the benchmark's figures, `smoke` when run at smoke size."""
    return smoke if SMOKE else full


def train_settings(**settings: Any) -> dict[str, Any]:
    """A benchmark's training settings; at smoke size its members and sizes give way to SMALL_TRAIN."""
    return {**settings, **SMALL_TRAIN} if SMOKE else settings
