"""Label push and label pull: both Label Studio projects in one step each.

Push sends each photo posted under several products to "which product", then each usable photo
to the rules project, pre-annotated. Pull brings back the products chosen, then the rule
decisions; a photo whose product was just chosen goes out with the next push.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core import queries as q
from core.layout import Layout
from core.manifest import Manifest
from core.settings import LabelConfig
from curation.labeling.client import LabelStudioClient
from curation.labeling.product_choice import pull_choices, push_choices
from curation.labeling.review import pull_reviews, push_reviews
from curation.labeling.rule_tasks import pull_rules, push_rules
from curation.labeling.shapes import rules_view, verdict_tabs
from curation.preannotate.colocalise import CoLocaliser
from models.coco_detector import Detector


@dataclass
class PushSummary:
    project_id: int
    pushed: int = 0
    already: int = 0
    project_url: str = ""
    choices: int = 0  # photos posted under several products, sent for a person to choose

    def __str__(self) -> str:
        return (
            f"{self.pushed} tasks pushed, {self.already} already in project {self.project_id} ({self.project_url}); "
            f"{self.choices} photos posted under several products sent to choose their product"
        )


@dataclass
class PullSummary:
    project_id: int
    decided: int = 0
    accepted: int = 0
    rejected: int = 0
    unchanged: int = 0
    chosen: int = 0  # new answers on which product a photo shows
    waiting: int = 0  # tasks asked of two people, answered by one so far
    disputed: int = 0  # photos its two annotators decided differently, sent to review
    reviewed: int = 0  # reviewers' decisions among the new decisions

    def __str__(self) -> str:
        return (
            f"{self.decided} new decisions ({self.accepted} accepted, {self.rejected} rejected; "
            f"{self.reviewed} by review), {self.unchanged} unchanged, project {self.project_id}; "
            f"{self.waiting} waiting for a second annotator, {self.disputed} disagreements sent to review; "
            f"{self.chosen} products chosen"
        )


def document_root(layout: Layout) -> Path:
    """The folder Label Studio serves local files from: its own setting, else the data folder."""
    return Path(os.environ.get("LOCAL_FILES_DOCUMENT_ROOT") or layout.data_dir).resolve()


def push(
    config: LabelConfig,
    layout: Layout,
    client: LabelStudioClient,
    detector: Detector | None = None,
    localiser: CoLocaliser | None = None,
) -> PushSummary:
    """Creates the tasks of both projects that are missing; returns counts."""
    root = document_root(layout)
    project_id = client.ensure_project(config.project_title, layout.store_dir, rules_view(config.min_coverage))
    client.ensure_tabs(project_id, verdict_tabs())
    client.set_overlap(project_id, config.overlap)
    summary = PushSummary(project_id, project_url=client.project_url(project_id))
    summary.choices = push_choices(config, layout, client, root)
    summary.pushed = push_rules(
        config,
        layout,
        client,
        project_id,
        root,
        detector or Detector(config.detector_min_score),
        localiser or CoLocaliser(),
    )
    with Manifest(layout.manifest_path) as manifest:
        summary.already = manifest.scalar(q.LABEL_TASKS_IN_PROJECT, project_id) - summary.pushed
    return summary


def pull(config: LabelConfig, layout: Layout, client: LabelStudioClient) -> PullSummary:
    """Records the products chosen and the rule decisions made since the last pull."""
    project_id = client.ensure_project(config.project_title, layout.store_dir, rules_view(config.min_coverage))
    summary = PullSummary(project_id)
    summary.chosen = pull_choices(config, layout, client)
    pulled = pull_rules(config, layout, client, project_id)
    summary.unchanged, summary.waiting = pulled.unchanged, pulled.waiting
    summary.disputed = push_reviews(config, layout, client)
    reviewed = pull_reviews(config, layout, client)
    decisions = pulled.decisions + reviewed
    summary.reviewed = len(reviewed)
    summary.decided = len(decisions)
    summary.accepted = sum(d.decision == "accept" for d in decisions)
    summary.rejected = sum(d.decision == "reject" for d in decisions)
    return summary


def connect_backend(config: LabelConfig, layout: Layout, client: LabelStudioClient, url: str) -> str:
    """Connects the ML backend at `url` to the rules project; returns the model version it answers with."""
    project_id = client.ensure_project(config.project_title, layout.store_dir, rules_view(config.min_coverage))
    return client.connect_backend(project_id, url, "reviewlens")


def predict_again(config: LabelConfig, layout: Layout, client: LabelStudioClient) -> int:
    """Asks the project's ML backend about every open task (after a promotion, with the new model);
    returns how many were asked about, 0 when there is no project or no backend connected to it."""
    project_id = client.project_id(config.project_title)
    if project_id is None:
        return 0
    with Manifest(layout.manifest_path) as manifest:
        open_tasks = [int(r["task_id"]) for r in manifest.rows(q.OPEN_LABEL_TASKS, project_id)]
    return client.predict_again(project_id, open_tasks)
