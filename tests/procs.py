"""What tests and benchmarks read from the kernel about processes and sockets, and a stand-in server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from core.kept_secret import kept_secret, split_login
from core.layout import Layout
from reviewlens.services import with_interpreter_first

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) sockets listen on at `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def descendants(pid: int) -> list[int]:
    """Every process `pid` started, and theirs."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    return children + [g for c in children for g in descendants(c)]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


class HealthImpostor(BaseHTTPRequestHandler):
    """Answers 200 to everything, as any server on a port might to /health."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server of `handler` on a free loopback port; yields its host:port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def backend_login(data_dir: Path) -> tuple[str, str]:
    """The login the ML backend of `data_dir` asks of every request, as requests' auth."""
    return split_login(kept_secret(Layout(data_dir).ml_backend_login))


@contextmanager
def ml_backend(data_dir: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`reviewlens ml-backend` on a free port as ops run it, its output in `log`; yields its URL
    once /health answers, and stops it afterwards. Its login is `backend_login(data_dir)`."""
    port = free_port()
    auth = backend_login(data_dir)
    command = [sys.executable, "-m", "reviewlens.cli", "ml-backend", "--port", str(port), "--data-dir", str(data_dir)]
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    try:
        for _ in range(240):
            try:
                if requests.get(f"{url}/health", auth=auth, timeout=10).ok:
                    break
            except requests.RequestException:  # not listening yet, or busy starting on a loaded machine
                time.sleep(0.5)
        else:
            pytest.fail(f"reviewlens ml-backend did not answer within 2 minutes: {log.read_text()}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


PREFECT = str(Path(sys.executable).with_name("prefect"))


@contextmanager
def prefect_server(home: Path, **settings: str) -> Iterator[dict[str, str]]:
    """`prefect server start` of its own in `home`, with a process work pool "reviewlens" and every
    deployment of prefect.yaml; yields the environment that points at it. `settings` add to it."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PATH": with_interpreter_first(os.environ.get("PATH", "")),
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        **settings,
    }
    with (home / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
        subprocess.run(
            [PREFECT, "work-pool", "create", "reviewlens", "--type", "process"],
            env=env, check=True, cwd=ROOT, capture_output=True,
        )  # fmt: skip
        subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], env=env, check=True, cwd=ROOT, capture_output=True)
        yield env
    finally:
        server.terminate()
        server.wait(30)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Chromium and its driver are absent: apt-get install chromium chromium-driver",
)


def headless_chromium(profile: Path, window: tuple[int, int]) -> Any:
    """A headless Chromium of the system packages, driven by Selenium, its profile in `profile`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={window[0]},{window[1]}"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
