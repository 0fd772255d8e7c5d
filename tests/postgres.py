"""A throwaway PostgreSQL server from the system's packages, in a folder of its own.

Started by the test setup and the benchmarks; never the machine's own cluster. PostgreSQL refuses
to run as root, so under root the server runs as the system's `postgres` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.procs import free_port


class NoPostgres(RuntimeError):
    """PostgreSQL is not installed here, or could not start: the tests that need it skip."""


def _program(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise NoPostgres(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return found


class PostgresServer:
    """`initdb` and `pg_ctl start` in a new folder on a free port; `stop` removes it all."""

    def __init__(self, fsync: bool = False) -> None:
        self.port = free_port()
        self.fsync = fsync
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise NoPostgres("running as root and there is no 'postgres' user to run the server as") from None
            self._user = "postgres"
        # Under root the folder must be one the postgres user can reach: /tmp, not the test home.
        self.dir = Path(tempfile.mkdtemp(prefix="reviewlens-pg-", dir="/tmp" if self._user else None))
        if self._user:
            shutil.chown(self.dir, self._user)

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://reviewlens@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str) -> None:
        done = subprocess.run(args, user=self._user, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise NoPostgres(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def start(self) -> PostgresServer:
        data = self.dir / "data"
        self._run(_program("initdb"), "-D", str(data), "-U", "reviewlens", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=100"
        if not self.fsync:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(_program("pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-o", options, "-w", "start")
        return self

    def new_database(self) -> str:
        """The URL of a new, empty database on this server."""
        import psycopg

        name = f"manifest_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def stop(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            with contextlib.suppress(NoPostgres):
                self._run(_program("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
