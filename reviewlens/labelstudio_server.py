"""Starts and stops a local Label Studio server (its own virtual environment, embedded SQLite).

Label Studio 1.23 turns legacy tokens off for new organisations unless
LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN is set before its first start; with it, the token given
to `label-studio start --user-token` is the one the SDK sends.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from core.errors import ReviewlensError

DEFAULT_BIN = Path(".venv-labelstudio/bin/label-studio")


class ServerError(ReviewlensError):
    """The local Label Studio is not installed, exited, or does not answer; the message says where to look."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    token: str


@dataclass
class LabelStudioServer:
    home: Path  # Label Studio's data: database, uploads, log, credentials
    document_root: Path  # the only folder it may serve local files from
    host: str = "127.0.0.1"
    port: int = 8080
    binary: Path = Path(os.environ.get("REVIEWLENS_LABEL_STUDIO_BIN", DEFAULT_BIN))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def _pid_file(self) -> Path:
        return self.home / "label-studio.pid"

    def credentials(self) -> Credentials:
        """The admin login and token, made on first use and kept in the home folder (mode 600)."""
        path = self.home / "credentials.json"
        if path.exists():
            return Credentials(**json.loads(path.read_text()))
        self.home.mkdir(parents=True, exist_ok=True)
        creds = Credentials("admin@reviewlens.local", secrets.token_urlsafe(12), secrets.token_hex(20))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds.__dict__, f)
        return creds

    def is_up(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def start(self, timeout_s: float = 300.0) -> Credentials:
        """Starts the server in the background unless it already answers; waits until it does."""
        creds = self.credentials()
        if self.is_up():
            return creds
        if not self.binary.exists():
            raise ServerError(f"Label Studio is not installed at {self.binary}: run `make env`")
        env = {
            **os.environ,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root.resolve()),
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.home.resolve()),
            "DJANGO_DB": "sqlite",
            "LATEST_VERSION_CHECK": "false",
        }
        cmd = [
            str(self.binary),
            "start",
            "--no-browser",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.home.resolve()),
            "--username",
            creds.username,
            "--password",
            creds.password,
            "--user-token",
            creds.token,
        ]
        log = open(self.home / "label-studio.log", "ab")  # noqa: SIM115 - handed to the child
        # A session of its own: the server outlives the command that started it (make demo).
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerError(f"Label Studio exited with {proc.returncode}: see {self.home / 'label-studio.log'}")
            if self.is_up():
                return creds
            time.sleep(1.0)
        self.stop()
        raise ServerError(f"Label Studio did not answer at {self.url} within {timeout_s:.0f}s")

    def stop(self) -> None:
        """Stops the server this home folder started, if it runs."""
        if not self._pid_file.exists():
            return
        pid = int(self._pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                os.killpg(pid, 0)
                time.sleep(0.2)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._pid_file.unlink(missing_ok=True)
