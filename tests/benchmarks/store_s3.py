"""The photo store on an S3-compatible server (moto's server mode, on loopback) against the local
folder, in one run, on the grocery photos:

- writing: `PhotoStore.put` of every photo by 4 threads (the crawl's image workers) into the
  local folder alone, and into the local folder plus the shared store (the crawl's path: checked,
  uploaded once, kept locally);
- reading: every photo read from the local folder, and fetched from the shared store into an
  empty one (`localise`, as a machine without a copy does before dedupe or training);
- a writer uploading the photos, killed (SIGKILL) mid-run: objects whose bytes do not hash to
  their name afterwards (goal 0).

    .venv/bin/python -m tests.benchmarks.store_s3 [--photos N]
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.layout import Layout
from core.store import SharedStore, localise
from crawler.store import PhotoStore
from tests.benchmarks._grocery import grocery_photos
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized
from tests.procs import ROOT
from tests.s3 import S3Server

WRITERS = 4
KILLED_WRITER = """
import sys
from pathlib import Path
from core.store import SharedStore
from crawler.store import PhotoStore
store = PhotoStore(Path(sys.argv[1]), shared=SharedStore(sys.argv[2], sys.argv[3]))
print("writing", flush=True)
for path in sys.argv[4:]:
    store.put(Path(path).read_bytes())
"""


def _rate(n: int, started: float) -> float:
    return n / (time.monotonic() - started)


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--photos", type=int, default=sized(2000, 40))
    photos = [p.read_bytes() for p in grocery_photos()[: parser.parse_args().photos]]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "reviewlens-bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with tempfile.TemporaryDirectory() as folder, S3Server() as s3:
        root = Path(folder)
        shared_url = f"s3://{s3.bucket()}/store"

        # Four writers at once, as the crawl's image workers put what they fetched.
        started = time.monotonic()
        local = PhotoStore(root / "local")
        with ThreadPoolExecutor(WRITERS) as pool:
            names = [stored.path for stored in pool.map(local.put, photos)]
        local_write = _rate(len(photos), started)

        started = time.monotonic()
        both = PhotoStore(root / "both", shared=SharedStore(shared_url, s3.endpoint))
        with ThreadPoolExecutor(WRITERS) as pool:
            list(pool.map(both.put, photos))
        shared_write = _rate(len(photos), started)

        started = time.monotonic()
        for rel in names:
            (root / "local" / rel).read_bytes()
        local_read = _rate(len(photos), started)

        started = time.monotonic()
        fetched = localise(Layout(root / "machine-b", store_url=shared_url, store_endpoint=s3.endpoint), names)
        shared_read = _rate(fetched, started)
        assert fetched == len(set(names)), (fetched, len(set(names)))

        killed_url = f"s3://{s3.bucket()}/store"
        paths = [str(p) for p in grocery_photos()[: len(photos)]]
        writer = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(root / "killed"), killed_url, s3.endpoint, *paths],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        time.sleep(2.0)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        killed = SharedStore(killed_url, s3.endpoint)
        objects = killed.names()
        partial = sum(hashlib.sha256(killed.get(rel)).hexdigest() != Path(rel).stem for rel in objects)

    print(f"photos: {len(photos)} ({sum(map(len, photos)) / len(photos) / 1000:.0f} kB each on average)")
    print(f"write photos/s: local folder {local_write:.0f}, local folder + S3 {shared_write:.0f}")
    print(f"read photos/s: local folder {local_read:.0f}, from S3 into an empty folder {shared_read:.0f}")
    print(f"writer killed after 2 s: {len(objects)} objects in the bucket, {partial} partial")
    print(f"s3_over_local_write: {shared_write / local_write:.2f}")
    print(f"partial_objects_after_kill: {partial}")


if __name__ == "__main__":
    main()
