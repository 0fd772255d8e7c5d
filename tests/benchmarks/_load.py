"""What serve_load and ml_backend_load share: a shop with a model in production, a service started
as ops start it, many clients at once, and the service's memory sampled while they ask.

A client that is told 503 comes back after the Retry-After it was given, as a browser's script or
Label Studio's retry would; its latency runs from its first try to its answer.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from PIL import Image

from core import queries as q
from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.photos import store_name
from core.settings import TrainConfig
from demo.shop.generate import GeneratorConfig
from tests.benchmarks._photos import shop_snapshot
from tests.benchmarks._smoke import parser, sized, train_settings
from tests.conftest import free_port
from training.evaluate import promote
from training.train import train_snapshot

Send = Callable[[requests.Session, int], requests.Response]


@dataclass
class Shop:
    layout: Layout
    model: Path
    photos: list[Path]
    shas: list[str]


def shop_in_production(root: Path) -> Shop:
    """The demo shop's photos in a manifest, a quick model trained on them and promoted."""
    config = GeneratorConfig(seed=5, n_categories=2, products_per_category=3, photos_per_product=sized(20, 6))
    snapshot, layout = shop_snapshot(root, config)
    run_dir = train_snapshot(snapshot, TrainConfig(**train_settings(mode="quick")), layout)
    promote(run_dir, layout)
    # The store as a crawl leaves it, each photo under its hash: the services read no other path.
    shop_dir = layout.store_dir.resolve()
    layout.store_dir.unlink()
    photos = []
    with open_manifest(layout, create=True) as manifest:
        for example in snapshot.examples:
            name = store_name(example.sha256, "jpg")
            (layout.store_dir / name).parent.mkdir(parents=True, exist_ok=True)
            photos.append(Path(shutil.copy(shop_dir / example.path, layout.store_dir / name)))
            with Image.open(photos[-1]) as image:
                width, height = image.size
            manifest.write(q.INSERT_PHOTO, example.sha256, name, "JPEG", width, height,
                           photos[-1].stat().st_size, utc_now())  # fmt: skip
    return Shop(layout, run_dir, photos, [e.sha256 for e in snapshot.examples])


@contextmanager
def service(
    command: list[str], log: Path, env: dict[str, str] | None = None, module: str = "reviewlens.cli"
) -> Iterator[tuple[str, int]]:
    """`python -m <module> <command> --port P` until the block ends; yields its URL and pid once it listens."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, *command, "--port", str(port)],
                                stdout=out, stderr=out, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"{module} {' '.join(command)} ended: {log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # the honest requests', seconds
    errors: int = 0  # honest requests not answered 200
    refused: int = 0  # hostile requests answered 4xx, as they should be
    not_refused: int = 0  # hostile requests answered anything else
    peak_mb: float = 0.0
    before_mb: float = 0.0
    after_mb: float = 0.0

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def line(self, name: str) -> str:
        return (f"{name}: {len(self.latencies)} answered, p50 {statistics.median(self.latencies):.2f} s, "
                f"p99 {self.pct(99):.2f} s, {self.errors} errors; hostile {self.refused} refused, "
                f"{self.not_refused} not; RSS {self.before_mb:.0f} MB before, peak {self.peak_mb:.0f}, "
                f"after {self.after_mb:.0f}")  # fmt: skip


def load(pid: int, clients: int, total: int, honest: Send, hostile: list[Send], hostile_share: float) -> Run:
    """`total` requests from `clients` threads; every (1 / hostile_share)-th is hostile, of each kind in turn."""
    run, lock, done = Run(before_mb=rss_mb(pid)), threading.Lock(), threading.Event()
    every = round(1 / hostile_share) if hostile_share else 0
    plan = [hostile[(n // every) % len(hostile)] if every and n % every == every - 1 else None for n in range(total)]

    def sample() -> None:
        while not done.is_set():
            run.peak_mb = max(run.peak_mb, rss_mb(pid))
            time.sleep(0.1)

    def one(n: int) -> None:
        with requests.Session() as http:
            bad = plan[n]
            started = time.monotonic()
            while True:
                answer = (bad or honest)(http, n)
                if answer.status_code != 503 or bad is not None:
                    break
                time.sleep(float(answer.headers.get("Retry-After", "1")))
            with lock:
                if bad is not None:
                    run.refused += 400 <= answer.status_code < 500 or answer.status_code == 503
                    run.not_refused += not (400 <= answer.status_code < 500 or answer.status_code == 503)
                elif answer.status_code == 200:
                    run.latencies.append(time.monotonic() - started)
                else:
                    run.errors += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(total)))
    done.set()
    sampler.join()
    time.sleep(1.0)  # what a finished request still holds is let go
    run.after_mb = rss_mb(pid)
    return run


def clean_beside_hostile(
    figure: str,
    command: list[str],
    log: Path,
    ready: Callable[[str], bool],
    requests_of: Callable[[str], tuple[Send, list[Send]]],
    total: int,
) -> None:
    """Starts the service, then runs `total` requests clean and `total` with a tenth hostile, one
    after the other; prints both, the memory ratio, and `figure`: the honest requests' p99
    hostile over clean."""
    clients, total = sized(50, 4), sized(total, 16)
    with service([*command, "--queue", str(clients)], log) as (url, pid):
        while not ready(url):  # the model loads after the port opens
            time.sleep(0.5)
        honest, hostile = requests_of(url)
        honest(requests.Session(), 0)  # the model loaded and torch's kernels set up before the clock
        clean = load(pid, clients, total, honest, hostile, 0.0)
        print(clean.line("clean"), flush=True)
        mixed = load(pid, clients, total, honest, hostile, 0.1)
        print(mixed.line("10% hostile"), flush=True)
    print(f"RSS after the hostile run / before it: {mixed.after_mb / mixed.before_mb:.2f} (goal <= 1.2)")
    print(f"errors: {clean.errors + mixed.errors}; hostile answered other than 4xx/503: {mixed.not_refused}")
    print(f"{figure}: {mixed.pct(99) / clean.pct(99):.2f}")


def load_parser(description: str | None) -> argparse.ArgumentParser:
    made = parser(description)
    made.add_argument("--requests", type=int, default=500, help="requests in each run (default: 500)")
    return made


def thin_png() -> bytes:
    return _png((30_000, 1))


def big_png() -> bytes:
    return _png((8000, 5000))


def _png(size: tuple[int, int]) -> bytes:
    import io

    out = io.BytesIO()
    Image.new("1", size).save(out, "PNG", optimize=True)
    return out.getvalue()
