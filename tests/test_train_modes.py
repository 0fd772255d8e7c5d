"""Training as ops and shoppers meet it: both modes, a cheap retrain, an import, the report, predict."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from core.boxes import view_key
from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.settings import TrainConfig
from crawler.collection import BadCollection, import_collection
from reviewlens.cli import main
from search.answers import answer_files
from search.finder import Finder
from tests.db import count, run, run_many
from training.bundle import Ensemble
from training.data import make_snapshot
from training.evaluate import evaluate, promote
from training.members import get_member
from training.train import resolve_mode, train, train_snapshot

SMALL = {"members": ("efficientnet_lite0",), "image_size": 64, "batch_size": 16, "head_epochs": 20}


def _accept(layout: Layout, share: float = 1.0) -> int:
    """Marks the first `share` of kept photos accepted, as annotators would; returns how many."""
    with open_manifest(layout) as m:
        kept = [r[0] for r in run(m, "SELECT sha256 FROM curation WHERE is_kept = 1 ORDER BY sha256")]
        chosen = kept[: round(len(kept) * share)]
        run_many(
            m,
            "INSERT OR IGNORE INTO labels (sha256, project_id, task_id, pushed_at, decision, decided_at) "
            "VALUES (?, 1, 1, ?, 'accept', ?)",
            [(sha, utc_now(), utc_now()) for sha in chosen],
        )
    return len(chosen)


def _history(run_dir: Path) -> dict[str, dict[str, object]]:
    bundle = torch.load(run_dir / "model.pt", weights_only=True)
    return {name: m["history"] for name, m in bundle["members"].items()}


def test_quick_mode_trains_reports_and_a_retrain_embeds_only_new_photos(
    deduped: Layout, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = deduped
    first_accepted = _accept(layout, 0.8)
    first = train(TrainConfig(mode="quick", **SMALL), layout)  # type: ignore[arg-type]
    snapshot = json.loads((first / "snapshot.json").read_text())
    assert _history(first)["efficientnet_lite0"]["embedded"] == len(snapshot["examples"]) <= first_accepted

    report = evaluate(first, layout)
    ensemble = report.results["ensemble"]
    assert set(ensemble) == {"top1", "top3", "macro_f1", "ece"} and ensemble["top1"] > 40  # chance is 17
    saved = json.loads((first / "report.json").read_text())
    assert saved["mode"] == "quick" and sum(p["n"] for p in saved["per_product"]) == saved["n_test"]
    markdown = (first / "report.md").read_text()
    assert "quick (heads on frozen features)" in markdown and "| study: ResNet50 | 71.7 | 90.5 |" in markdown
    assert '"not sure"' in markdown and "## Per product" in markdown
    assert Image.open(first / "confusion.png").size[0] > 100

    # A fifth more photos accepted: the retrain computes features for those only.
    _accept(layout, 1.0)
    second = train(TrainConfig(mode="quick", **SMALL), layout)  # type: ignore[arg-type]
    new = len(json.loads((second / "snapshot.json").read_text())["examples"]) - len(snapshot["examples"])
    assert 0 < _history(second)["efficientnet_lite0"]["embedded"] == new

    # predict answers a folder in one load, names the model, and reports the photo it cannot read.
    folder = layout.data_dir / "asked"
    folder.mkdir()
    for e in snapshot["examples"][:3]:
        (folder / Path(e["path"]).name).write_bytes((layout.store_dir / e["path"]).read_bytes())
    (folder / "broken.jpg").write_bytes(b"<html>not a photo</html>")
    loads: list[Path] = []
    load = Ensemble.load
    monkeypatch.setattr(Ensemble, "load", lambda path: loads.append(path) or load(path))
    assert main(["predict", str(folder), "--model", str(second), "--data-dir", str(layout.data_dir)]) == 0
    monkeypatch.undo()
    assert loads == [second]  # the models are loaded once for the whole folder
    out = capsys.readouterr().out
    assert f"model {second.name} (quick mode)" in out and "not sure below" in out
    assert "broken.jpg:\n  cannot read it:" in out and out.count(" object 1 at (") == 3
    # A lone unreadable photo, or a folder with none, is an error that says why.
    assert main(["predict", str(folder / "broken.jpg"), "--model", str(second)]) == 1
    assert "not a readable image" in capsys.readouterr().err
    (layout.data_dir / "empty").mkdir()
    assert main(["predict", str(layout.data_dir / "empty"), "--model", str(second)]) == 1
    assert "no photos in" in capsys.readouterr().err
    finder = Finder.load(layout, second)
    answers = [answer for answer, _ in answer_files(finder, sorted(folder.iterdir()))]
    scores = [m.score for a in answers for o in a.objects for m in o.matches]
    assert scores and all(0 <= s <= 1 for s in scores)
    # No index of this model: the classifier alone decides, under its own threshold.
    assert finder.index is None and finder.threshold == Ensemble.load(second).calibration.sure_threshold
    assert all(o.sure == (o.matches[0].score >= finder.threshold) for a in answers for o in a.objects)


def test_full_mode_fine_tunes_and_keeps_its_time_budget(deduped: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    _accept(deduped)
    run = train(TrainConfig(mode="full", epochs=2, patience=2, **SMALL), deduped)  # type: ignore[arg-type]
    epochs = _history(run)["efficientnet_lite0"]["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]  # the probe as it came, then two epochs
    assert all(e["photos_per_s"] > 0 for e in epochs[1:])
    # The GPU's path, on this CPU: no loader workers, uint8 batches augmented by the loop itself.
    monkeypatch.setattr("training.train.default_workers", lambda: 0)
    on_device = train(TrainConfig(mode="full", epochs=1, **SMALL), deduped)  # type: ignore[arg-type]
    assert [e["epoch"] for e in _history(on_device)["efficientnet_lite0"]["epochs"]] == [0, 1]
    # A budget too short for any epoch: the probe is what it delivers, and no time is overrun.
    rushed = train(
        TrainConfig(mode="full", epochs=50, budget_minutes=0.001, **SMALL),  # type: ignore[arg-type]
        deduped,
    )
    assert [e["epoch"] for e in _history(rushed)["efficientnet_lite0"]["epochs"]] == [0]
    assert evaluate(rushed, deduped).results["ensemble"]["top1"] > 40


def test_top_mode_tunes_the_last_blocks_and_keeps_the_epoch_best_on_validation(deduped: Layout) -> None:
    _accept(deduped)
    run = train(TrainConfig(mode="top", top_blocks=2, top_epochs=2, **SMALL), deduped)  # type: ignore[arg-type]
    tuned = _history(run)["efficientnet_lite0"]["top_tune"]
    assert tuned["blocks"] == 2 and len(tuned["val_top1"]) == 3  # the probe, then two epochs
    assert tuned["views"] == 2  # the centre crop's activations and two augmented views of each photo
    views = sorted((deduped.cache_dir / "activations" / "efficientnet_lite0").glob("*-view*"))
    assert [v.name[-6:] for v in views] == ["-view1", "-view2"]
    examples = json.loads((run / "snapshot.json").read_text())["examples"]
    train_keys = {view_key(e["sha256"], e["box"]) for e in examples if e["split"] == "train"}
    for folder in views:
        assert {k for listing in folder.glob("*.sha") for k in listing.read_text().split()} == train_keys
    assert tuned["val_top1"][tuned["best_epoch"]] == max(tuned["val_top1"])
    report = evaluate(run, deduped)
    assert report.results["ensemble"]["top1"] > 40 and "top (the last blocks fine-tuned" in report.markdown
    # The tuned blocks are the model's: its last blocks differ from the ImageNet body's, its first do not.
    bundle = torch.load(run / "model.pt", weights_only=True)["members"]["efficientnet_lite0"]["state_dict"]
    imagenet = get_member("efficientnet_lite0").build(2, None, True).state_dict()
    last = max(int(k.split(".")[1]) for k in bundle if k.startswith("_blocks."))

    def weight(state: dict[str, torch.Tensor], block: int) -> torch.Tensor:
        return state[f"_blocks.{block}._project_conv.weight"]

    assert tuned["best_epoch"] == 0 or not torch.equal(weight(bundle, last), weight(imagenet, last))
    assert torch.equal(weight(bundle, 0), weight(imagenet, 0))
    # A retrain decodes no photo it has seen: the inputs of the top are kept on disk, and the tuned
    # body's features of every photo, test photos too, come from them.
    again = train(TrainConfig(mode="top", top_blocks=2, top_epochs=2, force=True, **SMALL), deduped)  # type: ignore[arg-type]
    assert _history(again)["efficientnet_lite0"]["embedded"] == 0
    assert evaluate(again, deduped).results["ensemble"]["top1"] > 40
    # A budget too short for any epoch takes no view either: the epochs come first.
    rushed = train(TrainConfig(mode="top", top_blocks=1, budget_minutes=0.001, **SMALL), deduped)  # type: ignore[arg-type]
    assert _history(rushed)["efficientnet_lite0"]["top_tune"]["views"] == 0


def test_a_top_mode_retrain_continues_from_production_unless_its_photos_moved_to_test(deduped: Layout) -> None:
    _accept(deduped)
    config = TrainConfig(mode="top", top_blocks=2, top_epochs=3, top_retrain_epochs=1, **SMALL)  # type: ignore[arg-type]
    first = train(config, deduped)
    promote(first, deduped)
    snapshot = make_snapshot(deduped, 0.2, 0.2, 0, config.min_photos, config.train_on_boxes)
    retrained = _history(train_snapshot(snapshot, config, deduped))["efficientnet_lite0"]["top_tune"]
    # Production's top was tuned in top mode: the retrain goes on from it, for one epoch, slower.
    assert retrained["warm_from"] == first.name and len(retrained["val_top1"]) == 2
    first_lr = _history(first)["efficientnet_lite0"]["top_tune"]["lr"]
    assert retrained["lr"] < first_lr and retrained["lr"] == pytest.approx(first_lr * config.top_retrain_lr_scale)
    # One photo production trained on is a test photo now: its top would have seen the test.
    moved = [replace(e, split="test") if i == 0 else e for i, e in enumerate(snapshot.split("train"))]
    shuffled = replace(snapshot, examples=moved + snapshot.split("val") + snapshot.split("test"))
    cold = _history(train_snapshot(shuffled, config, deduped))["efficientnet_lite0"]["top_tune"]
    assert cold["warm_from"] == "" and len(cold["val_top1"]) == 4 and cold["lr"] == first_lr


def test_a_cpu_gets_top_mode_and_a_gpu_full_mode_by_default() -> None:
    assert resolve_mode(TrainConfig(), torch.device("cpu")) == "top"
    assert resolve_mode(TrainConfig(), torch.device("cuda")) == "full"
    assert resolve_mode(TrainConfig(mode="quick"), torch.device("cpu")) == "quick"


def _photos_of(folder: Path, seed: int, n: int) -> None:
    """`n` photos of random texture: no two alike, so dedupe keeps each."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((160, 120), Image.Resampling.BICUBIC).save(folder / f"{i}.jpg")


