"""Accuracy on real photos: the grocery store's 81 products, trained on its train and val photos
with the pipeline's own training, scored on its 2,485 test photos.

Beside top mode, in the same run: quick mode (a head on each member's frozen features, read from
the activations top mode kept). Beside quick mode, on the same cached features: the fit it made before
(heads on train alone with plain log-loss: `--balance none --no-refit`), and the
plain baseline a practitioner would try first, a logistic-regression probe (centre crop, L2
chosen on val, no mirror images, no calibration), per member and averaged. Times are wall clock
on this machine.

    .venv/bin/python -m tests.benchmarks.grocery_accuracy [--mode quick|top|full] [--members ...] [--budget-minutes M]
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from core.layout import Layout
from core.settings import TrainConfig
from models.efficientnet_lite import EfficientNetLite
from tests.benchmarks._grocery import GROCERY, grocery_layout, grocery_photos
from tests.benchmarks._photos import show_progress
from tests.benchmarks._shop import workdir
from tests.benchmarks._smoke import SMALL_TRAIN, sized
from tests.benchmarks._smoke import parser as smoke_parser
from training.bundle import Ensemble
from training.data import Example, ProductClass, Snapshot
from training.evaluate import evaluate, markdown_table
from training.features import StoredRows, feature_store
from training.head import Probe, Rows, fit_head, settings_of
from training.loading import PhotoRef
from training.members import get_member
from training.metrics import scores
from training.top_tune import top_features
from training.train import device, resolve_mode, top_inputs, train_snapshot

PROBE_C = (1e-4, 1e-3, 1e-2, 1e-1)  # L2 strengths the baseline probe tries on val


def grocery_snapshot() -> Snapshot:
    names = {}
    for line in (GROCERY / "classes.csv").read_text().splitlines()[1:]:
        cols = line.split(",")
        names[int(cols[1])] = cols[0]
    examples = []
    for split, file in (("train", "train.txt"), ("val", "val.txt"), ("test", "test.txt")):
        for line in (GROCERY / file).read_text().splitlines():
            if line.strip():
                path, label, _ = (c.strip() for c in line.split(","))
                sha = hashlib.sha256((GROCERY / path.lstrip("/")).read_bytes()).hexdigest()
                examples.append(Example(sha, path.lstrip("/"), sha, int(label), split))
    classes = [ProductClass(str(i), names[i], "") for i in sorted(names)]
    return Snapshot("grocery", classes, examples)


def lbfgs_probe(train_x: torch.Tensor, train_y: torch.Tensor, l2: float, n_classes: int) -> torch.nn.Linear:
    """Multinomial logistic regression to convergence (full-batch L-BFGS) on standardized features."""
    layer = torch.nn.Linear(train_x.shape[1], n_classes)
    opt = torch.optim.LBFGS(layer.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(train_x), train_y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return layer


def probe_baseline(snapshot: Snapshot, layout: Layout, run_dir: os.PathLike[str]) -> dict[str, dict[str, float]]:
    """The baseline on the features the run cached (the ImageNet bodies' own)."""
    ensemble = Ensemble.load(run_dir)  # type: ignore[arg-type]
    out, probs = {}, []
    labels = {s: torch.tensor([e.label for e in snapshot.split(s)]) for s in ("train", "val", "test")}
    n = len(snapshot.classes)
    for trained in ensemble.members:
        member = trained.member
        body = member.build(n, None, True)
        store = feature_store(layout, member, body, trained.size, ensemble.config.resize_ratio)
        x = {s: store.read([e.sha256 for e in snapshot.split(s)])[:, 0] for s in labels}
        mean, std = x["train"].mean(0), x["train"].std(0).clamp(min=1e-6)
        x = {s: (v - mean) / std for s, v in x.items()}
        best = max(
            (lbfgs_probe(x["train"], labels["train"], c, n) for c in PROBE_C),
            key=lambda layer: float((layer(x["val"]).argmax(-1) == labels["val"]).float().mean()),
        )
        with torch.no_grad():
            p = best(x["test"]).softmax(-1)
        probs.append(p)
        out[f"probe {member.name}"] = scores(p, labels["test"])
    out["probe ensemble (mean)"] = scores(torch.stack(probs).mean(0), labels["test"])
    return out


def joined_head(snapshot: Snapshot, layout: Layout, run_dir: os.PathLike[str]) -> dict[str, float]:
    """One head on the members' features joined end to end, chosen and refitted as quick mode
    chooses and refits each member's (its scores uncalibrated: Top-k and macro-F1 do not need it)."""
    ensemble = Ensemble.load(run_dir)  # type: ignore[arg-type]
    n = len(snapshot.classes)
    stores = [
        feature_store(layout, t.member, t.member.build(n, None, True), t.size, ensemble.config.resize_ratio)
        for t in ensemble.members
    ]

    def read(shas: list[str]) -> torch.Tensor:
        return torch.cat([store.read(shas) for store in stores], -1)

    def rows(split: str) -> Rows:
        return Rows([e.key for e in snapshot.split(split)], [e.label for e in snapshot.split(split)])

    config = ensemble.config
    dim = sum(store.dim for store in stores)
    _, chosen = fit_head(read, rows("train"), rows("val"), dim, n, config.head_epochs, config.label_smoothing, 0)
    probe = Probe(read, dim, n, config.head_epochs, config.label_smoothing, 0)
    head = probe.fit(probe.source(rows("train") + rows("val")), settings_of(chosen))
    with torch.no_grad():
        probs = head(read(rows("test").shas)[:, 0]).softmax(-1)
    return scores(probs, torch.tensor(rows("test").labels))


def frozen_features_from_activations(snapshot: Snapshot, layout: Layout, config: TrainConfig) -> None:
    """Top mode keeps the frozen features of train and val; the test photos' come from their kept
    activations through each member's frozen top, so quick mode beside it decodes no photo."""
    keys = [e.key for e in snapshot.examples]
    for name in config.members:
        member = get_member(name)
        model = member.build(len(snapshot.classes), None, True)
        size = member.input_size(config.image_size)
        if not isinstance(model, EfficientNetLite):
            continue
        split, acts, shape = top_inputs(layout, member, model, size, config)
        frozen = feature_store(layout, member, model, size, config.resize_ratio)
        # A member the budget left out kept no activations: quick mode embeds its photos itself.
        todo = [k for k in frozen.missing(keys) if k in acts.index]
        for i in range(0, len(todo), 1024):
            part = todo[i : i + 1024]
            frozen.add(part, top_features(split, StoredRows(acts, part, shape))[:, None].half().numpy())


def keep_logits(snapshot: Snapshot, layout: Layout, run_dir: Path) -> None:
    """Each member's validation and test logits beside the run, so a vote can be weighed again
    without training again; read from the tuned features the run stored, so it costs seconds."""
    ensemble = Ensemble.load(run_dir / "model.pt")
    kept = {}
    for split in ("val", "test"):
        examples = snapshot.split(split)
        photos = [PhotoRef(layout.store_dir / e.path, e.sha256, e.box) for e in examples]
        kept[split] = {
            "logits": ensemble.member_logits(photos, layout),
            "labels": torch.tensor([e.label for e in examples]),
        }
    torch.save(kept, run_dir / "logits.pt")


def main() -> None:
    parser = smoke_parser(__doc__)
    parser.add_argument("--mode", choices=["auto", "quick", "top", "full"], default=sized("auto", "quick"))
    parser.add_argument("--members", nargs="+", default=list(sized(TrainConfig().members, SMALL_TRAIN["members"])))
    parser.add_argument("--budget-minutes", type=float, default=0.0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the logistic-regression probe")
    parser.add_argument("--workdir", type=Path, help="an earlier run's folder, whose cached features are reused")
    args = parser.parse_args()
    show_progress()
    grocery_photos()  # exits with a reason when ../shared is absent
    snapshot = grocery_snapshot()
    # The training code reads photos from a layout's store: point one at the dataset.
    layout = grocery_layout(args.workdir or workdir("grocery"))
    config = TrainConfig(mode=args.mode, members=tuple(args.members), budget_minutes=args.budget_minutes)
    mode = resolve_mode(config, device())
    started = time.monotonic()
    run_dir = train_snapshot(snapshot, config, layout)
    train_s = time.monotonic() - started
    report = evaluate(run_dir, layout)
    total_s = time.monotonic() - started
    keep_logits(snapshot, layout, run_dir)
    results = dict(report.results)
    if not args.no_baseline:
        if mode == "top":  # quick mode beside it, on the same frozen features
            frozen_features_from_activations(snapshot, layout, config)
            quick = train_snapshot(snapshot, replace(config, mode="quick", budget_minutes=0), layout)
            results["quick mode, same run and features: a head on each member's frozen features"] = evaluate(
                quick, layout
            ).results["ensemble"]
        if mode == "quick":  # the heads alone: every feature is in the cache by now
            old_fit = train_snapshot(snapshot, replace(config, balance="none", refit=False), layout)
            results["heads on train alone, plain log-loss"] = evaluate(old_fit, layout).results["ensemble"]
            results["one head on the members' features joined"] = joined_head(snapshot, layout, run_dir)
        results.update(probe_baseline(snapshot, layout, run_dir))
    print(markdown_table(results, report.n_test, report.n_classes))
    print(f"{mode} mode on {device()}: trained in {train_s:.0f} s, evaluated by {total_s:.0f} s; report {run_dir}")
    e = report.results["ensemble"]
    print(f"grocery_{mode}_top1_top3: {e['top1']:.1f} / {e['top3']:.1f} in {total_s / 60:.1f} min")


if __name__ == "__main__":
    main()
