"""The default fault mix at 10% of requests: what ends in the store after a crawl and one re-run.

Figures: photos stored intact / photos the shop really has, corrupt files in the store, and
requests to disallowed paths or foreign hosts (from the shop's own log).

    .venv/bin/python -m tests.benchmarks.crawl_faults
"""

from __future__ import annotations

import collections
import hashlib

from PIL import Image

from core.layout import Layout
from core.manifest import open_manifest
from crawler.crawl import crawl
from crawler.errors import LayoutChanged
from demo.shop.faults import FaultPlan
from demo.shop.generate import load_truth
from demo.shop.server import DemoShop
from tests.benchmarks._shop import crawl_config, make_shop, read_log, workdir
from tests.benchmarks._smoke import parser
from tests.db import count


def intact(path: object, sha: str) -> bool:
    data = path.read_bytes()  # type: ignore[attr-defined]
    if hashlib.sha256(data).hexdigest() != sha:
        return False
    try:
        with Image.open(path) as img:  # type: ignore[call-overload]
            img.load()
    except OSError:
        return False
    return True


def main() -> None:
    parser(__doc__).parse_args()
    root = workdir("crawl-faults")
    shop_dir = make_shop(root)
    plan = FaultPlan.parse("default", 0.10, seed=42, stall_s=3.0, slow_s=0.5, oversize_bytes=3_000_000)
    layout = Layout(root / "crawl")
    with DemoShop(shop_dir, request_log=root / "requests.jsonl", faults=plan) as shop:
        config = crawl_config(shop, api_rate=20.0, image_rate=50.0, read_timeout_s=1.0, max_image_bytes=2_000_000)
        for attempt in ("crawl", "re-run"):
            try:
                print(f"{attempt}: {crawl(config, layout)}")
            except LayoutChanged as exc:
                print(f"{attempt}: finished with layout errors: {str(exc)[:300]}")
        log = read_log(root / "requests.jsonl")
        foreign = sum(1 for r in log if r["host"] == shop.foreign_url)
        disallowed = sum(1 for r in log if str(r["path"]).startswith("/private"))
    faults = collections.Counter(str(r["fault"]) for r in log if r["fault"])
    truth = load_truth(shop_dir)
    with open_manifest(layout) as m:
        rows = m.conn.execute("SELECT sha256, path FROM photos").fetchall()
        failed = count(m, "failures")
    good = sum(intact(layout.store_dir / r["path"], r["sha256"]) for r in rows)
    on_disk = [p for p in layout.store_dir.rglob("*") if p.is_file()]
    print(f"requests: {len(log)}, faulted: {sum(faults.values())} ({dict(sorted(faults.items()))})")
    print(f"photos_in_shop: {len(truth)}; stored: {len(rows)}; still failed: {failed}")
    print(f"corrupt_files_in_store: {len(rows) - good + (len(on_disk) - len(rows))}")
    print(f"requests_to_disallowed_paths_or_hosts: {foreign + disallowed}")
    print(f"photos_intact_ratio: {good / len(truth):.3f}")


if __name__ == "__main__":
    main()
