"""Evaluation: each member and the ensemble on the run's frozen test photos, the report, and the gate.

report.md gives Top-1 / Top-3, macro-F1 and calibration error per model, the study's table
beside ours, how "not sure" does, accuracy per product, and confusion.png.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core import queries as q
from core.layout import Layout
from core.manifest import NoManifest, open_manifest
from core.settings import DedupeConfig
from training.bundle import Ensemble, NotAModel
from training.confusion_image import write_confusion_png
from training.groups import GROUPED_BY, leaks_into_test
from training.loading import PhotoRef, default_workers
from training.metrics import confusion, scores

DISPLAY = {
    "vgg19": "VGG19",
    "resnet50": "ResNet50",
    "mobilenet_v3_large": "MobileNetV3",
    "efficientnet_lite0": "EfficientNet-Lite0",
    "efficientnet_lite1": "EfficientNet-Lite1",
    "efficientnet_lite2": "EfficientNet-Lite2",
    "ensemble": "Ensemble",
}
# The study's figures (Top-1 / Top-3 on 9,423 test photos of 54 Ohouse products).
STUDY = {
    "MobileNetV3": (71.5, 89.6),
    "VGG19": (49.8, 74.1),
    "ResNet50": (71.7, 90.5),
    "Ensemble (soft voting)": (74.4, 90.2),
}
MODES = {
    "quick": "quick (heads on frozen features)",
    "top": "top (the last blocks fine-tuned on their cached inputs)",
    "full": "full (fine-tuned)",
}


@dataclass(frozen=True)
class HeldOut:
    photos: list[PhotoRef]
    products: list[str]


def split_audit(run_dir: Path, layout: Layout) -> tuple[str, dict[str, Any]]:
    """The report's account of the split: what it is grouped by, and what of test is seen in training."""
    examples = json.loads((run_dir / "snapshot.json").read_text())["examples"]
    try:
        with open_manifest(layout) as manifest:
            # A photo hashed before centre hashes existed stands for its own centre.
            hashes = {r["sha256"]: (int(r["phash"], 16), int(r["centre_hash"] or r["phash"], 16))
                      for r in manifest.rows(q.PHOTO_HASHES)}  # fmt: skip
    except NoManifest:  # a snapshot made outside the pipeline (a benchmark's) has no hashes
        hashes = {}
    dedupe = DedupeConfig()
    leaks = leaks_into_test(examples, hashes, dedupe.max_distance, dedupe.max_cross_distance)
    counts = {s: sum(e["split"] == s for e in examples) for s in ("train", "val", "test")}
    views = sum(1 for e in examples if e["split"] == "train" and e.get("box"))
    near = leaks["near_duplicates"]
    text = (
        f"Split by {GROUPED_BY}: a group lies wholly in train, val or test. {counts['train']} train "
        f"({views} of them views cut to a person's box), {counts['val']} val, {counts['test']} test photos. "
        f"Test photos sharing a group with a training photo: {leaks['sharing_a_group']}; "
        + (f"within the near-duplicate distance of one: {near}." if near is not None
           else "near duplicates not counted (the photos were never hashed).")
    )  # fmt: skip
    return text, {"grouped_by": GROUPED_BY, **counts, "train_views": views, **leaks}


def under_half(weak: list[dict[str, Any]]) -> str:
    if not weak:
        return "No product is under 50% Top-1."
    return "Products under 50% Top-1: " + ", ".join(f"{r['name']} ({r['top1']:.0f}%)" for r in weak) + "."


def held_out(run_dir: Path, layout: Layout) -> HeldOut:
    """The run's frozen test photos and the product each shows."""
    snapshot = json.loads((run_dir / "snapshot.json").read_text())
    test = [e for e in snapshot["examples"] if e["split"] == "test"]
    return HeldOut(
        [PhotoRef(layout.store_dir / e["path"], e["sha256"]) for e in test],
        [snapshot["classes"][e["label"]]["product_id"] for e in test],
    )


