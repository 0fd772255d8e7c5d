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
from tests.benchmarks._load import load, service, shop_in_production
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import parser, sized


def main() -> None:
    parser(__doc__).parse_args()
    root = workdir("ml-backend-load")
    shop = shop_in_production(root)
    clients, total = sized(50, 4), sized(500, 16)
    auth = split_login(kept_secret(shop.layout.ml_backend_login))
    command = ["ml-backend", "--data-dir", str(shop.layout.data_dir), "--queue", str(clients)]
    with service(command, root / "ml-backend.log") as (url, pid):
        predict = f"{url}/predict"
        while not requests.get(f"{url}/health", auth=auth, timeout=60).ok:
            pass

        def honest(http: requests.Session, n: int) -> requests.Response:
            task = {"id": n, "data": {"sha256": shop.shas[n % len(shop.shas)], "product": "a product"}}
            return http.post(predict, json={"tasks": [task]}, auth=auth, timeout=600)

        many = json.dumps({"tasks": [{"data": {}}] * 2000}).encode()
        deep = b"[" * 200_000 + b"]" * 200_000
        hostile = [
            lambda http, n: http.post(predict, json={"tasks": []}, timeout=600),
            lambda http, n: http.post(predict, data=b"not json", auth=auth, timeout=600),
            lambda http, n: http.post(predict, data=deep, auth=auth, timeout=600),
            lambda http, n: http.post(predict, data=many, auth=auth, timeout=600),
        ]
        honest(requests.Session(), 0)  # the model loaded and torch's kernels set up before the clock
        clean = load(pid, clients, total, honest, hostile, 0.0)
        print(clean.line("clean"), flush=True)
        mixed = load(pid, clients, total, honest, hostile, 0.1)
        print(mixed.line("10% hostile"), flush=True)
    print(f"RSS after the hostile run / before it: {mixed.after_mb / mixed.before_mb:.2f} (goal <= 1.2)")
    print(f"errors: {clean.errors + mixed.errors}; hostile answered other than 4xx/503: {mixed.not_refused}")
    print(f"ml_backend_p99_hostile_over_clean: {mixed.pct(99) / clean.pct(99):.2f}")


if __name__ == "__main__":
    main()
