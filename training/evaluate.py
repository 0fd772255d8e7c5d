"""Evaluation: Top-1 / Top-3 per member and for the ensemble, the report, and the promotion gate."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.layout import Layout
from training.bundle import Ensemble, soft_vote

DISPLAY = {
    "vgg19": "VGG19",
    "resnet50": "ResNet50",
    "mobilenet_v3_large": "MobileNetV3",
    "efficientnet_lite0": "EfficientNet-Lite0",
    "efficientnet_lite1": "EfficientNet-Lite1",
    "efficientnet_lite2": "EfficientNet-Lite2",
    "ensemble": "Ensemble (soft voting)",
}


def topk(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of rows whose label is among the `k` highest probabilities, in percent."""
    if len(labels) == 0:
        return 0.0
    k = min(k, probs.shape[1])
    hits = (probs.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return round(100 * float(hits.float().mean()), 1)


def _test_set(run_dir: Path) -> tuple[list[str], list[str]]:
    """The run's test photos (paths under the store) and the product each shows."""
    snapshot = json.loads((run_dir / "snapshot.json").read_text())
    test = [e for e in snapshot["examples"] if e["split"] == "test"]
    return [e["path"] for e in test], [snapshot["classes"][e["label"]]["product_id"] for e in test]


def score(ensemble: Ensemble, store_dir: Path, paths: list[str], products: list[str]) -> dict[str, dict[str, float]]:
    """Top-1 / Top-3 of each member and of the ensemble on photos whose true products are given.

    A photo of a product the ensemble does not know counts as a miss.
    """
    index = {c.product_id: i for i, c in enumerate(ensemble.classes)}
    labels = torch.tensor([index.get(p, -1) for p in products])
    probs = ensemble.member_probs([store_dir / p for p in paths])
    probs["ensemble"] = soft_vote(probs)
    return {name: {"top1": topk(p, labels, 1), "top3": topk(p, labels, 3)} for name, p in probs.items()}


def markdown_table(results: dict[str, dict[str, float]], n_test: int, n_classes: int) -> str:
    """The report laid out like the study's table: one row per model, Top-1 and Top-3 in percent."""
    lines = [
        f"Top-1 / Top-3 accuracy (%) on {n_test} test photos of {n_classes} products",
        "",
        "| Model | Top-1 | Top-3 |",
        "|---|---:|---:|",
    ]
    lines += [f"| {DISPLAY.get(name, name)} | {r['top1']:.1f} | {r['top3']:.1f} |" for name, r in results.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Report:
    run_dir: Path
    results: dict[str, dict[str, float]]
    n_test: int
    n_classes: int
    gate: dict[str, Any]

    @property
    def markdown(self) -> str:
        return markdown_table(self.results, self.n_test, self.n_classes)


def evaluate(run_dir: Path, layout: Layout, min_gain: float = 0.0) -> Report:
    """Scores the run on its test split, gates it against production; writes report.json/.md.

    The production model is scored on the same test photos, so the two numbers compare.
    """
    run_dir = Path(run_dir)
    ensemble = Ensemble.load(run_dir)
    paths, products = _test_set(run_dir)
    results = score(ensemble, layout.store_dir, paths, products)
    gate = promotion_gate(results["ensemble"]["top1"], layout, paths, products, min_gain, len(ensemble.classes))
    report = Report(run_dir, results, len(paths), len(ensemble.classes), gate)
    (run_dir / "report.json").write_text(
        json.dumps(
            {
                "snapshot_id": ensemble.snapshot_id,
                "n_test": len(paths),
                "n_classes": len(ensemble.classes),
                "results": results,
                "gate": gate,
            },
            indent=1,
        )
    )
    (run_dir / "report.md").write_text(report.markdown)
    return report


def better_than_chance(n_test: int, n_classes: int) -> float:
    """The Top-1 (in percent) a model must beat to be told from guessing: chance plus two standard errors."""
    chance = 1 / max(n_classes, 1)
    return 100 * (chance + 2 * math.sqrt(chance * (1 - chance) / max(n_test, 1)))


def promotion_gate(
    candidate_top1: float,
    layout: Layout,
    paths: list[str],
    products: list[str],
    min_gain: float,
    n_classes: int,
) -> dict[str, Any]:
    """Decides whether the candidate replaces production: it must beat chance, and not fall below production."""
    floor = better_than_chance(len(paths), n_classes)
    if candidate_top1 <= floor:
        return {
            "promote": False,
            "reason": f"candidate Top-1 {candidate_top1:.1f} is not above chance ({floor:.1f} needed for "
            f"{n_classes} products on {len(paths)} test photos)",
            "production_top1": None,
        }
    if not (layout.production_dir / "model.pt").exists():
        return {"promote": True, "reason": "no model in production yet", "production_top1": None}
    production = score(Ensemble.load(layout.production_dir), layout.store_dir, paths, products)["ensemble"]["top1"]
    promote = candidate_top1 >= production + min_gain
    verb = "beats or equals" if promote else "falls below"
    return {
        "promote": promote,
        "reason": f"candidate Top-1 {candidate_top1:.1f} {verb} production's {production:.1f} on the same test photos",
        "production_top1": production,
    }


def promote(run_dir: Path, layout: Layout) -> Path:
    """Copies the run's model and report into the production folder, replacing what was there."""
    target = layout.production_dir
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("model.pt", "report.json", "report.md", "snapshot.json"):
        if (Path(run_dir) / name).exists():
            shutil.copy2(Path(run_dir) / name, staging / name)
    (staging / "source_run.txt").write_text(str(Path(run_dir).resolve()) + "\n")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target
