"""`reviewlens serve` under load on loopback: 50 clients sending 500 real photos, then the same
with a tenth of the uploads hostile (a 30000 x 1 PNG, a 40-megapixel PNG, bytes that are no image,
a body that claims 3 GB). The goal: the real photos' p99 within 1.5x of the clean run's, and the
server's memory after the run within 1.2x of before it.

    .venv/bin/python -m tests.benchmarks.serve_load
"""

from __future__ import annotations

import requests

from tests.benchmarks._load import Send, big_png, clean_beside_hostile, load_parser, shop_in_production, thin_png
from tests.benchmarks._shop import workdir


def main() -> None:
    args = load_parser(__doc__).parse_args()
    root = workdir("serve-load")
    shop = shop_in_production(root)
    photos = [p.read_bytes() for p in shop.photos]
    thin, big = thin_png(), big_png()

    def uploads(url: str) -> tuple[Send, list[Send]]:
        find = f"{url}/api/find"

        def honest(http: requests.Session, n: int) -> requests.Response:
            return http.post(find, data=photos[n % len(photos)], timeout=600)

        return honest, [
            lambda http, n: http.post(find, data=thin, timeout=600),
            lambda http, n: http.post(find, data=big, timeout=600),
            lambda http, n: http.post(find, data=b"no image at all" * 100, timeout=600),
            lambda http, n: http.post(find, data=b"x", headers={"Content-Length": "3000000000"}, timeout=600),
        ]

    clean_beside_hostile(
        "serve_p99_hostile_over_clean",
        ["serve", "--data-dir", str(shop.layout.data_dir)],
        root / "serve.log",
        lambda url: requests.get(f"{url}/health", timeout=60).ok,
        uploads,
        args.requests,
    )


if __name__ == "__main__":
    main()
