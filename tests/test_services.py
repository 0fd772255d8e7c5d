"""`reviewlens up` and `down` as ops run them: the services start once however often `up` runs,
the deployments and a worker are there, and `down` stops exactly what `up` started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import requests
import yaml
from PIL import Image

from reviewlens.services import POOL
from tests.postgres import PostgresServer
from tests.procs import ROOT, free_port

pytestmark = pytest.mark.skipif(
    not (ROOT / ".venv-labelstudio" / "bin" / "label-studio").exists(),
    reason="Label Studio is not installed (make env)",
)


def _reviewlens(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "reviewlens.cli", *args], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _started(data: Path) -> dict[str, int]:
    files = {"label-studio": data / "label-studio" / "label-studio.pid"} | {
        name: data / "services" / f"{name}.pid" for name in ("prefect-server", "worker")
    }
    return {name: int(path.read_text().split()[0]) for name, path in files.items() if path.exists()}


def _settings(request: pytest.FixtureRequest, databases: str) -> dict[str, str]:
    """The environment `up` runs in: the embedded databases, or each service on PostgreSQL."""
    env = {k: v for k, v in os.environ.items() if "DATABASE" not in k}
    if databases == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        env["REVIEWLENS_LABEL_STUDIO_DATABASE_URL"] = server.new_database()
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = server.new_database().replace("postgresql:", "postgresql+asyncpg:")
        env["REVIEWLENS_DATABASE_URL"] = server.new_database()
    return env


def _tables(url: str, table: str) -> bool:
    with psycopg.connect(url.replace("+asyncpg", "")) as conn:
        return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0])  # type: ignore[index]


# On the embedded databases, `up` and `down` run through the README's own block (below).
@pytest.mark.parametrize("databases", ["postgresql"])
def test_up_starts_each_service_once_and_down_stops_exactly_those(
    tmp_path: Path, request: pytest.FixtureRequest, databases: str
) -> None:
    env = _settings(request, databases)
    data = tmp_path / "data"
    ports = ["--label-studio-port", str(free_port()), "--prefect-port", str(free_port())]
    api = f"http://127.0.0.1:{ports[3]}/api"
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        said = _reviewlens("up", "--data-dir", str(data), *ports, env=env)
        assert f"http://127.0.0.1:{ports[1]}" in said and f"http://127.0.0.1:{ports[3]}/" in said
        started = _started(data)
        assert sorted(started) == ["label-studio", "prefect-server", "worker"]
        assert requests.get(f"http://127.0.0.1:{ports[1]}/health", timeout=5).ok
        # Prefect's API takes no call without the login up made, and no cross-origin call.
        login_file = data / "services" / "prefect-auth"
        assert login_file.stat().st_mode & 0o077 == 0
        assert f"export PREFECT_API_URL={api} PREFECT_API_AUTH_STRING=$(cat {login_file.resolve()})" in said
        auth = tuple(login_file.read_text().strip().split(":", 1))
        for stranger in (None, ("reviewlens", "guess")):
            assert requests.post(f"{api}/deployments/filter", json={}, auth=stranger, timeout=10).status_code == 401
        preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
        asked = requests.options(f"{api}/deployments/filter", headers=preflight, timeout=10)
        assert asked.headers.get("access-control-allow-origin") != "http://evil.example"
        assert asked.headers.get("access-control-allow-origin") != "*"
        # A page that points its own domain here (DNS rebinding) reaches neither Prefect nor Label Studio.
        rebound = {"Host": "attacker.example"}
        assert (
            requests.post(f"{api}/deployments/filter", json={}, auth=auth, headers=rebound, timeout=10).status_code
            == 400
        )
        assert requests.get(f"http://127.0.0.1:{ports[1]}/health", headers=rebound, timeout=5).status_code == 400
        deployments = requests.post(f"{api}/deployments/filter", json={}, auth=auth, timeout=10).json()
        expected = {d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
        assert {d["name"] for d in deployments} == expected
        assert all(d["work_pool_name"] == POOL for d in deployments)
        # Every scheduled or event-started run reads the data folder `up` was given, not ./data.
        assert {d["parameters"].get("data_dir") for d in deployments} - {None} == {str(data.resolve())}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = requests.post(f"{api}/work_pools/{POOL}/workers/filter", json={}, auth=auth, timeout=10).json()
            if any(w["status"] == "ONLINE" for w in workers):
                break
            time.sleep(1)
        else:
            pytest.fail(f"no worker came online: {(data / 'services' / 'worker.log').read_text()[-2000:]}")

        if databases == "postgresql":  # each service keeps its data in its own database, none in a file
            assert _tables(env["REVIEWLENS_LABEL_STUDIO_DATABASE_URL"], "project")
            assert _tables(env["PREFECT_API_DATABASE_CONNECTION_URL"], "flow_run")
            assert not list(data.rglob("*.sqlite3")) and not list(data.rglob("*.db"))

        _reviewlens("up", "--data-dir", str(data), *ports, env=env)  # again: nothing starts twice
        assert _started(data) == started
        assert all(_alive(pid) for pid in started.values())

        said = _reviewlens("down", "--data-dir", str(data), *ports, env=env)
        assert said.strip() == "stopped: worker, prefect-server, label-studio"
        assert not any(_alive(pid) for pid in started.values())
        assert _started(data) == {}
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{api}/health", timeout=5)
        assert bystander.poll() is None  # a process up did not start is left alone
        assert "nothing" in _reviewlens("down", "--data-dir", str(data), *ports, env=env)
    finally:
        bystander.kill()
        if _started(data):
            _reviewlens("down", "--data-dir", str(data), *ports, env=env)


def test_down_leaves_alone_a_process_a_stale_pid_file_names(tmp_path: Path) -> None:
    # A crash left pid files behind, and their process ids now name another program.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        data = tmp_path / "data"
        (data / "services").mkdir(parents=True)
        (data / "label-studio").mkdir()
        (data / "services" / "worker.pid").write_text(f"{bystander.pid} 1\n")  # another start time
        (data / "services" / "prefect-server.pid").write_text(f"{bystander.pid}")  # no start time at all
        (data / "label-studio" / "label-studio.pid").write_text(f"{bystander.pid} 1\n")
        (data / "services" / "label-studio.started-by-up").touch()  # up had started it
        said = _reviewlens("down", "--data-dir", str(data), "--label-studio-port", str(free_port()))
        assert said.splitlines()[0] == "nothing of reviewlens up was running"
        assert said.count(f"process {bystander.pid} is not the one up started: left alone") == 3
        time.sleep(0.5)
        assert bystander.poll() is None and _alive(bystander.pid)
        assert _started(data) == {}  # the stale pid files are gone
    finally:
        bystander.kill()
        bystander.wait()


# Waits until the retrain deployment's runs have ended; prints each one's state and its log.
WAIT_FOR_RUNS = """
import os, time, requests
api, auth = os.environ["PREFECT_API_URL"], tuple(os.environ["PREFECT_API_AUTH_STRING"].split(":", 1))
retrain = requests.get(f"{api}/deployments/name/retrain/reviewlens-retrain", auth=auth, timeout=10).json()["id"]
deadline = time.monotonic() + 240
while time.monotonic() < deadline:
    asked = {"flow_runs": {"deployment_id": {"any_": [retrain]}}}
    runs = requests.post(f"{api}/flow_runs/filter", json=asked, auth=auth, timeout=10).json()
    if runs and all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs):
        break
    time.sleep(2)
