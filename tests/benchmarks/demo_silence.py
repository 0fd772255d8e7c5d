"""The newcomer's terminal: `make demo` run under a pseudo-terminal, as a person runs it (so the
bars show as they would), timed, with the longest stretch in which nothing new reached the screen
and what the screen said just before it.

    .venv/bin/python -m tests.benchmarks.demo_silence [--command "make demo DATA=/tmp/demo-data"]

Run it on a quiet machine from a fresh clone; at smoke size it watches a short stand-in command.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import termios
import time
from dataclasses import dataclass

from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized
from tests.procs import ROOT

# Cursor moves and colours: what a bar redraws with, not news on the screen.
ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\r")
LONG_S = 30.0  # the longest a newcomer should wait with nothing new on the screen
STAND_IN = "python3 -c 'import time\nfor i in range(4): print(i, flush=True); time.sleep(0.3)'"


@dataclass(frozen=True)
class Watched:
    wall_s: float
    longest_silence_s: float
    before_it: str  # the screen's last line before the longest silence
    returncode: int
    long_ones: list[tuple[float, str]]  # every silence over LONG_S, with the line before it


def watch(command: str, env: dict[str, str] | None = None) -> Watched:
    """Runs `command` with a terminal for its output; times every chunk that reaches it."""
    leader, follower = pty.openpty()
    # A terminal of a person's size: a new one is 0 x 0, where a bar has no room to draw.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    started = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "-c", command], stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, cwd=ROOT, env=env
    )
    os.close(follower)
    last, longest, before, screen = started, 0.0, "", b""
    long_ones: list[tuple[float, str]] = []
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
            line = (screen.strip().splitlines() or [b""])[-1].decode(errors="replace")[-160:]
            if now - last > longest:
                longest, before = now - last, line
            if now - last > LONG_S:
                long_ones.append((round(now - last, 1), line))
            last = now
            screen = (screen + ESCAPES.sub(b"\n", chunk))[-4096:]
            os.write(1, chunk)
        elif proc.poll() is not None:
            break
    os.close(leader)
    return Watched(time.monotonic() - started, longest, before, proc.wait(), long_ones)


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--command", default=sized("make demo", STAND_IN), help="what a newcomer types")
    args = parser.parse_args()
    watched = watch(args.command)
    print()
    print(f"{shlex.quote(args.command)}: exit {watched.returncode}, {watched.wall_s / 60:.1f} min")
    print(f"longest silence {watched.longest_silence_s:.1f} s, after: {watched.before_it!r}")
    for seconds, line in watched.long_ones:
        print(f"silent {seconds} s (over {LONG_S:.0f} s) after: {line!r}")
    if watched.returncode:
        raise SystemExit(watched.returncode)
    print(f"demo_longest_silence_s: {watched.longest_silence_s:.1f} in {watched.wall_s / 60:.1f} min")


if __name__ == "__main__":
    main()
