"""`reviewlens-demo run`: the pipeline end to end on the demo shop, on this machine, with real servers.

Generates the shop, serves it, starts Label Studio, runs the demo's flow (the pipeline's tasks
with the scripted annotator answering in Label Studio where people would), and says where to look.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from prefect import flow, get_run_logger, task

from core.errors import ReviewlensError
from core.layout import Layout, redacted
from core.progress import duration
from core.settings import CrawlConfig, DedupeConfig, LabelConfig, TrainConfig, from_mapping
from curation.dedupe.contact_sheet import write_contact_sheet
from curation.labeling.client import connect
from curation.labeling.shapes import CHOICE_VIEW, rules_view
from demo.shop.annotator import annotate_all, answer_again, choose_all
from demo.shop.generate import GeneratorConfig, generate
from demo.shop.server import DemoShop, pid_file, serve_in_background
from flows.labeling import label_pull_task, labeling_report_task
from flows.pipeline import PipelineResult, Stopwatch, retrain_flow
from flows.tasks import crawl_task, dedupe_task, label_push_task
from reviewlens.labelstudio_server import LabelStudioServer
from reviewlens.processes import stop_noted

# Fixed ports keep photo URLs, and so the manifest's provenance, the same from run to run.
SHOP_PORT, IMAGE_PORT = 8700, 8701
# The scripted annotators answer as users of their own, so their answers are not taken for a
# person's; the second answers the tasks Label Studio asks two people for (the overlap).
SCRIPTED_ANNOTATOR = "scripted-annotator@reviewlens.local"
SECOND_ANNOTATOR = "scripted-second-annotator@reviewlens.local"
ANNOTATOR_KEY = "REVIEWLENS_ANNOTATOR_API_KEY"  # their tokens; without them, the admin answers
SECOND_ANNOTATOR_KEY = "REVIEWLENS_SECOND_ANNOTATOR_API_KEY"


@task
def scripted_annotator_task(label: LabelConfig, data_dir: str, shop_dir: str) -> int:
    """Answers every open task of both projects from the demo shop's ground truth."""
    client, shop, store = (
        connect(api_key=os.environ.get(ANNOTATOR_KEY)),
        Path(shop_dir),
        Layout(Path(data_dir)).store_dir,
    )
    rules = client.ensure_project(label.project_title, store, rules_view(label.min_coverage))
    answered = annotate_all(client, rules, shop)
    answered += answer_again(connect(api_key=os.environ.get(SECOND_ANNOTATOR_KEY)), rules, shop)
    chosen = choose_all(client, client.ensure_project(label.choice_project_title, store, CHOICE_VIEW), shop)
    get_run_logger().info("scripted annotator answered %d rule tasks and %d product choices", answered, chosen)
    return answered + chosen


@flow(name="demo")
def demo_flow(
    data_dir: str,
    shop_dir: str,
    crawl: CrawlConfig,
    train: TrainConfig | None = None,
    label: LabelConfig | None = None,
    promote: bool = True,
) -> PipelineResult:
    """The pipeline's stages, with the scripted annotator answering after each label push."""
    label = label or LabelConfig()
    watch = Stopwatch()
    with watch.stage("crawl"):
        crawled = crawl_task(crawl, data_dir)
    with watch.stage("dedupe"):
        deduped = dedupe_task(DedupeConfig(), data_dir)
    with watch.stage("label push"):
        pushed = label_push_task(label, data_dir)
    with watch.stage("scripted annotator"):
        scripted_annotator_task(label, data_dir, shop_dir)
    with watch.stage("label pull"):
        pulled = label_pull_task(label, data_dir)
    if pulled.chosen:
        # Photos whose product was just chosen go through the rules in the same run.
        with watch.stage("label push"):
            label_push_task(label, data_dir)
        with watch.stage("scripted annotator"):
            scripted_annotator_task(label, data_dir, shop_dir)
        with watch.stage("label pull"):
            pulled = replace(label_pull_task(label, data_dir), chosen=pulled.chosen)
    with watch.stage("train, evaluate, index"):
        evaluated = retrain_flow(data_dir, train, promote, label)
    with watch.stage("labeling report"):
        labeling_report_task(data_dir)
    return PipelineResult(crawled, deduped, pushed, pulled, evaluated, watch.seconds)