for r in runs:
    for _ in range(20):  # a run's last lines reach the server just after its state
        logs = requests.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [r["id"]]}}},
                             auth=auth, timeout=10).json()
        if any("Finished in state" in line["message"] for line in logs):
            break
        time.sleep(0.5)
    print("flow run", r["name"], r["state_type"], "|", " | ".join(line["message"] for line in logs))
"""


def _ops_block() -> list[str]:
    """The README's block for ops, as its commands."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```sh", readme.index("`make up` starts what scheduled runs need"))
    block = readme[start + len("```sh") : readme.index("```", start + 5)]
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readmes_ops_block_runs_as_written_and_leaves_the_demos_label_studio_alone(tmp_path: Path) -> None:
    # A folder laid out as a checkout where `make env` has run: the block's relative paths hold.
    ops = tmp_path / "ops"
    ops.mkdir()
    for name in ("Makefile", "pyproject.toml", ".venv", ".venv-labelstudio"):
        (ops / name).symlink_to(ROOT / name)
    ports = {"LABEL_STUDIO_PORT": str(free_port()), "PREFECT_PORT": str(free_port())}
    env = {k: v for k, v in os.environ.items() if "DATABASE" not in k and not k.startswith("PREFECT_API")}
    env.update(ports, WAIT_FOR_RUNS=WAIT_FOR_RUNS, COLUMNS="200")  # a wide terminal: no name cut short
    # A new shop: a few photos of two products imported, none of them with enough to train on.
    shop = tmp_path / "shop"
    for n in range(4):
        (shop / f"product-{n % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (96, 64), (40 * n, 200 - 40 * n, 90)).save(shop / f"product-{n % 2}" / f"{n}.png")
    imported = subprocess.run([sys.executable, "-m", "reviewlens.cli", "import", str(shop), "--data-dir", "data"],
                              cwd=ops, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr
    # The demo's Label Studio runs already, in the same data folder.
    demo = subprocess.run(
        [sys.executable, "-m", "reviewlens.cli", "label-studio", "start", "--data-dir", "data",
         "--port", ports["LABEL_STUDIO_PORT"]],
        cwd=ops, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    commands = _ops_block()
    assert [c.split()[0] for c in commands] == ["make", ".", ".venv/bin/prefect", ".venv/bin/prefect",
                                                ".venv/bin/reviewlens", "make"]  # fmt: skip
    script = ["set -e"]
    for n, command in enumerate(commands):
        script += [f"echo '::: {n}'", command]
        if "deployment run" in command:  # the retrain runs on the worker before `down` stops it
            script.append('.venv/bin/python -c "$WAIT_FOR_RUNS"')
    try:
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)], cwd=ops, env=env, capture_output=True, text=True, timeout=600
        )
        said = dict(part.split("\n", 1) for part in done.stdout.split("::: ")[1:])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        up, _, listed, ran, added, down = (said[str(n)] for n in range(6))
        assert f"export PREFECT_API_URL=http://127.0.0.1:{ports['PREFECT_PORT']}/api" in up
        assert "retrain/reviewlens-retrain" in listed.replace("\n", "")
        assert "Created flow run" in ran
        # The retrain ran on the worker, found too few accepted photos, and said so without failing.
        [run] = [line for line in ran.splitlines() if line.startswith("flow run")]
        assert " COMPLETED |" in run and "nothing trained: 0 products have 5 or more accepted photos" in run, run
        assert "login anna@example.com" in added
        assert "stopped: worker, prefect-server\n" in down  # and not the demo's Label Studio
        assert "Label Studio left running: `up` did not start it" in down
    finally:
        stopped = subprocess.run(["make", "-s", "down", "stop"], cwd=ops, env=env, capture_output=True, text=True)
    assert f"stopped: Label Studio at http://127.0.0.1:{ports['LABEL_STUDIO_PORT']}" in stopped.stdout