def probabilities(ensemble: Ensemble, tests: HeldOut, layout: Layout) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each member's and the ensemble's calibrated probabilities, and the labels (-1: unknown product)."""
    index = {c.product_id: i for i, c in enumerate(ensemble.classes)}
    labels = torch.tensor([index.get(p, -1) for p in tests.products], dtype=torch.long)
    logits = ensemble.member_logits(tests.photos, layout, default_workers())
    probs = ensemble.member_probs(logits)
    probs["ensemble"] = ensemble.ensemble_probs(logits)
    return probs, labels


def markdown_table(results: dict[str, dict[str, float]], n_test: int, n_classes: int) -> str:
    """One row per model: Top-1, Top-3 and macro-F1 in percent, calibration error in points."""
    lines = [
        f"Accuracy (%) on {n_test} test photos of {n_classes} products",
        "",
        "| Model | Top-1 | Top-3 | Macro-F1 | ECE |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        cells = [f"{r[k]:.1f}" if k in r else "" for k in ("top1", "top3", "macro_f1", "ece")]
        lines.append(f"| {DISPLAY.get(name, name)} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def study_table(ours: dict[str, float]) -> str:
    lines = [
        "| | Top-1 | Top-3 |",
        "|---|---:|---:|",
        *(f"| study: {name} | {t1:.1f} | {t3:.1f} |" for name, (t1, t3) in STUDY.items()),
        f"| reviewlens: ensemble | {ours['top1']:.1f} | {ours['top3']:.1f} |",
    ]
    return "\n".join(lines) + "\n"


def not_sure_line(probs: torch.Tensor, labels: torch.Tensor, threshold: float) -> tuple[str, dict[str, float]]:
    top, guess = probs.max(-1)
    sure = top >= threshold
    answered = float(sure.float().mean()) if len(labels) else 0.0
    precision = float((guess[sure] == labels[sure]).float().mean()) if sure.any() else 0.0
    figures = {"threshold": threshold, "answered": round(100 * answered, 1), "precision": round(100 * precision, 1)}
    return (
        f'Below a score of {threshold:.2f} (fitted on validation) predict says "not sure": on the test photos it '
        f"answered {figures['answered']:.1f}% of them, and {figures['precision']:.1f}% of those answers were right.",
        figures,
    )


@dataclass
class Report:
    run_dir: Path
    results: dict[str, dict[str, float]]
    n_test: int
    n_classes: int
    gate: dict[str, Any]
    markdown: str

    @property
    def table(self) -> str:
        return markdown_table(self.results, self.n_test, self.n_classes)


def per_product(ensemble: Ensemble, probs: torch.Tensor, labels: torch.Tensor) -> list[dict[str, Any]]:
    matrix = confusion(probs.argmax(-1), labels, len(ensemble.classes))
    rows = []
    for i, c in enumerate(ensemble.classes):
        n = int(matrix[i].sum())
        if n:
            top1 = round(100 * int(matrix[i, i]) / n, 1)
            rows.append({"product_id": c.product_id, "name": c.name, "n": n, "top1": top1})
    return sorted(rows, key=lambda r: (r["top1"], r["name"]))


def evaluate(run_dir: Path, layout: Layout, min_gain: float = 0.0) -> Report:
    """Scores the run on its test split, gates it against production; writes report.json/.md and confusion.png.

    The production model is scored on the same test photos, so the two numbers compare.
    """
    run_dir = Path(run_dir)
    ensemble = Ensemble.load(run_dir)
    tests = held_out(run_dir, layout)
    probs, labels = probabilities(ensemble, tests, layout)
    results = {name: scores(p, labels) for name, p in probs.items()}
    n_classes = len(ensemble.classes)
    gate = promotion_gate(results["ensemble"]["top1"], layout, tests, min_gain, n_classes)
    products = per_product(ensemble, probs["ensemble"], labels)
    sure_text, sure = not_sure_line(probs["ensemble"], labels, ensemble.calibration.sure_threshold)
    matrix = confusion(probs["ensemble"].argmax(-1), labels, n_classes)
    write_confusion_png(matrix, [c.name for c in ensemble.classes], run_dir / "confusion.png")
    table = markdown_table(results, len(tests.photos), n_classes)
    split_text, split = split_audit(run_dir, layout)
    weak = [r for r in products if r["top1"] < 50]
    left_out = [m for m in ensemble.config.members if m not in {t.member.name for t in ensemble.members}]
    markdown = "\n".join(
        [
            f"# Model {ensemble.version}",
            "",
            f"Made in {MODES.get(ensemble.mode, ensemble.mode)} mode from snapshot {ensemble.snapshot_id}; "
            f"members {', '.join(DISPLAY.get(m.member.name, m.member.name) for m in ensemble.members)}"
            + (f" ({', '.join(left_out)} left out: the time budget ran short)." if left_out else "."),
            f"The ensemble: {ensemble.calibration}.",
            "",
            table,
            "ECE: expected calibration error, in points (0: a score of 0.8 is right 80% of the time). "
            "Macro-F1 counts every product the same, however few its photos.",
            "",
            under_half(weak),
            "",
            "## Split",
            "",
            split_text,
            "",
            "## Beside the study",
            "",
            "The study's photos were Ohouse's (54 products, 9,423 test photos, a random split that let duplicates "
            "straddle train and test); ours are this shop's, split so that no source or duplicate group straddles.",
            "",
            study_table(results["ensemble"]),
            "## Not sure",
            "",
            sure_text,
            "",
            f"## Gate\n\n{gate['reason']}.\n",
            "## Per product (worst first)",
            "",
            "| Product | Test photos | Top-1 |",
            "|---|---:|---:|",
            *(f"| {r['name']} | {r['n']} | {r['top1']:.1f} |" for r in products),
            "",
            "![confusion](confusion.png)",
            "",
        ]
    )
    report = Report(run_dir, results, len(tests.photos), n_classes, gate, markdown)
    (run_dir / "report.json").write_text(
        json.dumps(
            {
                "version": ensemble.version,
                "mode": ensemble.mode,
                "snapshot_id": ensemble.snapshot_id,
                "n_test": len(tests.photos),
                "n_classes": n_classes,
                "results": results,
                "not_sure": sure,
                "split": split,
                "under_half": [r["product_id"] for r in weak],
                "per_product": products,
                "gate": gate,
            },
            indent=1,
        )
    )
    (run_dir / "report.md").write_text(markdown)
    return report


def better_than_chance(n_test: int, n_classes: int) -> float:
    """The Top-1 (in percent) a model must beat to be told from guessing: chance plus two standard errors."""
    chance = 1 / max(n_classes, 1)
    return 100 * (chance + 2 * math.sqrt(chance * (1 - chance) / max(n_test, 1)))


def promotion_gate(
    candidate_top1: float, layout: Layout, tests: HeldOut, min_gain: float, n_classes: int
) -> dict[str, Any]:
    """Decides whether the candidate replaces production: it must beat chance, and not fall below production."""
    floor = better_than_chance(len(tests.photos), n_classes)
    if candidate_top1 <= floor:
        return {
            "promote": False,
            "reason": f"candidate Top-1 {candidate_top1:.1f} is not above chance ({floor:.1f} needed for "
            f"{n_classes} products on {len(tests.photos)} test photos)",
            "production_top1": None,
        }
    if not (layout.production_dir / "model.pt").exists():
        return {"promote": True, "reason": "no model in production yet", "production_top1": None}
    try:
        production = Ensemble.load(layout.production_dir)
    except NotAModel as exc:
        return {"promote": True, "reason": f"production cannot be scored ({exc})", "production_top1": None}
    probs, labels = probabilities(production, tests, layout)
    production_top1 = scores(probs["ensemble"], labels)["top1"]
    promote = candidate_top1 >= production_top1 + min_gain
    verb = "beats or equals" if promote else "falls below"
    return {
        "promote": promote,
        "reason": f"candidate Top-1 {candidate_top1:.1f} {verb} production's {production_top1:.1f} "
        "on the same test photos",
        "production_top1": production_top1,
    }


def promote(run_dir: Path, layout: Layout) -> Path:
    """Copies the run's model and report into the production folder, replacing what was there."""
    target = layout.production_dir
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("model.pt", "report.json", "report.md", "snapshot.json", "confusion.png"):
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
