"""Seconds from an answer saved in Label Studio to its decision in the manifest, through the
whole event path, against the scheduled pull it replaces (goal: at most 10 s; the schedule's
pull every 600 s leaves a decision out for 300 s on average and up to 600 s).

The path, every part real and local: Label Studio's webhook (made when the ML backend is
connected) posts to `reviewlens ml-backend`, which emits the Prefect event
"label-studio.annotation.saved"; the label-pull deployment's trigger (prefect.yaml, deployed with
`prefect deploy --all` on a `prefect server start` of its own) creates a pull; a process worker
runs it, which writes the decision. Answers are given through the API, one at a time, as the
demo's scripted annotator gives them, each once the pull of the one before has finished; the
first one also starts the worker's first flow run and is reported apart.

    .venv/bin/python -m tests.benchmarks.event_latency [--answers 8]
"""

from __future__ import annotations

import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path

import requests

from core.layout import Layout
from core.manifest import open_manifest
from core.settings import DedupeConfig, LabelConfig
from crawler.crawl import crawl
from curation.dedupe.grouping import dedupe
from curation.labeling.client import LabelStudioClient, connect
from curation.labeling.sync import connect_backend, push
from demo.shop.annotator import answer, photo_id
from demo.shop.generate import GeneratorConfig, PhotoTruth, generate, load_truth
from demo.shop.server import DemoShop
from tests.benchmarks._shop import crawl_config, local_label_studio, workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized
from tests.procs import PREFECT, ROOT, ml_backend, prefect_server

SCHEDULED_PULL_S = 600  # prefect.yaml's label-pull interval: the fallback when no event arrives
FAST = {"backoff_s": 0.01, "api_rate": 200.0, "image_rate": 500.0}


def prefect_api(method: str, url: str, body: object) -> requests.Response:
    """One call of the Prefect server's API, asked again while it answers 503 or 429, as Prefect's
    own client does: its SQLite database answers 503 while another writer holds it."""
    for attempt in range(8):
        answer = requests.request(method, url, json=body, timeout=10)
        if answer.status_code not in (429, 503):
            break
        time.sleep(float(answer.headers.get("Retry-After") or 0.5 * 2**attempt))
    answer.raise_for_status()
    return answer


def decided(layout: Layout, sha256: str) -> bool:
    with open_manifest(layout) as m:
        row = m.conn.execute("SELECT decision FROM labels WHERE sha256 = ?", (sha256,)).fetchone()
    return row is not None and row[0] is not None


def pulls_in_flight(api: str) -> int:
    """Flow runs not finished yet (scheduled, pending, running, or waiting for the concurrency slot)."""
    states = {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING"]}}}
    return len(prefect_api("POST", f"{api}/flow_runs/filter", {"flow_runs": states}).json())


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def latest_pull(api: str) -> dict[str, float]:
    """Where the last flow run's time went: created, started (its engine running) and ended, as Unix times."""
    runs = prefect_api("POST", f"{api}/flow_runs/filter", {"sort": "EXPECTED_START_TIME_DESC", "limit": 1})
    run = runs.json()[0]
    return {"created": stamp(run["created"]), "started": stamp(run["start_time"]), "ended": stamp(run["end_time"])}


def timed_answers(
    client: LabelStudioClient, project: int, layout: Layout, truth: dict[str, PhotoTruth], n: int, api: str, root: Path
) -> list[float]:
    """Answers n + 1 open tasks one at a time; the seconds each took to become a decision."""
    seconds = []
    for task_id, data in list(client.unannotated(project))[: n + 1]:
        client.annotate(task_id, answer(truth[photo_id(data)]))
        saved, saved_at = time.monotonic(), time.time()
        while not decided(layout, data["sha256"]):
            if time.monotonic() - saved > 300:
                raise SystemExit(f"no decision 300 s after the answer: see {root}/worker.log")
            time.sleep(0.1)
        seconds.append(time.monotonic() - saved)
        # The next answer comes once the pull has finished: each is timed alone.
        while pulls_in_flight(api):
            time.sleep(0.2)
        run = latest_pull(api)
        print(
            f"task {task_id}: decision in the manifest {seconds[-1]:.1f} s after the answer "
            f"(flow run created after {run['created'] - saved_at:.1f} s, "
            f"running {run['started'] - run['created']:.1f} s later, ended {run['ended'] - run['started']:.1f} s on)",
            flush=True,
        )
    return seconds


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--answers", type=int, default=sized(8, 1), help="answers timed after the first")
    args = parser.parse_args()
    root = workdir("event-latency")
    shop_dir = generate(GeneratorConfig(seed=5, n_categories=1, products_per_category=3, photos_per_product=12),
                        root / "shop")  # fmt: skip
    layout = Layout(root / "data")
    server, _ = local_label_studio(root)
    try:
        with DemoShop(shop_dir) as shop:
            crawl(crawl_config(shop, **FAST), layout)
        dedupe(DedupeConfig(), layout)
        label = LabelConfig()  # the deployment pulls the project its settings name
        client = connect()
        project = push(label, layout, client).project_id
        # Every answer decides its photo alone: a task asked of two is decided by its second answer.
        client.set_overlap(project, 0.0)
        # No scheduled run: every pull measured is one the event started.
        with prefect_server(root / "prefect", PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false") as env:
            api = env["PREFECT_API_URL"]
            deployments = prefect_api("POST", f"{api}/deployments/filter", {}).json()
            pull_id = next(d["id"] for d in deployments if d["name"] == "reviewlens-label-pull")
            prefect_api(
                "PATCH",
                f"{api}/deployments/{pull_id}",
                {"parameters": {"data_dir": str(layout.data_dir), "retrain_after": 0}},
            )
            with ml_backend(layout.data_dir, root / "backend.log", env) as backend:
                connect_backend(label, layout, client, backend)
                # The worker asks for runs every second (its default is 10 s).
                worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
                with (root / "worker.log").open("wb") as log:
                    worker = subprocess.Popen(
                        [PREFECT, "worker", "start", "--pool", "reviewlens"],
                        env=worker_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                    )  # fmt: skip
                try:
                    seconds = timed_answers(client, project, layout, load_truth(shop_dir), args.answers, api, root)
                finally:  # before the server it reports to stops
                    worker.terminate()
                    try:
                        worker.wait(30)
                    except subprocess.TimeoutExpired:  # Prefect's worker may hang on a flow run just ending
                        worker.kill()
                        worker.wait()
    finally:
        server.stop()
    first, timed = seconds[0], seconds[1:]
    print(f"first answer (the worker's first flow run): {first:.1f} s")
    print(
        f"{len(timed)} answers after it: median {statistics.median(timed):.1f} s, max {max(timed):.1f} s; "
        f"the scheduled pull alone: {SCHEDULED_PULL_S / 2:.0f} s on average, up to {SCHEDULED_PULL_S} s "
        f"({SCHEDULED_PULL_S / 2 / statistics.median(timed):.0f}x the median)"
    )
    print(f"event_latency_median_s: {statistics.median(timed):.1f}")


if __name__ == "__main__":
    main()
