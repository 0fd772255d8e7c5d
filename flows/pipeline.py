"""The flows: one per stage, a retrain, and the pipeline chaining them (label pull and its
retrain trigger live in flows/labeling.py, which loads no training).

Each flow takes the data folder and, per stage, its typed settings (core/settings.py); Prefect
validates them, rejecting unknown keys, and prefect.yaml mirrors them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow

from core.layout import Layout
from core.settings import CrawlConfig, DedupeConfig, LabelConfig, TrainConfig
from crawler.collection import ImportSummary
from crawler.crawl import CrawlSummary
from crawler.crawl import crawl as crawl_stage
from curation.dedupe.grouping import DedupeSummary
from curation.dedupe.grouping import dedupe as dedupe_stage
from curation.labeling.pull import PullSummary
from curation.labeling.sync import PushSummary
from flows.dask import (
    cluster_downloads,
    cluster_embedder,
    cluster_extractor,
    cluster_hasher,
    dask_address,
    task_runner,
)
from flows.labeling import DATA_DIR, label_pull_task, labeling_report_task
from flows.tasks import (
    Evaluation,
    Untrained,
    crawl_task,
    dedupe_task,
    evaluate_task,
    import_task,
    index_task,
    label_push_task,
    predict_again_task,
    train_or_why,
    train_task,
)
from search.indexing import IndexSummary, update_index
from training.bundle import Ensemble
from training.runs import serving_model


@flow(name="crawl", task_runner=task_runner())
def crawl_flow(data_dir: str = DATA_DIR, crawl: CrawlConfig | None = None) -> CrawlSummary:
    if dask_address():  # the photos downloaded by the cluster, the pages read and recorded here
        with cluster_downloads() as (cluster, processes):
            return crawl_stage(crawl or CrawlConfig(), Layout(Path(data_dir)), cluster, processes)
    return crawl_task(crawl or CrawlConfig(), data_dir)


@flow(name="dedupe", task_runner=task_runner())
def dedupe_flow(data_dir: str = DATA_DIR, dedupe: DedupeConfig | None = None) -> DedupeSummary:
    if dask_address():  # the hashing as tasks on the cluster, the grouping here
        return dedupe_stage(dedupe or DedupeConfig(), Layout(Path(data_dir)), cluster_hasher(Layout(Path(data_dir))))
    return dedupe_task(dedupe or DedupeConfig(), data_dir)


@flow(name="import")
def import_flow(
    source: str, data_dir: str = DATA_DIR, shop: str = "import", dedupe: DedupeConfig | None = None
) -> ImportSummary:
    """An existing collection in (a folder of product folders, or a CSV), then dedupe."""
    imported = import_task(source, data_dir, shop)
    dedupe_task(dedupe or DedupeConfig(), data_dir)
    return imported


@flow(name="label-push")
def label_push_flow(data_dir: str = DATA_DIR, label: LabelConfig | None = None) -> PushSummary:
    return label_push_task(label or LabelConfig(), data_dir)


@flow(name="retrain", task_runner=task_runner())
def retrain_flow(
    data_dir: str = DATA_DIR, train: TrainConfig | None = None, promote: bool = True, label: LabelConfig | None = None
) -> Evaluation:
    """Trains on the accepted photos, evaluates, and promotes the model if it passes the gate;
    a promoted model's index is built at once, so search answers with the model that is live,
    and the open labeling tasks are answered again by it. When the production model was made
    from the same photos and settings, or too few photos are accepted yet, it says so and trains
    nothing (`train.force` trains the same photos again)."""
    if dask_address():  # each member's features extracted by tasks on the cluster, the training here
        run_dir = train_or_why(train or TrainConfig(), Layout(Path(data_dir)), cluster_extractor())
    else:
        run_dir = train_task(train or TrainConfig(), data_dir)
    if isinstance(run_dir, Untrained):  # said in the log; nothing to evaluate or promote
        return Evaluation.untrained(run_dir, data_dir)
    evaluation = evaluate_task(run_dir, data_dir, promote)
    if evaluation.promoted:
        index_task(data_dir)
        predict_again_task(label or LabelConfig(), data_dir)
    return evaluation


@flow(name="index", task_runner=task_runner())
def index_flow(data_dir: str = DATA_DIR) -> IndexSummary:
    """Every usable photo of every product into the serving model's index (production's, else the
    newest run's, else the pretrained bodies'): no retrain."""
    layout = Layout(Path(data_dir))
    model = serving_model(layout)
    if dask_address() and model is not None:  # embedded by tasks on the cluster, kept here
        return update_index(layout, Ensemble.load(model), embed=cluster_embedder(layout, model))
    return index_task(data_dir)


@dataclass(frozen=True)
class PipelineResult:
    crawl: CrawlSummary
    dedupe: DedupeSummary
    push: PushSummary
    pull: PullSummary
    evaluate: Evaluation
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage, in order


class Stopwatch:
    """The wall time of each stage of a run; a stage run twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - started


@flow(name="pipeline")
def pipeline_flow(
    data_dir: str = DATA_DIR,
    crawl: CrawlConfig | None = None,
    dedupe: DedupeConfig | None = None,
    label: LabelConfig | None = None,
    train: TrainConfig | None = None,
    promote: bool = True,
) -> PipelineResult:
    """Crawl, dedupe, label push, label pull, train on what people accepted, evaluate.

    People answer in Label Studio at their own pace: this run trains on the decisions made so
    far, and photos whose product a person just chose go out as rule tasks in the same run.
    """
    label = label or LabelConfig()
    watch = Stopwatch()
    with watch.stage("crawl"):
        crawled = crawl_task(crawl or CrawlConfig(), data_dir)
    with watch.stage("dedupe"):
        deduped = dedupe_task(dedupe or DedupeConfig(), data_dir)
    with watch.stage("label push"):
        pushed = label_push_task(label, data_dir)
    with watch.stage("label pull"):
        pulled = label_pull_task(label, data_dir)
    if pulled.chosen:
        with watch.stage("label push"):
            label_push_task(label, data_dir)
    with watch.stage("train, evaluate, index"):
        evaluated = retrain_flow(data_dir, train, promote, label)
    with watch.stage("labeling report"):
        labeling_report_task(data_dir)
    return PipelineResult(crawled, deduped, pushed, pulled, evaluated, watch.seconds)
