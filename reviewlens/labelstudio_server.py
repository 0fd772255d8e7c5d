"""Starts and stops a local Label Studio server (its own virtual environment, embedded SQLite,
or a PostgreSQL database when REVIEWLENS_LABEL_STUDIO_DATABASE_URL names one).

Label Studio 1.23 turns legacy tokens off for new organisations unless
LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN is set before its first start; with it, the token given
at the first start is the one the SDK sends. The login and token reach it through its
environment, never its command line (which every local user can read), and it listens on
loopback only: `--host` names the address in its URLs, `--internal-host` the one it binds.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

from core.errors import ReviewlensError
from reviewlens.processes import note, running, stop_noted

# Label Studio's default reserved networks (core/utils/io.py: validate_ip), less 127.0.0.0/8 and
# ::1/128: its ML backend and webhooks may reach reviewlens on this machine, and nothing else
# private that the default would refuse.
BANNED_BUT_LOOPBACK = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "233.252.0.0/24", "240.0.0.0/4", "255.255.255.255/32", "::/128",
    "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001:0000::/32",
    "2001:20::/28", "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
)  # fmt: skip
# Label Studio's own environment, made by `make env` beside this package's repository.
DEFAULT_BIN = Path(__file__).resolve().parents[1] / ".venv-labelstudio" / "bin" / "label-studio"


class ServerError(ReviewlensError):
    """The local Label Studio is not installed, exited, or does not answer; the message says where to look."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    token: str


def _database_env(url: str | None) -> dict[str, str]:
    """Label Studio's own database settings: its embedded SQLite, or the PostgreSQL `url` names."""
    if not url:
        return {"DJANGO_DB": "sqlite"}
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise ServerError("REVIEWLENS_LABEL_STUDIO_DATABASE_URL is not a postgresql://user:password@host:port/name URL")
    return {
        "DJANGO_DB": "postgresql",
        "POSTGRE_NAME": parts.path.strip("/"),
        "POSTGRE_USER": unquote(parts.username or "postgres"),
        "POSTGRE_PASSWORD": unquote(parts.password or ""),
        "POSTGRE_HOST": parts.hostname or "localhost",
        "POSTGRE_PORT": str(parts.port or 5432),
    }


@dataclass
class LabelStudioServer:
    home: Path  # Label Studio's data: database, uploads, log, credentials; mode 700
    document_root: Path  # the only folder it may serve local files from
    host: str = "127.0.0.1"
    port: int = 8080
    binary: Path = Path(os.environ.get("REVIEWLENS_LABEL_STUDIO_BIN", DEFAULT_BIN))
    # postgresql://user:password@host:port/name for the production layout; SQLite in home if None.
    database_url: str | None = field(
        default_factory=lambda: os.environ.get("REVIEWLENS_LABEL_STUDIO_DATABASE_URL") or None, repr=False
    )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "label-studio.pid"

    def _make_home(self) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home.chmod(0o700)  # its database holds the token

    def credentials(self) -> Credentials:
        """The admin login and token, made on first use and kept in the home folder (mode 600)."""
        path = self.home / "credentials.json"
        if path.exists():
            return Credentials(**json.loads(path.read_text()))
        self._make_home()
        creds = Credentials("admin@reviewlens.local", secrets.token_urlsafe(12), secrets.token_hex(20))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds.__dict__, f)
        return creds

    def person(self, email: str) -> Credentials:
        """A login and token of one more user of the server's organisation (an annotator), made
        on first use and kept beside the admin's (mode 600). Answers given with the token are
        that user's, not the admin's.

        Nobody signs up without an invitation (the server starts with sign-up by link only): the
        admin asks for the organisation's invitation link, the user signs up through it as a
        person does, and the admin then makes the link new, so a link seen once opens nothing."""
        people = self.people()
        if email in people:
            return people[email]
        admin = {"Authorization": f"Token {self.credentials().token}"}
        invited = requests.get(f"{self.url}/api/invite", headers=admin, timeout=30)
        if not invited.ok:
            raise ServerError(f"Label Studio at {self.url} gave no invitation link (answered {invited.status_code})")
        signup = f"{self.url}{invited.json()['invite_url']}"
        password = secrets.token_urlsafe(12)
        with requests.Session() as browser:
            page = browser.get(signup, timeout=30)
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            form = {"email": email, "password": password, "csrfmiddlewaretoken": csrf.group(1) if csrf else ""}
            signed = browser.post(signup, data=form, timeout=30, allow_redirects=False, headers={"Referer": signup})
            token = browser.get(f"{self.url}/api/current-user/token", timeout=30)
        requests.post(f"{self.url}/api/invite/reset-token", headers=admin, timeout=30).raise_for_status()
        if signed.status_code != 302 or not token.ok:
            raise ServerError(f"Label Studio at {self.url} did not sign up {email} (answered {signed.status_code})")
        people[email] = Credentials(email, password, str(token.json()["token"]))
        fd = os.open(self.home / "people.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({who: creds.__dict__ for who, creds in people.items()}, f)
        return people[email]

    def people(self) -> dict[str, Credentials]:
        """The users `person` made, by e-mail address."""
        path = self.home / "people.json"
        kept = json.loads(path.read_text()) if path.exists() else {}
        return {email: Credentials(**creds) for email, creds in kept.items()}

    def answers(self) -> bool:
        """Whether anything answers Label Studio's health check at the address."""
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def pid(self) -> int | None:
        """The process this home folder started, while it runs."""
        return running(self.pid_file)

    def is_up(self) -> bool:
        """Whether the server this home folder started runs and answers."""
        return self.pid() is not None and self.answers()

    def _seed_database(self) -> None:
        """A new home's SQLite database starts as a copy of a blank one this Label Studio install
        migrated once: its ~300 migrations cost half a minute of CPU on every first start, and
        they give every home the same tables and rows. The admin, the organisation and the secret
        key are still made by this home's own first start."""
        database = self.home / "label_studio.sqlite3"
        if self.database_url or database.exists() or (blank := blank_database(self.binary)) is None:
            return
        shutil.copyfile(blank, database)
        database.chmod(0o600)

    def start(self, timeout_s: float = 300.0) -> Credentials:
        """Starts the server in the background unless ours already answers; waits until it does."""
        creds = self.credentials()
        if self.is_up():
            return creds
        if self.answers() or not _port_free(self.host, self.port):
            raise ServerError(
                f"something else listens at {self.host}:{self.port}, not the Label Studio of {self.home}: "
                "stop it or choose another --port"
            )
        if not self.binary.exists():
            raise ServerError(f"Label Studio is not installed at {self.binary}: run `make env`")
        self._make_home()
        self._seed_database()
        env = {
            **os.environ,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_USERNAME": creds.username,
            "LABEL_STUDIO_PASSWORD": creds.password,
            "LABEL_STUDIO_USER_TOKEN": creds.token,
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root.resolve()),
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.home.resolve()),
            **_database_env(self.database_url),
            "LATEST_VERSION_CHECK": "false",
            # Nobody joins the organisation without an invitation link (`person`), and nothing is
            # reported to Label Studio's makers: no analytics, no error reports.
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            # A page that points its own domain at this machine (DNS rebinding) gets 400: Django
            # answers only the names of the address it listens on.
            "ALLOWED_HOSTS": ",".join(sorted({self.host, "127.0.0.1", "localhost"})),
            # reviewlens' ML backend answers on this machine: Label Studio's guard against requests
            # to reserved networks keeps every network it bans but the loopback.
            "USE_DEFAULT_BANNED_SUBNETS": "false",
            "USER_ADDITIONAL_BANNED_SUBNETS": ",".join(BANNED_BUT_LOOPBACK),
        }
        cmd = [
            str(self.binary),
            "start",
            "--no-browser",
            "--host",
            self.host,
            "--internal-host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.home.resolve()),
        ]
        log = open(self.home / "label-studio.log", "ab")  # noqa: SIM115 - handed to the child
        # A session of its own: the server outlives the command that started it (make demo).
        # umask 077: its database and uploads are the owner's alone.
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, umask=0o077)
        note(self.pid_file, proc.pid)
        (self.home / "port").write_text(f"{self.port}\n")  # for the commands that find it again
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerError(f"Label Studio exited with {proc.returncode}: see {self.home / 'label-studio.log'}")
            if self.answers():
                return creds
            time.sleep(1.0)
        self.stop()
        raise ServerError(f"Label Studio did not answer at {self.url} within {timeout_s:.0f}s")

    def stop(self) -> bool:
        """Stops the server this home folder started, if it runs; whether it ran."""
        return stop_noted(self.pid_file)


