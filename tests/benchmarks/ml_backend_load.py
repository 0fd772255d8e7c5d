"""`reviewlens ml-backend` under load on loopback: 50 clients asking /predict 500 times, each
for one task of a real photo with the model in production, then the same with a tenth of the
calls hostile (no login, JSON that is none, JSON nested 200,000 deep, 2,000 tasks in one call).
The goal: the real calls' p99 within 1.5x of the clean run's, and the backend's memory after the
run within 1.2x of before it.

    .venv/bin/python -m tests.benchmarks.ml_backend_load
"""

from __future__ import annotations

import json

import requests

from core.kept_secret import kept_secret, split_login
from tests.benchmarks._load import Send, clean_beside_hostile, load_parser, shop_in_production
from tests.benchmarks._shop import workdir


def main() -> None:
    args = load_parser(__doc__).parse_args()
    root = workdir("ml-backend-load")
    shop = shop_in_production(root)
    auth = split_login(kept_secret(shop.layout.ml_backend_login))
    many = json.dumps({"tasks": [{"data": {}}] * 2000}).encode()
    deep = b"[" * 200_000 + b"]" * 200_000

    def calls(url: str) -> tuple[Send, list[Send]]:
        predict = f"{url}/predict"

        def honest(http: requests.Session, n: int) -> requests.Response:
            task = {"id": n, "data": {"sha256": shop.shas[n % len(shop.shas)], "product": "a product"}}
            return http.post(predict, json={"tasks": [task]}, auth=auth, timeout=600)

        return honest, [
            lambda http, n: http.post(predict, json={"tasks": []}, timeout=600),
            lambda http, n: http.post(predict, data=b"not json", auth=auth, timeout=600),
            lambda http, n: http.post(predict, data=deep, auth=auth, timeout=600),
            lambda http, n: http.post(predict, data=many, auth=auth, timeout=600),
        ]

    clean_beside_hostile(
        "ml_backend_p99_hostile_over_clean",
        ["ml-backend", "--data-dir", str(shop.layout.data_dir)],
        root / "ml-backend.log",
        lambda url: requests.get(f"{url}/health", auth=auth, timeout=60).ok,
        calls,
        args.requests,
    )


if __name__ == "__main__":
    main()
