"""The cases of tests/benchmarks/bad_inputs.py and what they share: each case is a check that
returns (handled, what it saw), registered under its name in the order it is declared."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

Case = Callable[[], tuple[bool, str]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(check: Case) -> Case:
        CASES[name] = check
        return check

    return register


def cli(*words: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reviewlens.cli", *words], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def refused(run: subprocess.CompletedProcess[str], named: str) -> tuple[bool, str]:
    """Handled: a non-zero exit with one clear line naming `named`, and no traceback."""
    err = run.stderr.strip()
    ok = run.returncode != 0 and named in err and "Traceback" not in err
    return ok, err.splitlines()[-1][:160] if err else f"exit {run.returncode}, no message"