def port_of(home: Path, default: int = 8080) -> int:
    """The port the Label Studio of `home` was last started on (`up --label-studio-port`, `demo
    --port`), so that its other commands find it without being told again."""
    try:
        return int((home / "port").read_text())
    except (FileNotFoundError, ValueError):
        return default


def blank_database(binary: Path) -> Path | None:
    """A migrated, empty SQLite database of the Label Studio that `binary` starts, made on first
    use and kept in its environment under its version; None where that environment cannot be
    written or the migration fails (each home then migrates its own, only slower)."""
    env_dir = binary.resolve().parent.parent
    versions = sorted(env_dir.glob("lib/python*/site-packages/label_studio-*.dist-info"))
    if not versions:
        return None
    version = versions[-1].name.removeprefix("label_studio-").removesuffix(".dist-info")
    keep = env_dir / "share" / "reviewlens"
    blank = keep / f"blank-label-studio-{version}.sqlite3"
    try:
        keep.mkdir(parents=True, exist_ok=True)
        # One process migrates; the others (parallel test workers, a demo beside `up`) wait for it.
        with open(keep / "blank.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not blank.exists():
                _migrate_blank(binary, blank)
    except (OSError, subprocess.SubprocessError):
        return None
    return blank


def _migrate_blank(binary: Path, blank: Path) -> None:
    """`label-studio version` applies every migration before it answers, and makes no user."""
    with tempfile.TemporaryDirectory(dir=blank.parent) as scratch:
        env = {**os.environ, "DJANGO_DB": "sqlite", "LABEL_STUDIO_BASE_DATA_DIR": scratch}
        env["LATEST_VERSION_CHECK"] = "false"
        for name in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
            env.pop(name, None)
        subprocess.run([str(binary), "version", "--data-dir", scratch], env=env, check=True, timeout=600,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        os.replace(Path(scratch) / "label_studio.sqlite3", blank)


def _port_free(host: str, port: int) -> bool:
    """Whether nothing listens on the port (a closed connection's leftover does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    # `make env` migrates the blank database while the other environment installs; this module
    # needs only the standard library and requests, so Label Studio's own Python runs it.
    made = blank_database(DEFAULT_BIN)
    print(f"Label Studio's blank database: {made}" if made else "no blank database: each home migrates its own")
