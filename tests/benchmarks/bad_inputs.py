"""Bad input, kills and hostile files across every stage, as a hostile new user would try them.

Each case runs the real command (or the real server) on real files and counts as handled when
it ends in a clear one-line error or the correct result, loses nothing, and prints no traceback.

    .venv/bin/python -m tests.benchmarks.bad_inputs
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from http.server import ThreadingHTTPServer
from pathlib import Path

import requests
import torch
from PIL import Image

from core.layout import Layout
from demo.shop.faults import bomb_png
from demo.shop.server import DemoShop
from reviewlens.labelstudio_server import LabelStudioServer
from tests.benchmarks import _bad_inputs_doors as doors
from tests.benchmarks._cases import CASES, Case, case, cli, refused
from tests.benchmarks._shop import crawl_config, make_shop, workdir
from tests.benchmarks._smoke import parser
from tests.conftest import free_port
from tests.procs import HealthImpostor, alive, descendants, listening_addresses

ROOT = workdir("bad-inputs")


def copy_data(name: str) -> Layout:
    """A copy of the crawled and deduplicated data folder, for a case to damage."""
    target = ROOT / name
    shutil.copytree(BASE.data_dir, target, ignore=shutil.ignore_patterns("runs", "models"))
    return Layout(target)


def rows(layout: Layout, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(layout.manifest_path) as db:
        return db.execute(sql).fetchall()


# --- 1. Label Studio: reachable from this machine only, secrets out of sight -------------------


@case("1a Label Studio listens on loopback only")
def _() -> tuple[bool, str]:
    found = listening_addresses(LS.port)
    return found == {"0100007F"}, f"listening on {sorted(found)}"


@case("1b its password and token are on no command line")
def _() -> tuple[bool, str]:
    creds, pid = LS.credentials(), LS.pid()
    lines = [Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace") for p in [pid, *descendants(pid or 0)]]
    leaked = [line for line in lines if creds.password in line or creds.token in line]
    return pid is not None and not leaked, f"{len(lines)} processes, {len(leaked)} with a secret"


@case("1c its data folder is 0700 and its database the owner's")
def _() -> tuple[bool, str]:
    database = next(LS.home.rglob("*.sqlite3"))
    modes = oct(LS.home.stat().st_mode & 0o777), oct(database.stat().st_mode & 0o777)
    return modes[0] == "0o700" and not database.stat().st_mode & 0o077, f"folder {modes[0]}, database {modes[1]}"


# --- 2, 3, 4, 5. Model files, manifest paths, the store, failed runs --------------------------


class Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@case("2 a planted model.pt is refused and runs nothing")
def _() -> tuple[bool, str]:
    layout = copy_data("planted")
    marker = ROOT / "the-pickle-ran"
    (layout.runs_dir / "29990101T000000Z-snap-x").mkdir(parents=True)
    torch.save(Planted(marker), layout.runs_dir / "29990101T000000Z-snap-x" / "model.pt")
    ok, detail = refused(cli("predict", str(PHOTO), "--data-dir", str(layout.data_dir)), "not a model reviewlens wrote")
    return ok and not marker.exists(), detail


@case("3 a manifest path outside the store is refused by dedupe and training")
def _() -> tuple[bool, str]:
    layout = copy_data("crafted-path")
    sha = rows(layout, "SELECT sha256 FROM curation WHERE is_kept = 1 LIMIT 1")[0][0]
    with sqlite3.connect(layout.manifest_path) as db:
        db.execute("UPDATE photos SET path = '../../../etc/hostname' WHERE sha256 = ?", (sha,))
        db.execute("DELETE FROM curation WHERE sha256 = ?", (sha,))
        db.execute(
            "INSERT INTO labels (sha256, project_id, task_id, pushed_at, decision, decided_at) "
            "SELECT sha256, 1, rowid, '', 'accept', '' FROM curation WHERE is_kept = 1"
        )
    run = cli("dedupe", "--data-dir", str(layout.data_dir))
    reason = rows(layout, f"SELECT reason FROM curation WHERE sha256 = '{sha}'")
    trained = cli("train", "--data-dir", str(layout.data_dir), *QUICK)
    snapshot = json.loads(next(layout.runs_dir.glob("*/snapshot.json")).read_text()) if trained.returncode == 0 else {}
    used = any(e["sha256"] == sha for e in snapshot.get("examples", [{"sha256": sha}]))
    ok = run.returncode == 0 and "not the store's own" in str(reason) and not used
    return ok, f"dedupe: {reason[0][0][:70] if reason else '?'}; in training: {used}"


@case("4 a swapped or deleted photo is left out of training and fetched again")
def _() -> tuple[bool, str]:
    layout = copy_data("damaged-store")
    accept_all(layout)
    kept = rows(layout, "SELECT sha256, path FROM usable_photos ORDER BY sha256")
    (layout.store_dir / str(kept[0][1])).unlink()
    (layout.store_dir / str(kept[1][1])).write_bytes((layout.store_dir / str(kept[-1][1])).read_bytes())
    trained = cli("train", "--data-dir", str(layout.data_dir), *QUICK)
    failed = {r[0] for r in rows(layout, "SELECT reason FROM failures")}
    recrawl = crawl_into(layout)
    restored = [hashlib.sha256((layout.store_dir / str(p)).read_bytes()).hexdigest() == sha for sha, p in kept[:2]]
    ok = trained.returncode == 0 and len(failed) == 2 and recrawl.returncode == 0 and all(restored)
    return ok, f"train rc {trained.returncode}, failures {sorted(failed)}, restored by re-crawl {restored}"


@case("5 a failed train leaves no run folder")
def _() -> tuple[bool, str]:
    layout = copy_data("failed-train")
    accept_all(layout)
    env = {**os.environ, "TORCH_HOME": str(ROOT / "no-torch"), "HTTPS_PROXY": "http://127.0.0.1:9"}
    args = ["train", "--data-dir", str(layout.data_dir), "--members", "efficientnet_lite0", "resnet50"]
    args += ["--epochs", "1", "--image-size", "64"]
    run = subprocess.run([sys.executable, "-m", "reviewlens.cli", *args], capture_output=True, text=True, env=env)
    left = list(layout.runs_dir.iterdir()) if layout.runs_dir.exists() else []
    ok, detail = refused(run, "--weights resnet50=")
    return ok and not left, f"{detail[:90]}; left behind: {[p.name for p in left]}"


# --- 6, 7. Numbers and types -------------------------------------------------------------------


def train_refuses(flags: list[str], named: str) -> Case:
    return lambda: refused(cli("train", "--data-dir", str(BASE.data_dir), *flags), named)


def crawl_refuses(settings: dict[str, object], named: str) -> Case:
    def check() -> tuple[bool, str]:
        file = ROOT / f"crawl-{abs(hash(json.dumps(settings)))}.json"
        file.write_text(json.dumps({**SHOP_SETTINGS, **settings}))
        return refused(cli("crawl", "--data-dir", str(ROOT / "typed"), "--config", str(file)), named)

    return check


case("6a train --epochs 0")(train_refuses(["--epochs", "0"], "greater than or equal to 1"))
case("6b train --image-size 16")(train_refuses(["--image-size", "16"], "from 32 to 1024"))
case("6c train --lr nan")(train_refuses(["--lr", "nan"], "finite number"))


@case("6d the gate never promotes a model at chance")
def _() -> tuple[bool, str]:
    from training.evaluate import HeldOut, promotion_gate
    from training.loading import PhotoRef

    tests = HeldOut([PhotoRef(ROOT / "p.jpg")] * 36, ["1"] * 36)
    gate = promotion_gate(16.7, Layout(ROOT / "empty"), tests, 0.0, n_classes=6)
    return not gate["promote"], gate["reason"]


case('7a "top_n": "abc"')(crawl_refuses({"top_n": "abc"}, "top_n: Input should be a valid integer"))
case('7b "categories": "10000000"')(crawl_refuses({"categories": "10000000"}, "categories: Input should be"))
case('7c "image_hosts": "127.0.0.1:18802"')(crawl_refuses({"image_hosts": "127.0.0.1:18802"}, "image_hosts"))

# --- 8. A crawl that fetched nothing -----------------------------------------------------------

case("8a shop URL without a scheme")(crawl_refuses({"shop_url": "127.0.0.1:8700"}, "not an http(s) address"))
case("8b ftp:// shop URL")(crawl_refuses({"shop_url": "ftp://127.0.0.1"}, "not an http(s) address"))
case("8c empty shop URL")(crawl_refuses({"shop_url": ""}, "not an http(s) address"))
case("8d a dead port")(
    crawl_refuses({"shop_url": f"http://127.0.0.1:{free_port()}", "backoff_s": 0.01}, "could not connect")
)
case("8e an unknown category")(crawl_refuses({"categories": [99]}, "no product or review page could be read"))
case("8f --top-n 0")(crawl_refuses({"top_n": 0}, "greater than or equal to 1"))

# --- 9, 10. Wrong folders, damaged files, servers that die -------------------------------------


def refuses_typo(stage: str) -> Case:
    def check() -> tuple[bool, str]:
        typo = ROOT / f"dta-{stage}"
        ok, detail = refused(cli(stage, "--data-dir", str(typo)), "no manifest at")
        return ok and not typo.exists(), detail

    return check


for stage in ("dedupe", "contact-sheet", "train"):
    case(f"9 a mistyped --data-dir for {stage}")(refuses_typo(stage))


@case("10a a corrupt manifest")
def _() -> tuple[bool, str]:
    layout = Layout(ROOT / "corrupt")
    layout.data_dir.mkdir()
    layout.manifest_path.write_bytes(b"not a database" * 200)
    return refused(cli("dedupe", "--data-dir", str(layout.data_dir)), "cannot be read")


@case("10b two dedupes at once")
def _() -> tuple[bool, str]:
    layout = copy_data("two-dedupes")
    with sqlite3.connect(layout.manifest_path) as db:
        db.execute("DELETE FROM curation")
    args = [sys.executable, "-m", "reviewlens.cli", "dedupe", "--data-dir", str(layout.data_dir)]
    runs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [run.communicate()[1] for run in runs]
    checked = rows(layout, "SELECT COUNT(*) FROM curation")[0][0] == rows(layout, "SELECT COUNT(*) FROM photos")[0][0]
    ok = all(r.returncode == 0 for r in runs) and checked and not any("Traceback" in e for e in errs)
    return ok, f"exit codes {[r.returncode for r in runs]}, every photo checked once: {checked}"


@case("10c predict on a decompression bomb")
def _() -> tuple[bool, str]:
    bomb = ROOT / "bomb.png"
    bomb.write_bytes(bomb_png())
    return refused(cli("predict", str(bomb), "--data-dir", str(MODEL.data_dir)), "too many pixels")


@case("10d predict on a 12000 x 12000 PNG")
def _() -> tuple[bool, str]:
    big = ROOT / "big.png"
    Image.new("1", (12000, 12000)).save(big, optimize=True)
    return refused(cli("predict", str(big), "--data-dir", str(MODEL.data_dir)), "too many pixels")


@case("10g predict on a 30000 x 1 PNG of 109 bytes")
def _() -> tuple[bool, str]:
    thin = ROOT / "thin.png"
    Image.new("1", (30_000, 1)).save(thin, optimize=True)
    return refused(cli("predict", str(thin), "--data-dir", str(MODEL.data_dir)), "more than 20 times as long")


@case("10e Label Studio dead during label push")
def _() -> tuple[bool, str]:
    env = {**os.environ, "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}", "LABEL_STUDIO_API_KEY": "0" * 40}
    run = subprocess.run(
        [sys.executable, "-m", "reviewlens.cli", "label", "push", "--data-dir", str(BASE.data_dir)],
        capture_output=True,
        text=True,
        env=env,
    )
    return refused(run, "does not answer")


@case("10f label-studio start from outside the repository")
def _() -> tuple[bool, str]:
    port = free_port()
    home = ROOT / "ls-elsewhere"
    run = cli("label-studio", "start", "--data-dir", str(home), "--port", str(port), cwd=Path("/"), timeout=400)
    cli("label-studio", "stop", "--data-dir", str(home), "--port", str(port))
    return run.returncode == 0 and "Label Studio at" in run.stdout, (run.stdout or run.stderr).strip()[-120:]


# --- 11. Processes and ports -------------------------------------------------------------------


@case("11a kill -9 of dedupe leaves no worker")
def _() -> tuple[bool, str]:
    layout = copy_data("killed-dedupe")
    with sqlite3.connect(layout.manifest_path) as db:
        db.execute("DELETE FROM curation")
        sha = "ee" * 32
        (layout.store_dir / "ee").mkdir(exist_ok=True)
        os.mkfifo(layout.store_dir / "ee" / f"{sha}.jpg")  # a read that never ends: workers mid-work
        db.execute("INSERT INTO photos VALUES (?, ?, 'JPEG', 100, 100, 1, '')", (sha, f"ee/{sha}.jpg"))
    proc = subprocess.Popen([sys.executable, "-m", "reviewlens.cli", "dedupe", "--data-dir", str(layout.data_dir)])
    workers: list[int] = []
    deadline = time.monotonic() + 60
    while len(workers) < 2 and time.monotonic() < deadline:
        workers = descendants(proc.pid)
        time.sleep(0.2)
    time.sleep(2)
    proc.kill()
    proc.wait()
    time.sleep(3)
    left = [w for w in workers if alive(w)]
    for w in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(w, signal.SIGKILL)
    return bool(workers) and not left, f"{len(workers)} workers, {len(left)} left alive"


@case("11b a server that answers /health but is not ours")
def _() -> tuple[bool, str]:
    impostor = ThreadingHTTPServer(("127.0.0.1", 0), HealthImpostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    try:
        port = str(impostor.server_address[1])
        home = ["--data-dir", str(ROOT / "ls-impostor")]
        status = cli("label-studio", "status", *home, "--port", port).stdout.strip()
        ok, detail = refused(cli("label-studio", "start", *home, "--port", port), "something else listens")
        return ok and status == "down", f"status: {status}; start: {detail}"
    finally:
        impostor.shutdown()
        impostor.server_close()


# --- 12. Settings files: read within a budget, quoted short -----------------------------------


def config_refused(name: str, write: Callable[[Path], object], named: str) -> Case:
    def check() -> tuple[bool, str]:
        file = ROOT / f"config-{name}"
        write(file)
        run = cli("crawl", "--data-dir", str(ROOT / "config-data"), "--config", str(file), timeout=60)
        ok, detail = refused(run, named)
        return ok and len(run.stderr) < 1_200, f"{detail[:120]} ({len(run.stderr):,} characters said)"

    return check


case("12a a --config nested 200,000 deep")(
    config_refused("deep.json", lambda f: f.write_text("[" * 200_000 + "]" * 200_000), "nested deeper than")
)
case("12b a --config of 3 MB")(config_refused("big.json", lambda f: f.write_text(" " * 3_000_000 + "{}"), "at most"))
case("12c a FIFO as --config")(config_refused("fifo", os.mkfifo, "not a regular file"))
case("12d /dev/zero as --config")(
    lambda: refused(cli("crawl", "--config", "/dev/zero", "--data-dir", str(ROOT / "zero"), timeout=60), "not a")
)
case("12e a 500 kB key in --config")(
    config_refused("key.json", lambda f: f.write_text(json.dumps({"k" * 500_000: 1})), "characters more")
)

# --- 13. Doors: Label Studio's sign-up, the pid files `down` reads -----------------------------


@case("13a a stranger signs up to Label Studio")
def _() -> tuple[bool, str]:
    with requests.Session() as browser:
        page = browser.get(f"{LS.url}/user/signup/", timeout=30)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        form = {"email": "stranger@example.com", "password": "a-Long-password-1"}
        form["csrfmiddlewaretoken"] = csrf.group(1) if csrf else ""
        signed = browser.post(f"{LS.url}/user/signup/", data=form, allow_redirects=False, timeout=30,
                              headers={"Referer": f"{LS.url}/user/signup/"})  # fmt: skip
    return signed.status_code == 403, f"sign-up answered {signed.status_code}"


@case("13b a stale pid file names an unrelated process")
def _() -> tuple[bool, str]:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        data = ROOT / "stale"
        (data / "services").mkdir(parents=True)
        (data / "services" / "prefect-server.pid").write_text(f"{bystander.pid} 1\n")
        run = cli("down", "--data-dir", str(data), "--label-studio-port", str(free_port()), timeout=120)
        time.sleep(0.5)
        alive_after = bystander.poll() is None
        return run.returncode == 0 and alive_after and "left alone" in run.stdout, run.stdout.strip()[-120:]
    finally:
        bystander.kill()
        bystander.wait()


# --- the run -----------------------------------------------------------------------------------


def crawl_into(layout: Layout) -> subprocess.CompletedProcess[str]:
    file = ROOT / "shop-crawl.json"
    file.write_text(json.dumps(SHOP_SETTINGS))
    return cli("crawl", "--data-dir", str(layout.data_dir), "--config", str(file))


def accept_all(layout: Layout) -> None:
    with sqlite3.connect(layout.manifest_path) as db:
        db.execute(
            "INSERT OR IGNORE INTO labels (sha256, project_id, task_id, pushed_at, decision, decided_at) "
            "SELECT sha256, 1, rowid, '', 'accept', '' FROM curation WHERE is_kept = 1"
        )


QUICK = ["--members", "efficientnet_lite0", "--epochs", "1", "--image-size", "64"]


def main() -> None:
    global BASE, MODEL, PHOTO, LS, SHOP_SETTINGS
    parser(__doc__).parse_args()
    shop_dir = make_shop(ROOT)
    PHOTO = next(iter(sorted((shop_dir / "photos").glob("*.jpg"))))
    LS = LabelStudioServer(ROOT / "label-studio", ROOT, port=free_port())
    LS.start()
    try:
        with DemoShop(shop_dir) as shop:
            fast = {"backoff_s": 0.05, "api_rate": 50.0, "image_rate": 200.0}
            SHOP_SETTINGS = {**asdict(crawl_config(shop)), **fast}
            BASE = Layout(ROOT / "base")
            assert crawl_into(BASE).returncode == 0 and cli("dedupe", "--data-dir", str(BASE.data_dir)).returncode == 0
            MODEL = copy_data("model")
            accept_all(MODEL)
            assert cli("train", "--data-dir", str(MODEL.data_dir), *QUICK).returncode == 0
            results = {}
            doors.ROOT, doors.MODEL = ROOT, MODEL.data_dir
            for name, check in CASES.items():
                try:
                    results[name] = check()
                except Exception as exc:  # a case that crashes is a case not handled
                    results[name] = (False, f"the check itself failed: {exc!r}")
                print(f"{'handled' if results[name][0] else 'NOT HANDLED'}  {name}: {results[name][1]}", flush=True)
    finally:
        doors.SERVICES.close()
        LS.stop()
        shutil.rmtree(ROOT, ignore_errors=True)
    handled = sum(ok for ok, _ in results.values())
    print(f"handled: {handled} of {len(results)}")


BASE = MODEL = Layout(ROOT)
PHOTO = ROOT
LS = LabelStudioServer(ROOT, ROOT)
SHOP_SETTINGS: dict[str, object] = {}

if __name__ == "__main__":
    main()
