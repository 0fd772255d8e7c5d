"""`reviewlens up` / `down`: the services scheduled runs need, on one machine, started and stopped
together: Label Studio, a Prefect server, the process work pool "reviewlens" with one worker, and
every deployment of prefect.yaml.

Each process runs in a session of its own (it outlives the command) and is noted in a pid file
under DATA_DIR/services; `down` stops exactly the processes those files name. Both are idempotent:
`up` starts only what does not run, `down` with nothing running does nothing. Label Studio keeps
its own pid file and home (reviewlens/labelstudio_server.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from core.errors import ReviewlensError
from core.kept_secret import kept_secret, split_login
from core.layout import Layout
from reviewlens.labelstudio_server import LabelStudioServer
from reviewlens.processes import note, noted, running, stop_group

ROOT = Path(__file__).resolve().parents[1]  # where prefect.yaml is, and the flows it names
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "reviewlens"
API_TRIES = 8  # about 30 s of backing off


def with_interpreter_first(path: str) -> str:
    """PATH with this interpreter's folder first: prefect.yaml's work pool runs each flow run as
    `python -m prefect.engine`, which must be this environment's Python."""
    return os.pathsep.join([str(Path(sys.executable).parent), *(p for p in path.split(os.pathsep) if p)])


class ServiceError(ReviewlensError):
    """A service did not start; the message names its log."""


