"""Label push: each photo posted under several products to "which product", then each usable
photo to the rules project, pre-annotated; and the ML backend's connection to the rules project.
Their answers come back through curation/labeling/pull.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core import queries as q
from core.kept_secret import kept_secret
from core.layout import Layout
from core.manifest import open_manifest
from core.settings import LabelConfig
from curation.labeling.client import LabelStudioClient
from curation.labeling.product_choice import push_choices
from curation.labeling.rule_tasks import push_rules
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
    with open_manifest(layout) as manifest:
        summary.already = manifest.scalar(q.LABEL_TASKS_IN_PROJECT, project_id) - summary.pushed
    return summary


def connect_backend(config: LabelConfig, layout: Layout, client: LabelStudioClient, url: str) -> str:
    """Connects the ML backend at `url` to the rules project, with the login the backend of this data
    folder asks (DATA_DIR/services/ml-backend-login); returns the model version it answers with."""
    project_id = client.ensure_project(config.project_title, layout.store_dir, rules_view(config.min_coverage))
    return client.connect_backend(project_id, url, "reviewlens", kept_secret(layout.ml_backend_login))


def predict_again(config: LabelConfig, layout: Layout, client: LabelStudioClient) -> int:
    """Asks the project's ML backend about every open task (after a promotion, with the new model);
    returns how many were asked about, 0 when there is no project or no backend connected to it."""
    project_id = client.project_id(config.project_title)
    if project_id is None:
        return 0
    with open_manifest(layout) as manifest:
        open_tasks = [int(r["task_id"]) for r in manifest.rows(q.OPEN_LABEL_TASKS, project_id)]
    return client.predict_again(project_id, open_tasks)
