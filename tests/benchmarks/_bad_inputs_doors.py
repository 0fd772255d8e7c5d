"""The cases of bad_inputs that knock on a door: `serve`, `ml-backend` and the Prefect server as a
stranger on the machine would try them, a crawl of a shop that answers with hostile pages, and an
import that carries script. Each service is started once, as ops start it, when a case first needs it.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import requests
from PIL import Image

from core.kept_secret import basic_header, kept_secret, split_login
from core.layout import Layout
from tests.benchmarks._cases import case, cli, refused
from tests.benchmarks._hostile_shop import asked, hostile_shop
from tests.benchmarks._load import rss_mb, service

ROOT = MODEL = Path()  # set by bad_inputs before the cases run
SERVICES = ExitStack()
_started: dict[str, tuple[str, int]] = {}  # name: URL and pid


def _service(name: str, command: list[str], env: dict[str, str] | None = None, module: str = "reviewlens.cli") -> str:
    """Starts a service once, kept until bad_inputs closes SERVICES; returns its URL once it listens."""
    if name not in _started:
        _started[name] = SERVICES.enter_context(service(command, ROOT / f"{name}.log", env, module))
    return _started[name][0]


def serve() -> str:
    url = _service("serve", ["serve", "--data-dir", str(MODEL), "--queue", "4"])
    while not requests.get(f"{url}/health", timeout=30).ok:  # the model loads after the port opens
        time.sleep(0.5)
    return url


def backend() -> tuple[str, tuple[str, str]]:
    url = _service("ml-backend", ["ml-backend", "--data-dir", str(MODEL)])
    return url, split_login(kept_secret(Layout(MODEL).ml_backend_login))


def prefect() -> tuple[str, tuple[str, str]]:
    login = kept_secret(ROOT / "prefect-login")
    env = {**os.environ, "PREFECT_HOME": str(ROOT / "prefect"), "PREFECT_SERVER_API_AUTH_STRING": login,
           "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": "http://127.0.0.1"}  # fmt: skip
    fresh = "prefect" not in _started
    url = _service("prefect", [], env, module="reviewlens.prefect_server")
    while fresh and requests.get(f"{url}/api/health", timeout=30).status_code not in (200, 401):
        time.sleep(0.5)
    return url, split_login(login)


def rss_mb_of(name: str) -> float:
    return rss_mb(_started[name][1])


def png(name: str, size: tuple[int, int]) -> bytes:
    path = ROOT / name
    Image.new("1", size).save(path, optimize=True)
    return path.read_bytes()


def answered(url: str, request: bytes, status: bytes) -> tuple[bool, str]:
    """Sends `request` as raw bytes (what requests would refuse to send); handled when the status
    line holds `status`."""
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as sock:
        sock.sendall(request)
        head = sock.recv(200).split(b"\r\n")[0]
    return status in head, head.decode()


def status_of(answer: requests.Response, *wanted: int) -> tuple[bool, str]:
    return answer.status_code in wanted, f"{answer.status_code} {answer.text[:120]}"


# --- 14. serve: the shop's public page ---------------------------------------------------------


@case("14a serve: a foreign Host header (DNS rebinding)")
def _() -> tuple[bool, str]:
    return status_of(requests.get(f"{serve()}/health", headers={"Host": "attacker.example"}, timeout=30), 400)


@case("14b serve: a 30000 x 1 PNG of a hundred bytes")
def _() -> tuple[bool, str]:
    started = time.monotonic()
    answer = requests.post(f"{serve()}/api/find", data=png("thin.png", (30_000, 1)), timeout=60)
    ok, said = status_of(answer, 400, 413)
    return ok, f"{said[:80]} in {1000 * (time.monotonic() - started):.0f} ms"


@case("14c serve: six 40-megapixel PNGs at once, memory flat")
def _() -> tuple[bool, str]:
    url, big = serve(), png("40mp.png", (8000, 5000))
    before = rss_mb_of("serve")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: requests.post(f"{url}/api/find", data=big, timeout=120), range(6)))
    after = rss_mb_of("serve")
    ok = all(a.status_code in (400, 413, 503) for a in answers) and after < before + 200
    return ok, f"{sorted({a.status_code for a in answers})}; RSS {before:.0f} -> {after:.0f} MB"


@case("14d serve: a body that declares 3 GB")
def _() -> tuple[bool, str]:
    request = b"POST /api/find HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3000000000\r\n\r\n"
    return answered(serve(), request, b" 413 ")


@case("14e serve: an endless chunked body")
def _() -> tuple[bool, str]:
    def endless() -> object:
        for _ in range(10_000):
            yield b"\0" * 1_000_000

    try:
        answer = requests.post(f"{serve()}/api/find", data=endless(), timeout=120)
    except requests.ConnectionError:  # cut off mid-body, after its 413
        return True, "cut off at the budget"
    return status_of(answer, 413)


@case("14f serve: Content-Length: abc")
def _() -> tuple[bool, str]:
    return answered(serve(), b"POST /api/find HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n", b" 400 ")


@case("14g serve: not an image, and no heap address in the answer")
def _() -> tuple[bool, str]:
    answer = requests.post(f"{serve()}/api/find", data=b"GIF89a but not really" * 10, timeout=60)
    ok, said = status_of(answer, 400)
    return ok and " at 0x" not in answer.text, said


@case("14h serve: a connection that never sends its headers (slowloris)")
def _() -> tuple[bool, str]:
    with socket.create_connection(("127.0.0.1", int(serve().rsplit(":", 1)[1])), timeout=60) as sock:
        sock.sendall(b"POST /api/find HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed = sock.recv(100) == b""
    return closed, f"closed by the server after {time.monotonic() - started:.0f} s"


@case("14i serve: 40 uploads at once past its queue")
def _() -> tuple[bool, str]:
    url, photo = serve(), next((MODEL / "store").rglob("*.jpg")).read_bytes()
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda _: requests.post(f"{url}/api/find", data=photo, timeout=300), range(40)))
    codes = sorted(a.status_code for a in answers)
    busy = [a for a in answers if a.status_code == 503]
    ok = set(codes) <= {200, 503} and busy and all(a.headers.get("Retry-After") for a in busy)
    ok = bool(ok) and requests.post(f"{url}/api/find", data=photo, timeout=300).ok
    return ok, f"{codes.count(200)} answered, {len(busy)} told to come back (503, Retry-After)"


# --- 15. ml-backend: Label Studio's, and nobody else's ------------------------------------------


def _backend_case(name: str, body: bytes, wanted: int, login: bool = True, path: str = "/predict") -> None:
    @case(name)
    def _() -> tuple[bool, str]:
        url, auth = backend()
        answer = requests.post(f"{url}{path}", data=body, auth=auth if login else None, timeout=120)
        return status_of(answer, wanted)


_backend_case("15a ml-backend: /predict without its login", b'{"tasks": []}', 401, login=False)
_backend_case("15b ml-backend: a forged webhook", b'{"action": "ANNOTATION_CREATED", "project": {"id": 1}}', 401,
              login=False, path="/webhook")  # fmt: skip
_backend_case("15c ml-backend: not JSON", b"not json", 400)
_backend_case("15d ml-backend: bytes that are not UTF-8", b"\xff\xfe{}", 400)
_backend_case("15e ml-backend: JSON nested 200,000 deep", b"[" * 200_000 + b"]" * 200_000, 400)
_backend_case("15f ml-backend: tasks that are not a list", b'{"tasks": "all"}', 400)
_backend_case("15g ml-backend: a task that is not an object", b'{"tasks": [1]}', 400)
_backend_case("15h ml-backend: 2,000 tasks in one call", json.dumps({"tasks": [{"data": {}}] * 2000}).encode(), 413)


@case("15i ml-backend: a wrong login")
def _() -> tuple[bool, str]:
    url, (user, _) = backend()
    return status_of(requests.post(f"{url}/predict", json={"tasks": []}, auth=(user, "guess"), timeout=30), 401)


@case("15j ml-backend: a foreign Host header")
def _() -> tuple[bool, str]:
    url, auth = backend()
    answer = requests.post(
        f"{url}/predict", json={"tasks": []}, auth=auth, headers={"Host": "evil.example"}, timeout=30
    )
    return status_of(answer, 400)


@case("15k ml-backend: a body of 205 MB")
def _() -> tuple[bool, str]:
    url, auth = backend()
    request = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {basic_header(':'.join(auth))}\r\n"
               "Content-Length: 205000000\r\n\r\n")  # fmt: skip
    return answered(url, request.encode(), b" 413 ")


# --- 16. The Prefect server `up` runs ----------------------------------------------------------


@case("16a Prefect: an API call without its login")
def _() -> tuple[bool, str]:
    url, _ = prefect()
    return status_of(requests.post(f"{url}/api/deployments/filter", json={}, timeout=30), 401)


@case("16b Prefect: a foreign Host header")
def _() -> tuple[bool, str]:
    url, auth = prefect()
    answer = requests.post(f"{url}/api/deployments/filter", json={}, auth=auth, headers={"Host": "evil.example"},
                           timeout=30)  # fmt: skip
    return status_of(answer, 400)


@case("16c Prefect: a cross-origin call from a page")
def _() -> tuple[bool, str]:
    url, _ = prefect()
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    allowed = requests.options(f"{url}/api/deployments/filter", headers=preflight, timeout=30)
    origin = allowed.headers.get("access-control-allow-origin")
    return origin not in ("*", "http://evil.example"), f"allowed origin: {origin}"


# --- 17. A crawl of a hostile shop (tests/benchmarks/_hostile_shop.py) --------------------------

_crawled: dict[str, object] = {}


def hostile_crawl() -> dict[str, object]:
    """One crawl of the hostile shop through the command; what each case reads of it."""
    if not _crawled:
        with hostile_shop() as host:
            url, data = f"http://{host}", ROOT / "hostile-crawl"
            settings = {"shop_url": url, "ranking_url": url, "image_hosts": [host], "categories": [1, 2],
                        "top_n": 20, "catalog_photos": False, "backoff_s": 0.05, "api_rate": 100.0,
                        "image_rate": 100.0, "total_timeout_s": 3.0, "retries": 2}  # fmt: skip
            (ROOT / "hostile.json").write_text(json.dumps(settings))
            run = cli("crawl", "--data-dir", str(data), "--config", str(ROOT / "hostile.json"), timeout=300)
        with sqlite3.connect(data / "manifest.sqlite") as db:
            _crawled["products"] = [r[0] for r in db.execute("SELECT product_id FROM products ORDER BY 1")]
            _crawled["reviews"] = sorted(r[0] for r in db.execute("SELECT review_id FROM sources"))
            _crawled["bad"] = [r[0] for r in db.execute("SELECT reason FROM bad_items")]
        _crawled["run"], _crawled["asked"] = run, dict(asked)
    return _crawled


def _crawl_case(name: str, product: str, said: str) -> None:
    @case(name)
    def _() -> tuple[bool, str]:
        c = hostile_crawl()
        run = c["run"]
        assert isinstance(run, subprocess.CompletedProcess)
        went_on = "20" in c["products"]  # type: ignore[operator]  # the category after the hostile one
        named = said in run.stderr + run.stdout + " ".join(c["bad"])  # type: ignore[arg-type]
        clean = "Traceback" not in run.stderr
        return went_on and named and clean, f"product {product}: {said!r} named, the crawl went on: {went_on}"


_crawl_case('17a crawl: a review_count of "abc" in a ranking', "11", "review_count")
_crawl_case("17b crawl: a review whose card is a string", "10", "card.image_url")
_crawl_case("17c crawl: JSON nested 200,000 deep", "12", "nested too deep")
_crawl_case("17d crawl: Content-Length: abc", "13", "Content-Length that is no length")
_crawl_case("17e crawl: a 503 with Retry-After: ²", "14", "503")
_crawl_case("17f crawl: a page sent a byte every half second", "15", "not whole after 3s")
_crawl_case("17g crawl: a 6 MB page", "16", "too large")
_crawl_case("17j crawl: headers sent a byte every half second", "17", "no whole headers after 3s")


@case("17h crawl: a product listed twice is read once")
def _() -> tuple[bool, str]:
    c = hostile_crawl()
    reads = c["asked"].get("10")  # type: ignore[attr-defined]
    return reads == 1 and "101" not in c["reviews"] and "100" in c["reviews"], f"its reviews read {reads} times"  # type: ignore[operator]


@case("17i crawl: an answer too large is fetched once, not once per retry")
def _() -> tuple[bool, str]:
    reads = hostile_crawl()["asked"].get("16")  # type: ignore[attr-defined]
    return reads == 1, f"the 6 MB page read {reads} times"


# --- 18. import ------------------------------------------------------------------------------


@case("18a import: a javascript: product link")
def _() -> tuple[bool, str]:
    photo = next((MODEL / "store").rglob("*.jpg"))
    listing = ROOT / "links.csv"
    listing.write_text(f"path,product,url\n{photo},lamp,javascript:alert(document.cookie)\n")
    return refused(cli("import", str(listing), "--data-dir", str(ROOT / "imported")), "is not an http(s) address")


@case("18b import: a FIFO among the photos of a CSV")
def _() -> tuple[bool, str]:
    folder = ROOT / "fifo-collection"
    folder.mkdir()
    os.mkfifo(folder / "0.jpg")
    photo = next((MODEL / "store").rglob("*.jpg"))
    (folder / "list.csv").write_text(f"path,product\n0.jpg,lamp\n{photo},lamp\n")
    run = cli("import", str(folder / "list.csv"), "--data-dir", str(ROOT / "imported-fifo"), timeout=120)
    said = (run.stdout + run.stderr).strip()
    return "Traceback" not in said and "regular file" in said, said.replace("\n", " ")[-160:]


@case("18c import: a photo of 60 MB")
def _() -> tuple[bool, str]:
    folder = ROOT / "big-collection" / "lamp"
    folder.mkdir(parents=True)
    with (folder / "0.jpg").open("wb") as f:
        f.truncate(60_000_000)
    run = cli("import", str(folder.parent), "--data-dir", str(ROOT / "imported-big"), timeout=120)
    said = (run.stdout + run.stderr).strip()
    return "Traceback" not in said and "at most 50,000,000" in said, said.splitlines()[-1][:160] if said else ""
