"""The flows: one per stage, a retrain, label pull's retrain trigger, and the pipeline chaining them.

Each flow takes the data folder and, per stage, its typed settings (core/settings.py); Prefect
validates them, rejecting unknown keys, and prefect.yaml mirrors them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.runtime import deployment

from core.layout import DEFAULT_DATA_DIR, Layout
from core.settings import CrawlConfig, DedupeConfig, LabelConfig, TrainConfig
from crawler.collection import ImportSummary
from crawler.crawl import CrawlSummary
from curation.dedupe.grouping import DedupeSummary
from curation.labeling.sync import PullSummary, PushSummary
from flows.tasks import (
    Evaluation,
    crawl_task,
    dedupe_task,
    evaluate_task,
    import_task,
    index_task,
    label_pull_task,
    label_push_task,
    labeling_report_task,
    predict_again_task,
    train_task,
)
from training.indexing import IndexSummary
from training.runs import accepted_since_last_run, newest_run_name

RETRAIN_DEPLOYMENT = "retrain/reviewlens-retrain"  # flow name / deployment name in prefect.yaml
DATA_DIR = str(DEFAULT_DATA_DIR)


@flow(name="crawl")
def crawl_flow(data_dir: str = DATA_DIR, crawl: CrawlConfig | None = None) -> CrawlSummary:
    return crawl_task(crawl or CrawlConfig(), data_dir)


@flow(name="dedupe")
def dedupe_flow(data_dir: str = DATA_DIR, dedupe: DedupeConfig | None = None) -> DedupeSummary:
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


@flow(name="retrain")
def retrain_flow(
    data_dir: str = DATA_DIR, train: TrainConfig | None = None, promote: bool = True, label: LabelConfig | None = None
) -> Evaluation:
    """Trains on the accepted photos, evaluates, and promotes the model if it passes the gate;
    a promoted model's index is built at once, so search answers with the model that is live,
    and the open labeling tasks are answered again by it."""
    run_dir = train_task(train or TrainConfig(), data_dir)
    evaluation = evaluate_task(run_dir, data_dir, promote)
    if evaluation.promoted:
        index_task(data_dir)
        predict_again_task(label or LabelConfig(), data_dir)
    return evaluation


@flow(name="index")
def index_flow(data_dir: str = DATA_DIR) -> IndexSummary:
    """Every usable photo of every product into the production model's index: no retrain."""
    return index_task(data_dir)


@task
def start_retrain(data_dir: str, train: TrainConfig, label: LabelConfig) -> str:
    """Starts a retrain: through its deployment when running deployed, else right here."""
    if deployment.id:
        from prefect.deployments import run_deployment

        parameters = {"data_dir": data_dir, "train": asdict(train), "label": asdict(label)}
        # One retrain per crossing of the threshold: every pull that sees the same newest run
        # asks with the same key, and Prefect hands back the run the first one created.
        key = f"retrain-after-{newest_run_name(Layout(Path(data_dir)))}"
        run = run_deployment(RETRAIN_DEPLOYMENT, parameters=parameters, timeout=0, idempotency_key=key)
        return f"retrain flow run {getattr(run, 'id', '?')} scheduled ({key})"
    return retrain_flow(data_dir, train, label=label).run_dir


@flow(name="label-pull")
def label_pull_flow(
    data_dir: str = DATA_DIR,
    label: LabelConfig | None = None,
    retrain_after: int = 0,
    train: TrainConfig | None = None,
) -> PullSummary:
    """Pulls decisions; with `retrain_after` > 0, starts a retrain once that many new photos are accepted."""
    summary = label_pull_task(label or LabelConfig(), data_dir)
    labeling_report_task(data_dir)
    if retrain_after > 0:
        waiting = accepted_since_last_run(Layout(Path(data_dir)))
        logger = get_run_logger()
        if waiting >= retrain_after:
            started = start_retrain(data_dir, train or TrainConfig(), label or LabelConfig())
            logger.info("%d newly accepted photos (threshold %d): %s", waiting, retrain_after, started)
        else:
            logger.info("%d newly accepted photos, retrain waits for %d", waiting, retrain_after)
    return summary


@dataclass(frozen=True)
class PipelineResult:
    crawl: CrawlSummary
    dedupe: DedupeSummary
    push: PushSummary
    pull: PullSummary
    evaluate: Evaluation


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
    crawled = crawl_task(crawl or CrawlConfig(), data_dir)
    deduped = dedupe_task(dedupe or DedupeConfig(), data_dir)
    pushed = label_push_task(label, data_dir)
    pulled = label_pull_task(label, data_dir)
    if pulled.chosen:
        label_push_task(label, data_dir)
    evaluated = retrain_flow(data_dir, train, promote, label)
    labeling_report_task(data_dir)
    return PipelineResult(crawled, deduped, pushed, pulled, evaluated)
