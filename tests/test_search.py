"""Search as a shopper meets it: every product findable, every object answered, the web page.

One shop is crawled, labelled (all products but one accepted), trained and indexed once for the
module: the product left out of training must still be found through the index.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from distributed import LocalCluster
from PIL import Image, ImageDraw, ImageOps
from prefect import flow
from prefect_dask import DaskTaskRunner

from core.boxes import crop
from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.settings import TrainConfig
from demo.shop.faults import bomb_png
from flows.dask import cluster_embedder
from reviewlens.cli import main
from search.catalog_map import index_catalog_map
from search.finder import NEIGHBOURS, SCREENED, Finder
from search.indexing import IndexSummary, Product, index_folder, update_index
from search.objects import Scored, grid_regions, proposals, select
from search.product_index import Entry, IndexMismatch, ProductIndex
from tests.conftest import free_port
from tests.db import run, run_many
from tests.procs import headless_chromium, needs_chromium
from training.bundle import Ensemble
from training.calibrate import SURE_FLOOR
from training.pretrained import pretrained_ensemble
from training.train import train

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("REVIEWLENS_TEST_ARTIFACTS", ROOT / "test-artifacts"))
SMALL = {"members": ("efficientnet_lite0",), "image_size": 64, "batch_size": 16, "head_epochs": 20}


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 20), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_index_is_exact_when_small_approximate_past_its_size_and_saved_whole(tmp_path: Path) -> None:
    dim = 32
    vectors = _clustered(4000, dim, 0)
    entries = [Entry(f"{i:064x}", f"p{i // 20}") for i in range(4000)]
    index = ProductIndex(dim, "run-1", approximate_from=3000, probe=16)
    assert index.add(entries[:2000], vectors[:2000]) == 2000 and not index.approximate
    assert index.add(entries[:2000], vectors[:2000]) == 0  # keyed by content hash: nothing twice
    _, rows = index.search(vectors[:5], 1)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]  # exact: each photo is its own nearest
    assert index.add(entries, vectors) == 2000 and index.approximate  # crossed its size: rebuilt as IVF
    queries = _clustered(200, dim, 1)
    exact = (queries @ vectors.T).argsort(1)[:, ::-1][:, :10]
    _, approx = index.search(queries, 10)
    assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)]) > 0.9

    index.save(tmp_path / "index")
    # Loaded, the approximate index is faiss's own as saved: no clustering again.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ProductIndex, "_build_ivf", lambda _: pytest.fail("clustered again on load"))
        again = ProductIndex.load(tmp_path / "index")
    assert again.model_version == "run-1" and len(again) == 4000 and again.approximate
    assert (again.search(queries, 10)[1] == approx).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no half-written folder left
    # A save appends what is new as a shard; what was saved stays as written.
    first_shard = tmp_path / "index" / "shards" / "000000.npy"
    written = first_shard.stat().st_mtime_ns
    more = _clustered(100, dim, 2)
    again.add([Entry(f"{i:064x}", "p-new") for i in range(4000, 4100)], more)
    again.save(tmp_path / "index", approximate_index=False)  # as a run does after each batch
    assert first_shard.stat().st_mtime_ns == written
    assert sorted(p.name for p in (tmp_path / "index" / "shards").glob("*.npy")) == ["000000.npy", "000001.npy"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ProductIndex, "_build_ivf", lambda _: pytest.fail("clustered again on load"))
        grown = ProductIndex.load(tmp_path / "index")  # the rows after the saved faiss index are added
    assert len(grown) == 4100 and grown.search(more[:5], 1)[1][:, 0].tolist() == list(range(4000, 4005))
    (tmp_path / "index" / "shards" / "000001.tsv").write_text("deadbeef\tp0\n")
    with pytest.raises(IndexMismatch, match="damaged"):
        ProductIndex.load(tmp_path / "index")
    with pytest.raises(IndexMismatch, match="run `reviewlens index`"):
        ProductIndex.load(tmp_path / "nothing-here")


def test_catalog_photos_are_kept_marked_and_searched_apart(tmp_path: Path) -> None:
    dim = 16
    vectors = _clustered(300, dim, 3)
    # Every tenth photo is a product's catalog photo; the rest are customers'.
    entries = [Entry(f"{i:064x}", f"p{i // 10}", catalog=i % 10 == 0) for i in range(300)]
    index = ProductIndex(dim, "run-1")
    index.add(entries[:150], vectors[:150])
    index.save(tmp_path / "index")
    index.add(entries[150:], vectors[150:])
    index.save(tmp_path / "index", approximate_index=False)
    again = ProductIndex.load(tmp_path / "index")
    assert [e.catalog for e in again.entries] == [e.catalog for e in entries] and again.catalog_photos == 30
    # Among the catalog photos alone, exactly, however near the customers' photos are.
    similarity, rows = again.search_catalog(vectors[:40], 5)
    assert all(entries[r].catalog for r in rows.ravel())
    catalog_rows = np.arange(0, 300, 10)
    exact = catalog_rows[np.argsort(-(vectors[:40] @ vectors[catalog_rows].T), axis=1)[:, :5]]
    assert (rows == exact).all() and similarity[0, 0] == pytest.approx(1.0, abs=1e-5)
    # An index saved before photos were marked reads as customers' photos only.
    shard = tmp_path / "index" / "shards" / "000000.tsv"
    shard.write_text("".join(f"{e.key}\t{e.product_id}\n" for e in entries[:150]))
    older = ProductIndex.load(tmp_path / "index")
    assert older.catalog_photos == 15 and not any(e.catalog for e in older.entries[:150])


def test_a_product_known_by_its_catalog_photo_alone_is_found_among_customers_photos(tmp_path: Path) -> None:
    ensemble = pretrained_ensemble(TrainConfig(mode="quick", **SMALL))  # type: ignore[arg-type]
    assert ensemble.embedding is not None
    width = int(ensemble.embedding.mean.shape[0])

    def photo(similarity: float, axis: int) -> torch.Tensor:
        """A feature vector at `similarity` to the query (the first axis)."""
        v = torch.zeros(width)
        v[0], v[axis] = similarity, math.sqrt(1 - similarity**2)
        return v

    # The query shows product "new", known by its catalog photo only (0.5 like the query); 150
    # customers' photos of 15 other products are all nearer (0.6 to 0.7), more than the index's
    # nearest neighbours the Finder reads.
    assert NEIGHBOURS < 150
    customers = [photo(0.6 + 0.1 * i / 150, 2 + i) for i in range(150)]
    vectors = ensemble.embedding({"efficientnet_lite0": torch.stack([photo(0.5, 1), *customers])}).numpy()
    products = {p: Product(p, p, "") for p in ["new", *(f"p{i}" for i in range(15))]}
    query = {"efficientnet_lite0": photo(1.0, 1)[None, :]}

    def best_three(marked: bool, shift: float) -> list[str]:
        index = ProductIndex(vectors.shape[1], ensemble.version)
        entries = [Entry("c" * 64, "new", catalog=marked), *(Entry(f"{i:064x}", f"p{i % 15}") for i in range(150))]
        index.add(entries, vectors)
        assert ensemble.embedding is not None
        ensemble.embedding.catalog_shift = shift
        answer = Finder(ensemble, index, products).answer_features(query, k=3)[0]
        return [m.product.product_id for m in answer.best.matches]

    assert "new" not in best_three(marked=False, shift=0.0)  # beyond the nearest photos read: never seen
    assert "new" not in best_three(marked=True, shift=0.0)  # searched apart, but less similar than all
    # Its similarity in customer photos' terms (training/embedding.py): 0.8, above every customer's.
    assert best_three(marked=True, shift=0.3)[0] == "new"


def test_before_any_training_the_index_fits_its_catalog_photos_map_on_its_own_photos() -> None:
    ensemble = pretrained_ensemble(TrainConfig(mode="quick", **SMALL))  # type: ignore[arg-type]
    assert ensemble.embedding is not None
    width = int(ensemble.embedding.mean.shape[0])
    generator = torch.Generator().manual_seed(0)

    def unit(n: int = 1) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(n, width, generator=generator), dim=1)

    # A shop's photos share a look (the room, the light), its catalog photos another (the white).
    shop, white = unit()[0], unit()[0]
    centres = {f"p{i}": unit()[0] for i in range(30)} | {"new": unit()[0]}

    def customers(product: str, n: int) -> torch.Tensor:
        return 0.7 * shop + 0.7 * centres[product] + 0.25 * unit(n)

    def catalog(product: str) -> torch.Tensor:
        return 0.5 * centres[product] + 0.9 * white + 0.2 * unit()[0]

    # 30 products with a catalog photo and 6 customers' photos from 3 reviews; "new" has its
    # catalog photo alone.
    entries, features, sources = [], [], {}
    for product in centres:
        entries.append(Entry(f"{product}-catalog", product, catalog=True))
        features.append(catalog(product)[None, :])
        if product != "new":
            entries += [Entry(f"{product}-{i}", product) for i in range(6)]
            features.append(customers(product, 6))
            sources |= {f"{product}-{i}": f"{product}-review-{i // 2}" for i in range(6)}
    vectors = ensemble.embedding({"efficientnet_lite0": torch.cat(features)}).numpy()
    index = ProductIndex(vectors.shape[1], ensemble.version)
    index.add(entries, vectors)
    products = {p: Product(p, p, "") for p in centres}
    asked = {p: customers(p, 4) for p in ["new", "p0", "p1", "p2"]}  # shoppers' new photos

    def found(product: str) -> int:
        finder = Finder(ensemble, index, products)
        answers = finder.answer_features({"efficientnet_lite0": asked[product]}, k=1)
        return sum(a.best.matches[0].product.product_id == product for a in answers)

    assert found("new") == 0  # as they are, other products' customers' photos are all nearer
    scale, shift = index_catalog_map(index, sources)
    ensemble.embedding.catalog_scale, ensemble.embedding.catalog_shift = scale, shift
    assert found("new") == 4  # in customer photos' terms, its catalog photo is the nearest
    assert [found(p) for p in ["p0", "p1", "p2"]] == [4, 4, 4]  # and products with customers keep theirs
    # A shop of catalog photos alone has nothing to fit it on: no map.
    alone = ProductIndex(vectors.shape[1], ensemble.version)
    alone.add([e for e in entries if e.catalog], vectors[[n for n, e in enumerate(entries) if e.catalog]])
    assert index_catalog_map(alone, {}) == (1.0, 0.0)


def test_regions_cover_the_frame_and_selection_keeps_one_box_per_object() -> None:
    regions = grid_regions(640, 320)
    assert (0.0, 0.0, 0.5, 1.0) in regions and (0.5, 0.0, 1.0, 1.0) in regions  # each half of a wide photo
    assert all(0 <= v <= 1 for box in regions for v in box)
    left = Scored((0.0, 0.0, 0.5, 1.0), "lamp", 0.9)
    left_again = Scored((0.02, 0.0, 0.52, 1.0), "chair", 0.8)  # the same box: one object
    inside_left = Scored((0.1, 0.2, 0.3, 0.6), "lamp", 0.85)  # a part of the lamp
    right = Scored((0.5, 0.0, 1.0, 1.0), "chair", 0.7)
    unsure = Scored((0.25, 0.0, 0.75, 1.0), "vase", 0.2)
    assert select([unsure, right, inside_left, left_again, left], 0.5, 8) == [left, right]
    assert select([unsure], 0.5, 8) == [unsure]  # the best guess is answered even when unsure
    whole = Scored((0.0, 0.0, 1.0, 1.0), "sofa", 0.95)  # a sure whole photo comes first ...
    assert select([whole, inside_left, right], 0.5, 8) == [whole, inside_left, right]
    several = Scored(whole.box, "sofa", 0.6)  # ... unless parts are surer of two other products
    assert select([several, inside_left, right], 0.5, 8) == [inside_left, right]
    assert select([Scored(whole.box, "sofa", 0.4), right], 0.5, 8) == [right]


@dataclass(frozen=True)
class Searchable:
    layout: Layout
    model: Path
    left_out: str  # the product trained on none of its photos
    photos: dict[str, list[Path]]  # the stored photos of each product
    summary: IndexSummary


@pytest.fixture(scope="module")
def searchable(deduped_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Searchable]:
    layout = Layout(tmp_path_factory.mktemp("search") / "data", database_url=None)
    shutil.copytree(deduped_state, layout.data_dir)
    with open_manifest(layout) as m:
        rows = run(m, "SELECT sha256, path, product_id FROM usable_photos ORDER BY product_id, sha256")
        photos: dict[str, list[tuple[str, Path]]] = {}
        for sha, path, product in rows:
            photos.setdefault(product, []).append((sha, layout.store_dir / path))
        left_out = sorted(photos)[-1]
        # Annotators accepted every product's photos but one product's, which they have not reached.
        run_many(
            m,
            "INSERT INTO labels (sha256, project_id, task_id, pushed_at, decision, decided_at) "
            "VALUES (?, 1, 1, ?, 'accept', ?)",
            [(sha, utc_now(), utc_now()) for product, ps in photos.items() if product != left_out for sha, _ in ps],
        )
    model = train(TrainConfig(mode="quick", **SMALL), layout)  # type: ignore[arg-type]
    summary = update_index(layout, Ensemble.load(model))
    yield Searchable(layout, model, left_out, {p: [path for _, path in ps] for p, ps in photos.items()}, summary)


def test_a_product_never_trained_on_is_found_through_the_index(searchable: Searchable) -> None:
    s = searchable
    ensemble = Ensemble.load(s.model)
    assert s.left_out not in [c.product_id for c in ensemble.classes]
    assert s.summary.products == len(s.photos) and s.summary.photos == sum(map(len, s.photos.values()))
    finder = Finder.load(s.layout, s.model)
    # A new photo of it (the stored one mirrored and cut, so not a photo the index holds).
    hits = 0
    for path in s.photos[s.left_out][:5]:
        photo = ImageOps.mirror(Image.open(path).convert("RGB"))
        photo = photo.crop((5, 5, photo.width - 5, photo.height - 5))
        hits += finder.answer([photo], objects=False)[0].best.matches[0].product.product_id == s.left_out
    assert hits >= 4
    # The classifier and the index agree on products both know.
    agree = 0
    for product, paths in s.photos.items():
        if product != s.left_out:
            agree += (
                finder.answer([Image.open(paths[0]).convert("RGB")], objects=False)[0]
                .best.matches[0]
                .product.product_id
                == product
            )
    assert agree >= len(s.photos) - 2


def test_index_adds_only_new_photos_and_starts_again_for_another_model(searchable: Searchable) -> None:
    s = searchable
    assert main(["index", "--data-dir", str(s.layout.data_dir), "--model", str(s.model)]) == 0
    again = update_index(s.layout, Ensemble.load(s.model))
    assert again.added == 0 and again.photos == s.summary.photos
    with open_manifest(s.layout) as m:  # a person refuses a photo: it leaves the search
        run(m, "UPDATE labels SET decision = 'reject' WHERE sha256 = (SELECT MIN(sha256) FROM labels)")
    s.photos[s.left_out][-1].write_bytes(b"overwritten")  # a stored file damaged since it was checked
    rebuilt = update_index(s.layout, Ensemble.load(s.model), rebuild=True)
    assert (rebuilt.photos, rebuilt.left_out) == (s.summary.photos - 2, 1) and rebuilt.added == rebuilt.photos
    s.photos[s.left_out].pop()


def _side_by_side(a: Path, b: Path) -> Image.Image:
    canvas = Image.new("RGB", (512, 256), "white")
    for i, path in enumerate((a, b)):
        img = ImageOps.fit(Image.open(path).convert("RGB"), (256, 256))
        canvas.paste(img, (256 * i, 0))
    return canvas


def _answered_alone(finder: Finder, path: Path, product: str) -> bool:
    """Named first, and an object by the rule a region is held to: its three likeliest products
    hold a sure share of the probability (search/finder.py)."""
    answer = finder.answer([Image.open(path).convert("RGB")], objects=False)[0].best
    held = sum(m.score for m in answer.matches[: finder.object_top])
    return held >= finder.threshold and answer.matches[0].product.product_id == product


def test_predict_answers_every_object_in_a_photo_as_text_json_and_a_picture(
    searchable: Searchable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = searchable
    finder = Finder.load(s.layout, s.model)
    products = sorted(s.photos)
    # Photos the model answers right and sure one at a time: two side by side must both be found.
    known = {
        p: next(path for path in s.photos[p] if _answered_alone(finder, path, p))
        for p in products
        if any(_answered_alone(finder, path, p) for path in s.photos[p][:8])
    }
    products = sorted(known)
    assert len(products) >= 4
    found_both = 0
    for i in range(3):
        first, second = products[i], products[-1 - i]
        picture = _side_by_side(known[first], known[second])
        picture.save(tmp_path / f"pair{i}.jpg")
        objects = finder.answer([picture])[0].objects
        left = [o for o in objects if (o.box[0] + o.box[2]) / 2 < 0.5]
        right = [o for o in objects if (o.box[0] + o.box[2]) / 2 >= 0.5]
        found_both += bool(
            left
            and right
            and first in [m.product.product_id for m in left[0].matches]
            and second in [m.product.product_id for m in right[0].matches]
        )
    assert found_both >= 2

    args = ["predict", str(tmp_path / "pair0.jpg"), "--data-dir", str(s.layout.data_dir), "--model", str(s.model)]
    assert main([*args, "--json", "--picture", str(tmp_path / "pair0.png")]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["problem"] is None and len(answer["objects"]) >= 2
    for found in answer["objects"]:
        assert len(found["box"]) == 4 and len(found["products"]) == 3
        assert {"product_id", "name", "url", "score"} <= set(found["products"][0])
    with Image.open(tmp_path / "pair0.png") as drawn:
        assert drawn.format == "PNG" and drawn.size == (512, 256)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "index of " in out and " objects" in out and "object 1 at (" in out and "  1. " in out


def test_the_whole_ensemble_searches_the_regions_its_cheapest_member_screened(
    searchable: Searchable, tmp_path: Path
) -> None:
    layout = Layout(tmp_path / "data", database_url=None)
    shutil.copytree(searchable.layout.data_dir, layout.data_dir, ignore=shutil.ignore_patterns("runs", "index"))
    two = {**SMALL, "members": ("efficientnet_lite0", "efficientnet_lite1")}
    model = train(TrainConfig(mode="quick", **two), layout)  # type: ignore[arg-type]
    update_index(layout, Ensemble.load(model))
    finder = Finder.load(layout, model)
    photos = [paths[0] for paths in searchable.photos.values()]
    picture = _side_by_side(photos[0], photos[-1])
    everywhere = proposals(picture, finder.detector)
    boxes, features = finder._screened(picture, everywhere)
    # The photo itself and the SCREENED regions, no more, each with what every member gives it alone.
    assert boxes[0] == everywhere[0] and len(boxes) == SCREENED + 1 < len(everywhere)
    assert set(boxes) <= set(everywhere)
    alone = finder.ensemble.image_features([crop(picture, b) for b in boxes])
    assert set(features) == set(alone) == {"efficientnet_lite0", "efficientnet_lite1"}
    assert all(torch.allclose(features[m], alone[m], atol=1e-5) for m in alone)
    # The regions kept are those Lite0, the cheaper, is surest of.
    every = finder.ensemble.image_features([crop(picture, b) for b in everywhere], members=["efficientnet_lite0"])
    with torch.inference_mode():
        probs = finder.ensemble.member_probs(finder.ensemble.logits_of_features(every))["efficientnet_lite0"]
    held = probs.topk(3, 1).values.sum(1)[1:]
    assert min(float(held[everywhere.index(b) - 1]) for b in boxes[1:]) >= float(held.sort().values[-SCREENED])
    (answer,) = finder.answer([picture])
    assert answer.objects and all(o.box in boxes for o in answer.objects)
    # A member the model lacks is an error, not features that quietly leave it out.
    with pytest.raises(ValueError, match="no member efficientnet_lite2"):
        finder.ensemble.image_features([picture], members=["efficientnet_lite2"])


def test_predict_on_a_folder_prints_each_answer_as_it_comes(searchable: Searchable, tmp_path: Path) -> None:
    s = searchable
    folder = tmp_path / "folder"
    folder.mkdir()
    photos = [paths[0] for paths in list(s.photos.values())[:4]]
    for n, photo in enumerate(photos):
        shutil.copy(photo, folder / f"{n}.jpg")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reviewlens.cli", "predict", str(folder), "--data-dir", str(s.layout.data_dir),
         "--model", str(s.model)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = [proc.stdout.readline(), proc.stdout.readline()]  # the model's line, then the first photo's
    # The first answer is out while the other photos are still being looked at.
    running_after_first = proc.poll() is None
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    assert lines[0].startswith("model ") and lines[1].startswith(str(folder / "0.jpg"))
    assert running_after_first
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith(str(folder))] == [
        str(folder / f"{n}.jpg") for n in range(4)
    ]
    assert "%" in out and "score 0.000" not in out  # shares a shopper reads


def _chart() -> Image.Image:
    """A bar chart, as a shopper might upload by mistake: axes, bars, grid lines, no product."""
    chart = Image.new("RGB", (480, 360), "white")
    draw = ImageDraw.Draw(chart)
    for y in range(40, 320, 40):
        draw.line((50, y, 460, y), fill=(220, 220, 220))
    draw.line((50, 20, 50, 320), fill="black", width=2)
    draw.line((50, 320, 460, 320), fill="black", width=2)
    for i, height in enumerate((120, 220, 90, 260, 180, 140)):
        draw.rectangle((70 + i * 65, 320 - height, 110 + i * 65, 319), fill=(30, 90, 200) if i % 2 else (230, 120, 40))
        draw.text((75 + i * 65, 330), f"Q{i + 1}", fill="black")
    return chart


def test_a_photo_unlike_any_product_is_not_sure_and_a_product_photo_is(searchable: Searchable) -> None:
    s = searchable
    finder = Finder.load(s.layout, s.model)
    assert finder.threshold >= SURE_FLOOR
    wall = Image.new("RGB", (400, 300), (236, 232, 224))
    for picture in (_chart(), wall):
        assert not finder.answer([picture], objects=False)[0].best.sure
        assert not any(found.sure for found in finder.answer([picture])[0].objects)
    # A product's own photo whose score clears the threshold stays sure: the look-alike rule
    # refuses charts and walls, not the shop's photos ("not sure" is not simply always said).
    answers = []
    for paths in s.photos.values():
        for path in paths[:3]:  # new photos of the products: the stored ones mirrored and cut
            photo = ImageOps.mirror(Image.open(path).convert("RGB"))
            answers.append(
                finder.answer([photo.crop((5, 5, photo.width - 5, photo.height - 5))], objects=False)[0].best
            )
    confident = [a for a in answers if a.matches[0].score >= finder.threshold]
    assert confident and all(a.sure for a in confident)


@pytest.fixture(scope="module")
def server(searchable: Searchable) -> Iterator[str]:
    port = free_port()
    data, model = str(searchable.layout.data_dir), str(searchable.model)
    command = ["serve", "--port", str(port), "--data-dir", data, "--model", model]
    proc = subprocess.Popen([sys.executable, "-m", "reviewlens.cli", *command], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("reviewlens serve did not answer within 2 minutes")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_page_answers_bad_uploads_with_a_reason_and_keeps_serving(
    server: str, searchable: Searchable, tmp_path: Path
) -> None:
    find = f"{server}/api/find"
    cases = {
        b"": (400, "no photo was sent"),
        b"<html>not a photo</html>": (400, "not a readable image"),
        bomb_png(): (400, "too many pixels"),
        b"\xff" * 26_000_000: (413, "at most"),
        # Small files claiming images that cost gigabytes to decode and cut into views.
        _png(tmp_path, (30_000, 1)): (400, "more than 20 times as long"),
        _png(tmp_path, (6_400, 6_250)): (400, "held whole, at most 16,000,000"),
    }
    for body, (status, reason) in cases.items():
        response = requests.post(find, data=body, timeout=60)
        assert (response.status_code, reason in response.json()["error"]) == (status, True), response.text
        assert " at 0x" not in response.text  # no heap address of the server's
    Image.new("RGB", (1, 1), "red").save(tmp_path / "dot.png")
    dot = requests.post(find, data=(tmp_path / "dot.png").read_bytes(), timeout=60)
    # A 1-pixel photo: an answer, and one the page says it is not sure of.
    assert dot.ok and [o["sure"] for o in dot.json()["objects"]] == [False]
    blank = Image.new("RGB", (300, 200), (200, 200, 200))
    blank.save(tmp_path / "blank.jpg")
    nothing = requests.post(find, data=(tmp_path / "blank.jpg").read_bytes(), timeout=60).json()
    assert [o["sure"] for o in nothing["objects"]] == [False]  # no product in it: says it is not sure
    finder = Finder.load(searchable.layout, searchable.model)
    photo = next(p for p in searchable.photos[searchable.left_out] if _answered_alone(finder, p, searchable.left_out))
    good = requests.post(find, data=photo.read_bytes(), timeout=60)
    assert good.ok and good.json()["objects"][0]["products"][0]["product_id"] == searchable.left_out
    shown = requests.get(f"{server}/products/{searchable.left_out}/photo", timeout=10)
    assert shown.ok and shown.headers["content-type"].startswith("image/")
    assert requests.get(f"{server}/products/..%2F..%2Fmanifest.sqlite/photo", timeout=10).status_code == 404


def _png(folder: Path, size: tuple[int, int]) -> bytes:
    """A PNG of one colour: a few kilobytes however many pixels it claims."""
    path = folder / f"{size[0]}x{size[1]}.png"
    Image.new("1", size).save(path, optimize=True)
    return path.read_bytes()


@needs_chromium
def test_a_shopper_drops_a_photo_in_a_real_browser_and_sees_its_products(
    server: str, searchable: Searchable, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    finder = Finder.load(searchable.layout, searchable.model)
    first, second = (
        next(p for p in searchable.photos[product] if _answered_alone(finder, p, product))
        for product in sorted(searchable.photos)[1:3]
    )
    pair = tmp_path / "pair.jpg"
    _side_by_side(first, second).save(pair)
    browser = headless_chromium(tmp_path / "chromium", (1280, 900))
    try:
        browser.get(server)
        browser.find_element(By.ID, "photo").send_keys(str(pair))
        WebDriverWait(browser, 120).until(seen.text_to_be_present_in_element((By.ID, "status"), "found"))
        boxes = browser.find_elements(By.CSS_SELECTOR, "#frame .box")
        sections = browser.find_elements(By.CSS_SELECTOR, "#objects .object")
        assert len(boxes) == len(sections) >= 2
        links = [a.get_attribute("href") for a in sections[0].find_elements(By.TAG_NAME, "a")]
        assert len(links) == 3 and all(link and link.startswith("http") for link in links)
        shown = sections[0].find_elements(By.TAG_NAME, "img")
        assert all(browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in shown)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "serve-page.png"))
        # A file that is no photo: the page says why.
        bad = tmp_path / "notes.jpg"
        bad.write_text("not a photo")
        browser.find_element(By.ID, "photo").send_keys(str(bad))
        WebDriverWait(browser, 60).until(seen.text_to_be_present_in_element((By.ID, "status"), "not a readable"))
        assert "error" in (browser.find_element(By.ID, "status").get_attribute("class") or "")
    finally:
        browser.quit()
    assert (ARTIFACTS / "serve-page.png").stat().st_size > 10_000


def test_the_index_embedded_on_a_dask_cluster_is_this_machines(searchable: Searchable) -> None:
    """Feature extraction as Prefect tasks on Prefect's Dask task runner, over a local cluster of
    two worker processes: the same entries, in the same order, with the same vectors."""
    s = searchable
    here = ProductIndex.load(index_folder(s.layout))
    shutil.rmtree(s.layout.cache_dir)  # the workers extract every feature again, not read them
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:

        @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        def index_on_the_cluster() -> IndexSummary:
            embed = cluster_embedder(s.layout, s.model)
            return update_index(s.layout, Ensemble.load(s.model), rebuild=True, embed=embed, batch_size=32)

        summary = index_on_the_cluster()
    there = ProductIndex.load(index_folder(s.layout))
    assert summary.added == len(here) > 64 and there.entries == here.entries
    assert np.abs(there.vectors - here.vectors).max() < 1e-2
    assert (np.argmax(there.vectors @ here.vectors.T, axis=1) == np.arange(len(here))).all()
