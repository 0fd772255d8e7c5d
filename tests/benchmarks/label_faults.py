"""Label Studio killed (SIGKILL) during a push of about 2,000 photos and during the pull of their
answers, then each run once more: tasks in Label Studio per photo pushed (goal exactly 1.0) and
decisions lost (goal 0).

A demo shop is generated, crawled and deduplicated; a real Label Studio of its own starts in a
temporary folder. A proxy in front of it (tests/killer_proxy.py) kills it at the middle request
of the push's task imports, and at the second page of the pull's reading of answers. Every task
is answered between the two, by the demo's scripted annotator through the API.

    .venv/bin/python -m tests.benchmarks.label_faults [--photos-per-product 200]
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable

from core.layout import Layout
from core.manifest import open_manifest
from core.settings import DedupeConfig, LabelConfig
from crawler.crawl import crawl
from curation.dedupe.grouping import dedupe
from curation.labeling.client import IMPORT_BATCH, LabelStudioError, connect
from curation.labeling.pull import pull
from curation.labeling.rules import decide
from curation.labeling.shapes import rules_view
from curation.labeling.sync import push
from demo.shop.annotator import answer, photo_id
from demo.shop.generate import GeneratorConfig, generate, load_truth
from demo.shop.server import DemoShop
from reviewlens.labelstudio_server import LabelStudioServer
from tests.benchmarks._shop import crawl_config, local_label_studio, workdir
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized
from tests.killer_proxy import killer_proxy, nth

FAST = {"backoff_s": 0.01, "api_rate": 200.0, "image_rate": 500.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def killed_during(
    server: LabelStudioServer, cut: Callable[[str, str, int], bool], step: Callable[[str], object]
) -> bool:
    """Runs `step` through a proxy that kills the server at `cut`; whether it stopped with the server dead."""
    with killer_proxy(server, cut) as url:
        try:
            step(url)
        except LabelStudioError as exc:
            print(f"stopped: {exc}")
            return not server.answers()
    return False


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--photos-per-product", type=int, default=sized(200, 6))
    args = parser.parse_args()
    root = workdir("label-faults")
    per_category = sized(5, 2)
    shop = GeneratorConfig(
        seed=3, n_categories=2, products_per_category=per_category, photos_per_product=args.photos_per_product
    )
    shop_dir = generate(shop, root / "shop")
    layout = Layout(root / "data")
    server, creds = local_label_studio(root)
    try:
        with DemoShop(shop_dir) as shop:
            crawl(crawl_config(shop, **FAST), layout)
        dedupe(DedupeConfig(), layout)
        label = LabelConfig(project_title="label faults", overlap=0.0)  # one annotator answers
        direct = connect()
        project = direct.ensure_project(label.project_title, layout.store_dir, rules_view(0.5))

        started = time.monotonic()
        with open_manifest(layout) as m:
            photos = m.conn.execute("SELECT COUNT(*) FROM usable_photos").fetchone()[0]
        middle = max(1, math.ceil(photos / IMPORT_BATCH) // 2)
        cut = nth(middle, "POST", f"/api/projects/{project}/import")
        killed = killed_during(server, cut, lambda url: push(label, layout, connect(url, creds.token)))
        server.start()
        before = len(direct.task_ids_by_key(project, "sha256"))
        summary = push(label, layout, connect())
        push_seconds = time.monotonic() - started
        listed = direct.tasks(project)
        keys = direct.task_ids_by_key(project, "sha256")
        with open_manifest(layout) as m:
            noted = dict(m.conn.execute("SELECT sha256, task_id FROM labels WHERE project_id = ?", (project,)))
        print(
            f"push killed at import request {middle} (server dead: {killed}) with {before} tasks in; "
            f"the re-run pushed {summary.pushed}; {len(listed)} tasks for {len(noted)} photos pushed "
            f"({len(keys)} distinct photos in Label Studio, the manifest names each task: {noted == keys}); "
            f"{push_seconds:.0f} s in all"
        )

        truth = load_truth(shop_dir)
        started = time.monotonic()
        answered = {}
        for task_id, data in list(direct.unannotated(project)):
            result = answer(truth[photo_id(data)])
            direct.annotate(task_id, result)
            answered[task_id] = decide(result, False, label.min_coverage).decision
        print(f"{len(answered)} tasks answered through the API in {time.monotonic() - started:.0f} s")

        started = time.monotonic()
        cut = nth(2, "GET", "/api/tasks", project=str(project), only_annotated="true")
        pull_killed = killed_during(server, cut, lambda url: pull(label, layout, connect(url, creds.token)))
        server.start()
        again = pull(label, layout, connect())
        with open_manifest(layout) as m:
            decided = dict(m.conn.execute("SELECT task_id, decision FROM labels WHERE decision IS NOT NULL"))
        lost = sum(1 for t in answered if t not in decided)
        wrong = sum(1 for t, d in answered.items() if t in decided and decided[t] != d)
        print(
            f"pull killed at the second page of answers (server dead: {pull_killed}); the re-run recorded "
            f"{again.decided} decisions in {time.monotonic() - started:.0f} s; lost {lost}, different {wrong}"
        )
        print(f"decisions lost: {lost}")
        print(f"label_faults_tasks_per_photo: {len(listed) / len(noted):.3f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
