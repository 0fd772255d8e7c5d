"""Thin Prefect tasks around the stages. Retries sit on the tasks that talk to a network."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from core.layout import Layout
from core.settings import CrawlConfig, DedupeConfig, LabelConfig, TrainConfig
from crawler.collection import ImportSummary, import_collection
from crawler.crawl import CrawlSummary, crawl
from crawler.errors import LayoutChanged
from curation.dedupe.grouping import DedupeSummary, dedupe
from curation.labeling.client import LabelStudioError, connect
from curation.labeling.sync import PushSummary, predict_again, push
from search.indexing import IndexSummary, update_index, update_pretrained_index
from training.bundle import Ensemble
from training.evaluate import evaluate, promote
from training.runs import serving_model
from training.train import FeatureExtractor, NotEnoughData, NothingNew, train


def _not_a_layout_change(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """A changed page layout fails the same way every time: only other failures are retried."""
    return not isinstance(state.result(raise_on_failure=False), LayoutChanged)


@task(retries=2, retry_delay_seconds=30, retry_condition_fn=_not_a_layout_change)
def crawl_task(config: CrawlConfig, data_dir: str) -> CrawlSummary:
    summary = crawl(config, Layout(Path(data_dir)))
    get_run_logger().info("crawl: %s", summary)
    return summary


@task
def dedupe_task(config: DedupeConfig, data_dir: str) -> DedupeSummary:
    summary = dedupe(config, Layout(Path(data_dir)))
    get_run_logger().info("dedupe: %s", summary)
    return summary


@task(retries=2, retry_delay_seconds=10)
def label_push_task(config: LabelConfig, data_dir: str) -> PushSummary:
    summary = push(config, Layout(Path(data_dir)), connect())
    get_run_logger().info("label push: %s", summary)
    return summary


@task
def predict_again_task(config: LabelConfig, data_dir: str) -> int:
    """The open labeling tasks answered again by the ML backend, now with the promoted model.
    Label Studio being down loses nothing: a task opened later is answered by the new model."""
    logger = get_run_logger()
    try:
        asked = predict_again(config, Layout(Path(data_dir)), connect())
    except LabelStudioError as exc:
        logger.warning("open tasks not predicted again: %s", exc)
        return 0
    logger.info("%d open labeling tasks asked about with the promoted model", asked)
    return asked


class _ToRunLogger(logging.Handler):
    """Hands a stage's log records to the flow run's logger, so they show in Prefect's UI."""

    def __init__(self, target: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
        super().__init__(logging.INFO)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.log(record.levelno, record.getMessage())


@contextmanager
def progress_to_run_log() -> Iterator[None]:
    progress = logging.getLogger("training.progress")
    handler, level, propagate = _ToRunLogger(get_run_logger()), progress.level, progress.propagate
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False  # the run's log shows it on the console already: once is enough
    try:
        yield
    finally:
        progress.removeHandler(handler)
        progress.setLevel(level)
        progress.propagate = propagate


@dataclass(frozen=True)
class Untrained:
    """Why a retrain trained nothing."""

    reason: str


def train_or_why(config: TrainConfig, layout: Layout, extract: FeatureExtractor | None = None) -> str | Untrained:
    """The new run's folder, or why nothing was trained (not a failure: a retrain with nothing
    new to learn from, or a shop with too few accepted photos yet, is an answer), said in the log."""
    try:
        run_dir = str(train(config, layout, extract))
    except NothingNew as unchanged:
        get_run_logger().info("%s", unchanged)
        return Untrained(str(unchanged))
    except NotEnoughData as few:  # a new shop whose photos people have not accepted yet
        get_run_logger().warning("nothing trained: %s", few)
        return Untrained(f"nothing trained: {few}")
    get_run_logger().info("trained: %s", run_dir)
    return run_dir


@task
def train_task(config: TrainConfig, data_dir: str) -> str | Untrained:
    with progress_to_run_log():  # one line per epoch in the run's log
        return train_or_why(config, Layout(Path(data_dir)))


@task
def import_task(source: str, data_dir: str, shop: str) -> ImportSummary:
    summary = import_collection(Path(source), Layout(Path(data_dir)), shop=shop)
    get_run_logger().info("import: %s", summary)
    return summary


@dataclass(frozen=True)
class Evaluation:
    run_dir: str
    results: dict[str, dict[str, float]]  # member (and "ensemble") -> top1, top3 in percent
    gate: dict[str, Any]
    promoted: bool
    markdown: str  # the whole report
    table: str  # its first table: each member and the ensemble

    @classmethod
    def untrained(cls, untrained: Untrained, data_dir: str) -> Evaluation:
        """A retrain that found nothing new: the production model stays, and says why."""
        production = Layout(Path(data_dir)).production_dir
        source = production / "source_run.txt"  # the run it was promoted from
        run_dir = source.read_text().strip() if source.exists() else str(production.resolve())
        return cls(run_dir, {}, {"promote": False, "reason": untrained.reason}, False, "", untrained.reason)


@task
def evaluate_task(run_dir: str, data_dir: str, promote_if_better: bool) -> Evaluation:
    layout = Layout(Path(data_dir))
    report = evaluate(Path(run_dir), layout)
    logger = get_run_logger()
    logger.info("evaluation of %s:\n%s", run_dir, report.table)
    promoted = promote_if_better and bool(report.gate["promote"])
    if promoted:
        logger.info("promoted to %s: %s", promote(Path(run_dir), layout), report.gate["reason"])
    else:
        logger.info("not promoted: %s", report.gate["reason"])
    return Evaluation(run_dir, report.results, report.gate, promoted, report.markdown, report.table)


@task
def index_task(data_dir: str) -> IndexSummary:
    """Embeds the usable photos the serving model's index lacks: new products become findable.
    Before any model is trained, the members' pretrained bodies embed them."""
    layout = Layout(Path(data_dir))
    model = serving_model(layout)
    if model is not None:
        summary = update_index(layout, Ensemble.load(model))
    else:
        summary = update_pretrained_index(layout, TrainConfig())
    get_run_logger().info(
        "index of model %s: %d photos of %d products (%d cut to a person's box, %d catalog photos), %d added",
        summary.model_version,
        summary.photos,
        summary.products,
        summary.views,
        summary.catalog,
        summary.added,
    )
    return summary
