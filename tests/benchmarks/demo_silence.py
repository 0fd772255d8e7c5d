"""The newcomer's terminal: `make demo` run under a pseudo-terminal, as a person runs it (so the
bars show as they would), timed, with the longest stretch in which nothing new reached the screen
and what the screen said just before it.

    .venv/bin/python -m tests.benchmarks.demo_silence [--command "make demo DATA=/tmp/demo-data"]

Run it on a quiet machine from a fresh clone; at smoke size it watches a short stand-in command.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import subprocess
import time
from dataclasses import dataclass

from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized
from tests.procs import ROOT

# Cursor moves and colours: what a bar redraws with, not news on the screen.
ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\r")
STAND_IN = "python3 -c 'import time\nfor i in range(4): print(i, flush=True); time.sleep(0.3)'"


@dataclass(frozen=True)
class Watched:
    wall_s: float
    longest_silence_s: float
    before_it: str  # the screen's last line before the longest silence
    returncode: int


def watch(command: str, env: dict[str, str] | None = None) -> Watched:
    """Runs `command` with a terminal for its output; times every chunk that reaches it."""
    leader, follower = pty.openpty()
    started = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "-c", command], stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, cwd=ROOT, env=env
    )
    os.close(follower)
    last, longest, before, screen = started, 0.0, "", b""
    while True:
        ready, _, _ = select.select([leader], [], [], 1.0)
        now = time.monotonic()
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the command and everything it started have closed the terminal
                break
            if not chunk:
                break
            if now - last > longest:
                longest, before = now - last, (screen.strip().splitlines() or [b""])[-1].decode(errors="replace")
            last = now
            screen = (screen + ESCAPES.sub(b"\n", chunk))[-4096:]
            os.write(1, chunk)
        elif proc.poll() is not None:
            break
    os.close(leader)
    return Watched(time.monotonic() - started, longest, before[-160:], proc.wait())


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--command", default=sized("make demo", STAND_IN), help="what a newcomer types")
    args = parser.parse_args()
    watched = watch(args.command, {**os.environ, "COLUMNS": "120", "LINES": "40"})
    print()
    print(f"{shlex.quote(args.command)}: exit {watched.returncode}, {watched.wall_s / 60:.1f} min")
    print(f"longest silence {watched.longest_silence_s:.1f} s, after: {watched.before_it!r}")
    if watched.returncode:
        raise SystemExit(watched.returncode)
    print(f"demo_longest_silence_s: {watched.longest_silence_s:.1f} in {watched.wall_s / 60:.1f} min")


if __name__ == "__main__":
    main()
