"""`reviewlens serve` under load on loopback: 50 clients sending 500 real photos, then the same
with a tenth of the uploads hostile (a 30000 x 1 PNG, a 40-megapixel PNG, bytes that are no image,
a body that claims 3 GB). The goal: the real photos' p99 within 1.5x of the clean run's, and the
server's memory after the run within 1.2x of before it.

    .venv/bin/python -m tests.benchmarks.serve_load
"""

from __future__ import annotations

import requests

from tests.benchmarks._load import big_png, load, service, shop_in_production, thin_png
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser, sized


def main() -> None:
    parser(__doc__).parse_args()
    root = workdir("serve-load")
    shop = shop_in_production(root)
    clients, total = sized(50, 4), sized(500, 16)
    photos = [p.read_bytes() for p in shop.photos]
    thin, big = thin_png(), big_png()
    command = ["serve", "--data-dir", str(shop.layout.data_dir), "--queue", str(clients)]
    with service(command, root / "serve.log") as (url, pid):
        find = f"{url}/api/find"
        while not requests.get(f"{url}/health", timeout=60).ok:
            pass

        def honest(http: requests.Session, n: int) -> requests.Response:
            return http.post(find, data=photos[n % len(photos)], timeout=600)

        hostile = [
            lambda http, n: http.post(find, data=thin, timeout=600),
            lambda http, n: http.post(find, data=big, timeout=600),
            lambda http, n: http.post(find, data=b"no image at all" * 100, timeout=600),
            lambda http, n: http.post(find, data=b"x", headers={"Content-Length": "3000000000"}, timeout=600),
        ]
        honest(requests.Session(), 0)  # torch's kernels set up before the clock
        clean = load(pid, clients, total, honest, hostile, 0.0)
        print(clean.line("clean"), flush=True)
        mixed = load(pid, clients, total, honest, hostile, 0.1)
        print(mixed.line("10% hostile"), flush=True)
    print(f"RSS after the hostile run / before it: {mixed.after_mb / mixed.before_mb:.2f} (goal <= 1.2)")
    print(f"errors: {clean.errors + mixed.errors}; hostile answered other than 4xx/503: {mixed.not_refused}")
    print(f"serve_p99_hostile_over_clean: {mixed.pct(99) / clean.pct(99):.2f}")


if __name__ == "__main__":
    main()
