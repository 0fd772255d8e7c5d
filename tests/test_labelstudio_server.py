"""The local Label Studio: reachable from this machine only, its secrets out of sight, and ours."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from reviewlens.labelstudio_server import LabelStudioServer, ServerError, blank_database
from tests.conftest import free_port
from tests.procs import HealthImpostor, descendants, listening_addresses

pytestmark = pytest.mark.integration


def test_it_listens_on_loopback_only(label_studio: LabelStudioServer) -> None:
    assert listening_addresses(label_studio.port) == {"0100007F"}  # 127.0.0.1, and nothing else


def test_its_secrets_are_on_no_command_line_and_its_files_are_the_owners(label_studio: LabelStudioServer) -> None:
    creds = label_studio.credentials()
    pid = label_studio.pid()
    assert pid is not None
    for p in [pid, *descendants(pid)]:
        cmdline = Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
        assert creds.password not in cmdline and creds.token not in cmdline
    assert label_studio.home.stat().st_mode & 0o777 == 0o700
    database = next(label_studio.home.rglob("*.sqlite3"))
    assert database.stat().st_mode & 0o077 == 0, oct(database.stat().st_mode)


def test_a_server_it_did_not_start_is_not_taken_for_it(tmp_path: Path) -> None:
    impostor = ThreadingHTTPServer(("127.0.0.1", 0), HealthImpostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    try:
        server = LabelStudioServer(tmp_path / "ls", tmp_path, port=impostor.server_address[1])
        assert server.answers() and not server.is_up()
        with pytest.raises(ServerError, match="something else listens"):
            server.start()
    finally:
        impostor.shutdown()
        impostor.server_close()


def test_a_new_home_starts_from_the_blank_database_and_shares_nothing_with_another(
    label_studio: LabelStudioServer, tmp_path: Path
) -> None:
    second = LabelStudioServer(tmp_path / "ls", tmp_path, port=free_port())
    creds = second.start()
    try:
        blank = blank_database(second.binary)
        assert blank is not None and blank.exists()
        # Its own admin: the other home's token is a stranger's here, and its own is taken.
        projects = f"{second.url}/api/projects"
        stranger = {"Authorization": f"Token {label_studio.credentials().token}"}
        assert requests.get(projects, headers=stranger, timeout=30).status_code == 401
        assert requests.get(projects, headers={"Authorization": f"Token {creds.token}"}, timeout=30).ok
        # Its own secret key, which signs its sessions.
        assert (second.home / ".env").read_text() != (label_studio.home / ".env").read_text()
        assert (second.home / "label_studio.sqlite3").stat().st_mode & 0o077 == 0
        pid = second.pid()
    finally:
        second.stop()
    # Stopped and reaped: no zombie is left in the process table.
    assert pid is not None and not Path(f"/proc/{pid}").exists()