def test_an_existing_collection_imports_through_dedupe_and_trains(
    tmp_path: Path, layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    collection = tmp_path / "ours"
    _photos_of(collection / "red-lamp", 1, 8)
    _photos_of(collection / "blue-chair", 2, 8)
    (collection / "blue-chair" / "copy.jpg").write_bytes((collection / "blue-chair" / "0.jpg").read_bytes())
    (collection / "red-lamp" / "cut.jpg").write_bytes((collection / "red-lamp" / "1.jpg").read_bytes()[:200])
    assert main(["import", str(collection), "--data-dir", str(layout.data_dir)]) == 0
    out = capsys.readouterr().out
    assert "imported 17 of 18 photos of 2 products (16 new to the store, 1 already there)" in out
    assert f"refused {collection / 'red-lamp' / 'cut.jpg'}: not a decodable image" in out
    with open_manifest(layout) as m:
        assert count(m, "labels", "decision = 'accept' AND reason LIKE 'imported from %'") == 16
        assert count(m, "sources", "photo_url LIKE 'file://%'") == 17  # the copy keeps its own provenance
        assert count(m, "curation", "is_kept = 1") == 16  # deduped on the way in
    snapshot = make_snapshot(layout, 0.2, 0.2, seed=0, min_photos=5)
    assert [c.name for c in snapshot.classes] == ["blue-chair", "red-lamp"] and len(snapshot.examples) == 16

    # A CSV names photos and products, relative to where it lies; the photos known already stay once.
    listing = tmp_path / "more.csv"
    with listing.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "product", "name", "url"])
        w.writerow(["ours/red-lamp/0.jpg", "red-lamp", "Red lamp", "https://shop.example/red-lamp"])
    again = import_collection(listing, layout)
    assert (again.photos, again.stored, again.already_known) == (1, 0, 1)
    (tmp_path / "bad.csv").write_text("file,sku\nx.jpg,1\n")
    with pytest.raises(BadCollection, match="columns path and product"):
        import_collection(tmp_path / "bad.csv", layout)
    with pytest.raises(BadCollection, match="no photos found"):
        import_collection(tmp_path / "ours" / "red-lamp", layout)
    # A product link a shopper's page would follow: only a web address, never script.
    for url in ("javascript:alert(document.cookie)", "data:text/html,<script>x</script>", "//shop.example/x"):
        (tmp_path / "links.csv").write_text(f"path,product,url\nours/red-lamp/0.jpg,red-lamp,{url}\n")
        with pytest.raises(BadCollection, match=r"line 2: url .* is not an http"):
            import_collection(tmp_path / "links.csv", layout)