def run_demo(data_dir: Path, port: int = 8080, quick: bool = False) -> PipelineResult:
    """Runs the demo; returns the flow's result."""
    started = time.monotonic()
    data_dir = Path(data_dir).resolve()
    layout = Layout(data_dir)
    shop_config = GeneratorConfig(catalog_photos=True)
    train_config = TrainConfig()
    if quick:
        shop_config = replace(shop_config, n_categories=2, products_per_category=3, photos_per_product=30)
        train_config = replace(train_config, members=("efficientnet_lite0", "efficientnet_lite1"), image_size=128)
    setup = Stopwatch()
    with setup.stage("demo shop generated"):
        print(f"1/3 generating the demo shop in {data_dir / 'demo-shop'}", flush=True)
        stop_shop(data_dir / "demo-shop")  # an earlier demo's shop holds the ports
        shop_dir = generate(shop_config, data_dir / "demo-shop")
    server = LabelStudioServer(data_dir / "label-studio", data_dir, port=port)
    with setup.stage("Label Studio started"):
        print(f"2/3 starting Label Studio at {server.url} (the first start takes a minute)", flush=True)
        creds = server.start()
    os.environ.update(
        {
            "LABEL_STUDIO_URL": server.url,
            "LABEL_STUDIO_API_KEY": creds.token,
            "LOCAL_FILES_DOCUMENT_ROOT": str(data_dir),
            ANNOTATOR_KEY: server.person(SCRIPTED_ANNOTATOR).token,
            SECOND_ANNOTATOR_KEY: server.person(SECOND_ANNOTATOR).token,
        }
    )
    try:
        shop_server = DemoShop(shop_dir, port=SHOP_PORT, image_port=IMAGE_PORT)
    except OSError as exc:  # most often another folder's demo shop, left serving
        raise ReviewlensError(
            f"the demo shop cannot serve on ports {SHOP_PORT} and {IMAGE_PORT} ({exc.strerror}): "
            "another demo's shop may hold them (`make stop DATA=...` in its folder stops it)"
        ) from exc
    with shop_server as shop:
        print(f"3/3 running the pipeline against the demo shop at {shop.url}", flush=True)
        # The demo shop runs on this machine: it can take more than a real shop's default rates.
        crawl = from_mapping(CrawlConfig, {**shop.crawl_settings(), "api_rate": 20.0, "image_rate": 50.0})
        result = demo_flow(str(data_dir), str(shop_dir), crawl, train_config)
        shop_url = shop.url
    # The answers link to the shop's product pages: it goes on serving them until `make stop`.
    serve_in_background(shop_dir, SHOP_PORT, IMAGE_PORT)
    evaluated = result.evaluate
    run_dir = Path(evaluated.run_dir)
    print()
    print(evaluated.table)
    print(f"Report:        {run_dir / 'report.md'} (and report.json, confusion.png)")
    print(f"Model:         {run_dir / 'model.pt'}; promoted: {evaluated.promoted} ({evaluated.gate['reason']})")
    print(f"Manifest:      {redacted(layout.database_url) if layout.database_url else layout.manifest_path}")
    print(f"Contact sheet: {write_contact_sheet(layout)} (duplicate groups and the machine's rule verdicts)")
    print(f"Labeling:      {layout.data_dir / 'reports' / 'labeling.md'} (funnel, machine against people, annotators)")
    print(f"Label Studio:  {result.push.project_url}")
    print(f"  login {creds.username} / {creds.password} (kept in {server.home / 'credentials.json'})")
    print(f"Demo shop:     {shop_url} (its product pages, which the answers link to)")
    print("  Label Studio and the demo shop run until `make stop`.")
    sample = next(iter(sorted((shop_dir / "photos").glob("*.jpg"))))
    print(f"Try:           .venv/bin/reviewlens predict {sample} --data-dir {data_dir}")
    print(f"  or a folder: .venv/bin/reviewlens predict {shop_dir / 'photos'} --data-dir {data_dir}")
    print(f"  as a page:   .venv/bin/reviewlens serve --data-dir {data_dir}  (then open http://127.0.0.1:8900/)")
    print(f"Search index:  {layout.index_dir} (every usable photo of every product; `reviewlens index` adds new ones)")
    times = {**setup.seconds, **result.seconds}
    print(
        "Time:          "
        + ", ".join(f"{stage} {duration(seconds)}" for stage, seconds in times.items())
        + f"; {duration(time.monotonic() - started)} in all"
    )
    return result


def stop_shop(shop_dir: Path) -> bool:
    """Stops the demo shop a demo left serving from `shop_dir`; whether one ran."""
    return stop_noted(pid_file(shop_dir))
