"""The label-pull flow: answers back as soon as one is saved, and a retrain once enough arrived.

Its deployment runs on every answer saved (prefect.yaml's trigger), so this module loads no
network and no training: the flow run's process starts in seconds. A retrain it starts runs
through its own deployment (or, not deployed, in this process, importing training then).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment

from core.layout import DEFAULT_DATA_DIR, Layout
from core.settings import LabelConfig, TrainConfig
from curation.labeling.client import connect
from curation.labeling.pull import PullSummary, pull
from curation.labeling.report import labeling_report, write_report
from training.runs import accepted_since_last_run, newest_run_name

RETRAIN_DEPLOYMENT = "retrain/reviewlens-retrain"  # flow name / deployment name in prefect.yaml
DATA_DIR = str(DEFAULT_DATA_DIR)


@task(retries=2, retry_delay_seconds=10)
def label_pull_task(config: LabelConfig, data_dir: str) -> PullSummary:
    summary = pull(config, Layout(Path(data_dir)), connect())
    get_run_logger().info("label pull: %s", summary)
    return summary


@task
def labeling_report_task(data_dir: str) -> str:
    """The funnel, the machine's agreement with people and each annotator's work: written to the
    data folder's reports and kept as the flow run's artifact "labeling-report"."""
    layout = Layout(Path(data_dir))
    report = labeling_report(layout)
    path = write_report(layout, report)
    create_markdown_artifact(markdown=report.markdown(), key="labeling-report", description=str(path))
    return str(path)


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
    from flows.pipeline import retrain_flow  # training's imports, only when it trains here

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