def test_an_import_reads_only_regular_files_of_a_photos_size(tmp_path: Path, layout: Layout) -> None:
    _photos_of(tmp_path / "ours" / "red-lamp", 1, 2)
    os.mkfifo(tmp_path / "fifo.jpg")  # read for ever, were it read
    big = tmp_path / "big.jpg"
    with big.open("wb") as f:  # sparse: no disk spent, but its size is what counts
        f.truncate(60_000_000)
    listing = tmp_path / "hostile.csv"
    with listing.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "product"])
        w.writerows([["fifo.jpg", "red-lamp"], ["/dev/zero", "red-lamp"], ["big.jpg", "red-lamp"]])
        w.writerow(["ours/red-lamp/0.jpg", "red-lamp"])
    summary = import_collection(listing, layout)
    assert (summary.photos, summary.stored) == (4, 1)
    reasons = {Path(path).name: why for path, why in summary.refused.items()}
    assert "not a regular file" in reasons["fifo.jpg"] and "not a regular file" in reasons["zero"]
    assert "holds 60,000,000 bytes: at most 50,000,000" in reasons["big.jpg"]


@pytest.mark.parametrize("catalog", ["yes", ""])
def test_an_imports_catalog_photos_of_two_products_stay_two_products(
    tmp_path: Path, layout: Layout, catalog: str
) -> None:
    # The shop's own photos on white: one chair in two colours hashes alike, yet they are two products.
    for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        photo = Image.new("RGB", (320, 320), "white")
        ImageDraw.Draw(photo).rectangle((90, 60, 230, 280), fill=colour)
        photo.save(tmp_path / f"{name}.jpg", quality=95)
    listing = tmp_path / "catalog.csv"
    listing.write_text(f"path,product,catalog\nred.jpg,red-chair,{catalog}\nblue.jpg,blue-chair,{catalog}\n")
    assert main(["import", str(listing), "--data-dir", str(layout.data_dir)]) == 0
    with open_manifest(layout) as m:
        assert count(m, "sources", "review_id = 'catalog'") == (2 if catalog else 0)
        # Unmarked, they look like one photo posted under two products, and neither trains.
        assert count(m, "curation", "is_kept = 1 AND is_ambiguous = 0") == (2 if catalog else 0)
    (tmp_path / "bad.csv").write_text("path,product,catalog\nred.jpg,red-chair,maybe\n")
    with pytest.raises(BadCollection, match="line 2: catalog maybe is neither yes nor no"):
        import_collection(tmp_path / "bad.csv", layout)
