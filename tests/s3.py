"""A real S3-compatible HTTP server on loopback for the tests and benchmarks: moto in server mode."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from tests.procs import free_port


class S3Server:
    """moto's server in a process of its own; `bucket()` makes a new, empty bucket on it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path | None = None) -> S3Server:
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.endpoint}/moto-api/", timeout=2).status_code < 500:
                    return self
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("moto's S3 server did not start")

    def bucket(self) -> str:
        name = f"photos-{uuid.uuid4().hex[:10]}"
        requests.put(f"{self.endpoint}/{name}", timeout=10).raise_for_status()
        return name

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
