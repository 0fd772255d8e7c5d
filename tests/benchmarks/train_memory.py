"""Does memory grow with the shop? Peak resident memory of training on 20,000 and on 100,000
small generated photos (goal: the larger at most 1.2x the smaller).

Each size trains in a process of its own; the peak is the largest sum, sampled every 0.2 s, of
the resident memory of that process and its loader workers. Photos come from the on-disk cache
and features are read from disk as needed, so neither is held whole.

    .venv/bin/python -m tests.benchmarks.train_memory [--sizes 20000 100000] [--mode auto|quick|top|full]

auto is this machine's default (top on a CPU, whose kept activations are read from disk a batch at
a time too).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized


def _tree_rss_kib(pid: int) -> int:
    """Resident memory of `pid` and its descendants, in KiB (0 for processes already gone)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def measure(n: int, mode: str) -> tuple[int, float]:
    """(peak KiB, seconds) of training on `n` photos in a child process."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tests.benchmarks.train_memory", "--child", str(n), "--mode", mode])
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kib(proc.pid))
        time.sleep(0.2)
    if proc.returncode:
        sys.exit(f"training on {n} photos failed ({proc.returncode})")
    return peak, time.monotonic() - started


def child(n: int, mode: str) -> None:
    from core.settings import TrainConfig
    from tests.benchmarks._photos import show_progress, tiny_photos
    from training.train import train_snapshot

    show_progress()
    snapshot, layout = tiny_photos(workdir(f"memory-{n}"), n)
    config = TrainConfig(
        mode=mode,
        members=("efficientnet_lite0",),
        image_size=32,
        epochs=1,
        top_epochs=1,
        head_epochs=2,
        batch_size=128,  # type: ignore[arg-type]
    )
    print(f"{n} photos generated; training", file=sys.stderr, flush=True)
    train_snapshot(snapshot, config, layout)


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--sizes", nargs=2, type=int, default=sized([20_000, 100_000], [200, 400]))
    parser.add_argument("--mode", choices=["auto", "quick", "top", "full"], default="auto")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.mode)
        return
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    peaks = {}
    for n in args.sizes:
        peak, seconds = measure(n, args.mode)
        peaks[n] = peak
        print(f"{n} photos ({args.mode} mode): peak resident {peak / 1024:.0f} MiB, {seconds:.0f} s", flush=True)
    small, large = args.sizes
    print(f"train_memory_ratio: {peaks[large] / peaks[small]:.2f}")


if __name__ == "__main__":
    main()
