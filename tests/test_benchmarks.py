"""Every benchmark at its smoke size: the same code path on tiny inputs, so a change that breaks a
benchmark fails here. The figures themselves come from the full runs (`make bench`)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.procs import ROOT

BENCHMARKS = sorted(p.stem for p in (ROOT / "tests" / "benchmarks").glob("*.py") if not p.stem.startswith("_"))
# A benchmark's last line names its figure: `name: value`.
FIGURE = re.compile(r"^[a-z][a-z0-9_]*: \S")


def test_every_benchmark_is_found() -> None:
    # The list is read from the folder, so a new benchmark is smoke-run without being named here.
    assert {"crawl_rate", "bad_inputs", "label_push", "open_set_finetuned"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_the_benchmark_runs_at_smoke_size_and_prints_its_figure(name: str) -> None:
    # Its folders go to the temporary folder `make test` makes for the run, and go with it. (Not
    # to this test's own, deeper down: a process's sockets lie there, and a Unix socket's path is
    # limited to 107 bytes.)
    done = subprocess.run(
        [sys.executable, "-m", f"tests.benchmarks.{name}", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-4000:]
    lines = done.stdout.strip().splitlines()
    assert lines and FIGURE.match(lines[-1]), said[-4000:]
