"""The local Label Studio: reachable from this machine only, its secrets out of sight, and ours."""

from __future__ import annotations

import re
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from reviewlens.cli import main
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


def _sign_up(url: str, path: str, email: str) -> int:
    """A sign-up through Label Studio's form, as a stranger's browser posts it; the status."""
    with requests.Session() as browser:
        page = browser.get(f"{url}{path}", timeout=30)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        form = {"email": email, "password": "a-Long-password-1", "csrfmiddlewaretoken": csrf.group(1) if csrf else ""}
        signed = browser.post(f"{url}{path}", data=form, headers={"Referer": f"{url}{path}"}, allow_redirects=False)
    return signed.status_code


def test_nobody_signs_up_uninvited_and_an_invitation_opens_once(
    label_studio: LabelStudioServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = label_studio.url
    assert _sign_up(url, "/user/signup/", "stranger@example.com") == 403
    admin = {"Authorization": f"Token {label_studio.credentials().token}"}
    link = requests.get(f"{url}/api/invite", headers=admin, timeout=30).json()["invite_url"]

    # The admin adds an annotator: their login printed once, their own user in the organisation.
    where = ["--home", str(label_studio.home), "--port", str(label_studio.port)]
    assert main(["label-studio", "add-user", "invited@reviewlens.test", *where]) == 0
    said = capsys.readouterr().out
    invited = label_studio.people()["invited@reviewlens.test"]
    assert f"login invited@reviewlens.test, password {invited.password}" in said
    me = requests.get(f"{url}/api/current-user/whoami", headers={"Authorization": f"Token {invited.token}"}, timeout=30)
    assert me.json()["email"] == "invited@reviewlens.test"
    assert main(["label-studio", "add-user", "invited@reviewlens.test", *where]) == 0
    assert invited.password not in capsys.readouterr().out  # printed once only

    # The link the invitation used opens nothing now.
    assert _sign_up(url, link, "late@example.com") == 403
    assert "late@example.com" not in {u["email"] for u in requests.get(f"{url}/api/users", headers=admin).json()}
    assert "stranger@example.com" not in {u["email"] for u in requests.get(f"{url}/api/users", headers=admin).json()}


def test_a_page_that_points_its_own_domain_here_is_refused(label_studio: LabelStudioServer) -> None:
    """DNS rebinding: the browser sends the page's own name as Host, with the admin's token or cookies."""
    admin = {"Authorization": f"Token {label_studio.credentials().token}"}
    projects = f"{label_studio.url}/api/projects"
    assert requests.get(projects, headers={**admin, "Host": "attacker.example"}, timeout=30).status_code == 400
    assert requests.get(projects, headers={**admin, "Host": f"localhost:{label_studio.port}"}, timeout=30).ok
