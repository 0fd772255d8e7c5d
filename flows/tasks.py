"""Thin Prefect tasks around the stages. Retries sit on the tasks that talk to a network."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from crawler.crawl import crawl
from curation.dedupe import dedupe
from curation.labeling import pull, push
from curation.labelstudio import connect
from reviewlens.settings import CrawlConfig, DedupeConfig, LabelConfig, Layout, TrainConfig
from training.evaluate import evaluate, promote
from training.train import train


@task(retries=2, retry_delay_seconds=30)
def crawl_task(config: CrawlConfig, data_dir: str) -> dict[str, Any]:
    summary = crawl(config, Layout(Path(data_dir)))
    get_run_logger().info("crawl: %s", summary)
    return asdict(summary)


@task
def dedupe_task(config: DedupeConfig, data_dir: str) -> dict[str, Any]:
    summary = dedupe(config, Layout(Path(data_dir)))
    get_run_logger().info("dedupe: %s", summary)
    return asdict(summary)


@task(retries=2, retry_delay_seconds=10)
def label_push_task(config: LabelConfig, data_dir: str) -> dict[str, Any]:
    summary = push(config, Layout(Path(data_dir)), connect())
    get_run_logger().info("label push: %s", summary)
    return asdict(summary)


@task(retries=2, retry_delay_seconds=10)
def label_pull_task(config: LabelConfig, data_dir: str) -> dict[str, Any]:
    summary = pull(config, Layout(Path(data_dir)), connect())
    get_run_logger().info("label pull: %s", summary)
    return asdict(summary)


@task
def train_task(config: TrainConfig, data_dir: str) -> str:
    run_dir = train(config, Layout(Path(data_dir)))
    get_run_logger().info("trained: %s", run_dir)
    return str(run_dir)


@task
def evaluate_task(run_dir: str, data_dir: str, promote_if_better: bool) -> dict[str, Any]:
    layout = Layout(Path(data_dir))
    report = evaluate(Path(run_dir), layout)
    logger = get_run_logger()
    logger.info("evaluation of %s:\n%s", run_dir, report.markdown)
    promoted = promote_if_better and bool(report.gate["promote"])
    if promoted:
        logger.info("promoted to %s: %s", promote(Path(run_dir), layout), report.gate["reason"])
    else:
        logger.info("not promoted: %s", report.gate["reason"])
    return {
        "run_dir": run_dir,
        "results": report.results,
        "gate": report.gate,
        "promoted": promoted,
        "markdown": report.markdown,
    }