@dataclass(frozen=True)
class Services:
    label_studio: LabelStudioServer
    folder: Path  # pid files and logs of the Prefect server and worker
    prefect_port: int = 4200

    @classmethod
    def of(cls, data_dir: Path, label_studio_port: int = 8080, prefect_port: int = 4200) -> Services:
        layout = Layout(data_dir)
        server = LabelStudioServer(layout.data_dir / "label-studio", layout.data_dir, port=label_studio_port)
        return cls(server, layout.data_dir / "services", prefect_port)

    @property
    def prefect_env_file(self) -> Path:
        return self.folder / "prefect.env"

    def prefect_env(self) -> str:
        """The shell line that points the prefect command at this server, with its login."""
        return f"export PREFECT_API_URL={self.prefect_api} PREFECT_API_AUTH_STRING=$(cat {self.auth_file.resolve()})"

    @property
    def owned_label_studio(self) -> Path:
        """There when `up` started the Label Studio that runs (not the demo)."""
        return self.folder / "label-studio.started-by-up"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def auth_file(self) -> Path:
        return Layout(self.folder.parent).prefect_login

    def auth_string(self) -> str:
        """The login ('user:password') the Prefect server requires of every API call, made once
        and kept in DATA_DIR/services/prefect-auth, readable by its owner alone."""
        return kept_secret(self.auth_file)

    def _auth(self) -> tuple[str, str]:
        return split_login(self.auth_string())

    def env(self) -> dict[str, str]:
        """What the Prefect server, the worker and the flows it runs read. Prefect's database
        stays in DATA_DIR/prefect unless PREFECT_API_DATABASE_CONNECTION_URL names another.
        The server takes no call without the login, and no cross-origin call from a page but its own."""
        creds = self.label_studio.credentials()
        return {
            **os.environ,
            "PATH": with_interpreter_first(os.environ.get("PATH", "")),
            # prefect.yaml's pull step runs flows from `$PWD` as `prefect deploy` saw it: the
            # checkout, wherever the command that ran `up` was started from.
            "PWD": str(ROOT),
            "PREFECT_HOME": str((self.folder.parent / "prefect").resolve()),
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_SERVER_API_AUTH_STRING": self.auth_string(),
            "PREFECT_API_AUTH_STRING": self.auth_string(),
            "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": f"http://127.0.0.1:{self.prefect_port}",
            "LABEL_STUDIO_URL": self.label_studio.url,
            "LABEL_STUDIO_API_KEY": creds.token,
        }

    def pid(self, name: str) -> int | None:
        """The process `up` started under this name, while it runs."""
        return running(self.folder / f"{name}.pid")

    def _start(self, name: str, command: list[str]) -> int:
        if (pid := self.pid(name)) is not None:
            return pid
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                command, env=self.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        note(self.folder / f"{name}.pid", proc.pid)
        return proc.pid

    def _prefect_answers(self) -> bool:
        try:
            return requests.get(f"{self.prefect_api}/health", timeout=2).ok
        except requests.RequestException:
            return False

    def up(self, timeout_s: float = 180.0) -> list[str]:
        """Starts what does not run yet; returns where to look."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.label_studio.is_up():
            # `down` stops only the Label Studio `up` started, not one `make demo` left running.
            self.owned_label_studio.touch()
        creds = self.label_studio.start()
        if self.pid("prefect-server") is None and self._prefect_answers():
            raise ServiceError(
                f"something else answers at {self.prefect_api}, not the Prefect server of {self.folder}: "
                "stop it or choose another --prefect-port"
            )
        self._start(
            "prefect-server",
            [
                sys.executable,
                "-m",
                "reviewlens.prefect_server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.prefect_port),
            ],
        )
        deadline = time.monotonic() + timeout_s
        while not self._prefect_answers():
            if self.pid("prefect-server") is None or time.monotonic() > deadline:
                raise ServiceError(f"the Prefect server did not answer: see {self.folder / 'prefect-server.log'}")
            time.sleep(0.5)
        pool = self._api("GET", f"/work_pools/{POOL}")
        if pool.status_code == 404:
            self._prefect("work-pool", "create", POOL, "--type", "process")
        # Every deployment of prefect.yaml, made again each time: an edited file takes effect.
        self._prefect("--no-prompt", "deploy", "--all")
        self._deploy_for_this_data_dir()
        self._start("worker", [PREFECT, "worker", "start", "--pool", POOL])
        self.prefect_env_file.write_text(self.prefect_env() + "\n")
        return [
            f"Label Studio: {self.label_studio.url} (login {creds.username}; password and token in "
            f"{self.label_studio.home / 'credentials.json'})",
            f"Prefect: http://127.0.0.1:{self.prefect_port}/ (work pool {POOL}, one worker; logs in {self.folder}; "
            f"its login is in {self.auth_file})",
            "The prefect command reaches it with (the same line is kept in "
            f"{self.prefect_env_file}, for `. {self.prefect_env_file}`):",
            f"  {self.prefect_env()}",
        ]

    def _deploy_for_this_data_dir(self) -> None:
        """prefect.yaml names the data folder `data`, relative to where the worker runs: each
        deployment is pointed at the folder `up` was given, as an absolute path."""
        data_dir = str(self.folder.parent.resolve())
        listed = self._api("POST", "/deployments/filter", json={})
        listed.raise_for_status()
        for deployment in listed.json():
            parameters = deployment.get("parameters") or {}
            if "data_dir" in parameters and parameters["data_dir"] != data_dir:
                pointed = {"parameters": {**parameters, "data_dir": data_dir}}
                self._api("PATCH", f"/deployments/{deployment['id']}", json=pointed).raise_for_status()

    def _api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One call to the Prefect server, with its login. A 503 or 429 is asked again, as Prefect's
        own client does: a server on SQLite answers 503 while its database is locked by the runs a
        deploy just scheduled."""
        for attempt in range(API_TRIES):
            answer = requests.request(method, f"{self.prefect_api}{path}", auth=self._auth(), timeout=30, **kwargs)
            if answer.status_code not in (429, 503) or attempt == API_TRIES - 1:
                return answer
            time.sleep(min(8.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    def _prefect(self, *args: str) -> None:
        done = subprocess.run([PREFECT, *args], env=self.env(), cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise ServiceError(f"prefect {' '.join(args)} failed: {(done.stdout + done.stderr)[-2000:]}")

    def down(self) -> tuple[list[str], list[str]]:
        """Stops what `up` started, the worker first. Returns what it stopped, and the pid files
        it found naming a process `up` did not start (a crash's leftovers): removed, the process
        left alone."""
        stopped, stale = [], []
        pid_files = {name: self.folder / f"{name}.pid" for name in ("worker", "prefect-server")}
        if self.owned_label_studio.exists():
            pid_files["label-studio"] = self.label_studio.pid_file
            self.owned_label_studio.unlink()
        elif self.label_studio.is_up():
            stale.append("Label Studio left running: `up` did not start it (`make stop` stops the demo's)")
        for name, pid_file in pid_files.items():
            if (pid := running(pid_file)) is not None:
                stop_group(pid, grace_s=20.0 if name != "label-studio" else 10.0)
                stopped.append(name)
            elif (other := noted(pid_file)) is not None:
                stale.append(f"stale pid file of {name} (process {other} is not the one up started: left alone)")
            pid_file.unlink(missing_ok=True)
        return stopped, stale
