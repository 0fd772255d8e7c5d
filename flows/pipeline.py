"""The flows: one per stage, a retrain, and the pipeline chaining them all.

Each flow takes the data folder and, per stage, a mapping of settings that overrides the
defaults in reviewlens/settings.py (unknown keys are rejected); prefect.yaml mirrors them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import deployment

from flows.tasks import crawl_task, dedupe_task, evaluate_task, label_pull_task, label_push_task, train_task
from reviewlens.manifest import Manifest
from reviewlens.settings import (
    DEFAULT_DATA_DIR,
    CrawlConfig,
    DedupeConfig,
    LabelConfig,
    Layout,
    TrainConfig,
    from_mapping,
)

RETRAIN_DEPLOYMENT = "retrain/reviewlens-retrain"  # flow name / deployment name in prefect.yaml


@flow(name="crawl")
def crawl_flow(data_dir: str = str(DEFAULT_DATA_DIR), crawl: dict[str, Any] | None = None) -> dict[str, Any]:
    return crawl_task(from_mapping(CrawlConfig, crawl or {}), data_dir)


@flow(name="dedupe")
def dedupe_flow(data_dir: str = str(DEFAULT_DATA_DIR), dedupe: dict[str, Any] | None = None) -> dict[str, Any]:
    return dedupe_task(from_mapping(DedupeConfig, dedupe or {}), data_dir)


@flow(name="label-push")
def label_push_flow(data_dir: str = str(DEFAULT_DATA_DIR), label: dict[str, Any] | None = None) -> dict[str, Any]:
    return label_push_task(from_mapping(LabelConfig, label or {}), data_dir)


@flow(name="retrain")
def retrain_flow(
    data_dir: str = str(DEFAULT_DATA_DIR), train: dict[str, Any] | None = None, promote: bool = True
) -> dict[str, Any]:
    """Trains on the accepted photos, evaluates, and promotes the model if it passes the gate."""
    run_dir = train_task(from_mapping(TrainConfig, train or {}), data_dir)
    return evaluate_task(run_dir, data_dir, promote)


def accepted_since_last_training(data_dir: str) -> int:
    """Accepted photos decided after the newest run started: the labels a retrain would add."""
    layout = Layout(Path(data_dir))
    runs = sorted(p.parent.name for p in layout.runs_dir.glob("*/model.pt"))
    since = ""
    if runs:
        stamp = runs[-1].split("-")[0]  # run folders start with their UTC start time
        since = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}"
    with Manifest(layout.manifest_path) as m:
        return m.count("labels", "decision = 'accept' AND decided_at > ?", since)


@task
def start_retrain(data_dir: str, train: dict[str, Any] | None) -> str:
    """Starts a retrain: through its deployment when running deployed, else right here."""
    if deployment.id:
        from prefect.deployments import run_deployment

        run = run_deployment(RETRAIN_DEPLOYMENT, parameters={"data_dir": data_dir, "train": train or {}}, timeout=0)
        return f"retrain flow run {getattr(run, 'id', '?')} scheduled"
    return str(retrain_flow(data_dir, train)["run_dir"])


@flow(name="label-pull")
def label_pull_flow(
    data_dir: str = str(DEFAULT_DATA_DIR),
    label: dict[str, Any] | None = None,
    retrain_after: int = 0,
    train: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pulls decisions; with `retrain_after` > 0, starts a retrain once that many new photos are accepted."""
    summary = label_pull_task(from_mapping(LabelConfig, label or {}), data_dir)
    if retrain_after > 0:
        waiting = accepted_since_last_training(data_dir)
        logger = get_run_logger()
        if waiting >= retrain_after:
            logger.info(
                "%d newly accepted photos (threshold %d): %s", waiting, retrain_after, start_retrain(data_dir, train)
            )
        else:
            logger.info("%d newly accepted photos, retrain waits for %d", waiting, retrain_after)
    return summary


@flow(name="pipeline")
def pipeline_flow(
    data_dir: str = str(DEFAULT_DATA_DIR),
    crawl: dict[str, Any] | None = None,
    dedupe: dict[str, Any] | None = None,
    label: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    demo_shop_dir: str | None = None,
    promote: bool = True,
) -> dict[str, Any]:
    """Crawl, dedupe, label push, (the demo's scripted annotator), label pull, train, evaluate.

    `demo_shop_dir` names a generated demo shop whose ground truth answers the tasks, standing
    in for annotators; leave it out in production, where people answer in Label Studio.
    """
    crawled = crawl_task(from_mapping(CrawlConfig, crawl or {}), data_dir)
    deduped = dedupe_task(from_mapping(DedupeConfig, dedupe or {}), data_dir)
    label_config = from_mapping(LabelConfig, label or {})
    pushed = label_push_task(label_config, data_dir)
    if demo_shop_dir:
        scripted_annotator_task(label_config, data_dir, demo_shop_dir)
    pulled = label_pull_task(label_config, data_dir)
    if pulled["chosen"]:
        # Photos whose product a person just chose go through the rules in the same run.
        label_push_task(label_config, data_dir)
        if demo_shop_dir:
            scripted_annotator_task(label_config, data_dir, demo_shop_dir)
        chosen = pulled["chosen"]
        pulled = {**label_pull_task(label_config, data_dir), "chosen": chosen}
    run_dir = train_task(from_mapping(TrainConfig, train or {}), data_dir)
    evaluated = evaluate_task(run_dir, data_dir, promote)
    return {"crawl": crawled, "dedupe": deduped, "push": pushed, "pull": pulled, "evaluate": evaluated}


@task
def scripted_annotator_task(config: LabelConfig, data_dir: str, demo_shop_dir: str) -> int:
    from curation.labelstudio import CHOICE_CONFIG, connect
    from reviewlens.demoshop.annotator import annotate_all, choose_all

    client, shop, store = connect(), Path(demo_shop_dir), Layout(Path(data_dir)).store_dir
    answered = annotate_all(client, client.ensure_project(config.project_title, store), shop)
    chosen = choose_all(client, client.ensure_project(config.choice_project_title, store, CHOICE_CONFIG), shop)
    get_run_logger().info("scripted annotator answered %d rule tasks and %d product choices", answered, chosen)
    return answered + chosen
