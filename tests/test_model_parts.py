"""The model's parts on their own: calibration, device augmentation, the photo and feature caches."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from models import efficientnet_lite
from training.augment import augment, normalize
from training.calibrate import SURE_FLOOR, calibrate, ensemble_probs, fit_temperature, fit_weights, sure_threshold
from training.confusion_image import LEGEND_HEIGHT, RIGHT, WRONG, shade, write_confusion_png
from training.embedding import MIN_CATALOG_FIT, Embedding, fit_catalog_map, merge
from training.features import VIEWS, FeatureStore
from training.finetune import ProxyLoss, Schedule, finetune, warmup_cosine
from training.loading import PhotoRef, Photos
from training.members import get_member
from training.metrics import expected_calibration_error, macro_f1
from training.photo_cache import PhotoCache
from training.train import fits


def test_temperature_recovers_how_overconfident_logits_are() -> None:
    gen = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 10, generator=gen) * 2
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=gen).squeeze(1)
    # A model three times too sure of itself: the fitted temperature undoes it.
    assert fit_temperature(true_logits * 3, labels) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.1)


def test_weights_favour_the_member_that_knows() -> None:
    labels = torch.arange(100) % 5
    knows = torch.nn.functional.one_hot(labels, 5).float() * 0.8 + 0.04
    guesses = torch.full((100, 5), 0.2)
    weights = fit_weights([guesses, knows], labels)
    assert weights[1] > 0.8 and math.isclose(sum(weights), 1.0)
    assert fit_weights([knows, knows], labels) == [0.5, 0.5]  # no gain: equal weights


def test_not_sure_is_the_lowest_score_that_keeps_the_asked_precision_with_a_floor() -> None:
    # Every answer is product 0, with top scores 0.9 down to 0.55; the four surest are right.
    scores = (0.9, 0.8, 0.7, 0.6, 0.55)
    probs = torch.tensor([[s, (1 - s) / 2, (1 - s) / 2] for s in scores])
    labels = torch.tensor([0, 0, 0, 0, 1])
    assert sure_threshold(probs, labels, 1.0) == pytest.approx(0.6)
    # 4 of 5 right over all: the weakest answer validation saw, not 0 (a chart would be sure)
    assert sure_threshold(probs, labels, 0.8) == pytest.approx(0.55)
    assert sure_threshold(probs, torch.ones(5, dtype=torch.long), 0.5) == 1.0  # never that precise: never sure
    # All right, however weakly: never sure below even odds.
    weak = torch.tensor([[0.4, 0.3, 0.3], [0.45, 0.3, 0.25]])
    assert sure_threshold(weak, torch.tensor([0, 0]), 0.9) == SURE_FLOOR


def test_calibration_of_an_ensemble_lowers_validation_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 8, (600,), generator=gen)
    signal = torch.nn.functional.one_hot(labels, 8).float()
    logits = {
        name: ((signal * 2 + torch.randn(600, 8, generator=gen)) * scale)[:, None].expand(600, 2, 8)
        for name, scale in (("a", 4.0), ("b", 0.5))
    }
    c = calibrate(logits, labels, precision=0.9)
    assert c.temperatures["a"] > 1 > c.temperatures["b"]  # the overconfident cooled, the timid sharpened
    assert not any(c.flip.values())  # identical mirror views earn nothing
    assert 0 < c.sure_threshold < 1


def test_the_vote_goes_to_the_member_that_knows_more_not_to_the_sharper_one() -> None:
    # "flat" knows more (a stronger signal) but its head was regularized hard: its raw scores are
    # timid. "sharp" knows less, loudly. Mixed raw, the sharp one takes the vote; calibrated first,
    # the one that knows does, and the ensemble is at least as right as it on new photos.
    gen = torch.Generator().manual_seed(2)

    def member_logits(labels: torch.Tensor, signal: float, scale: float) -> torch.Tensor:
        truth = torch.nn.functional.one_hot(labels, 8).float()
        return ((truth * signal + torch.randn(len(labels), 8, generator=gen)) * scale)[:, None]

    val, test = torch.randint(0, 8, (800,), generator=gen), torch.randint(0, 8, (800,), generator=gen)
    strength = {"flat": (3.0, 0.1), "sharp": (1.2, 6.0)}
    c = calibrate({k: member_logits(val, *v) for k, v in strength.items()}, val, precision=0.9)
    assert c.tempered_vote and c.weights["flat"] > c.weights["sharp"]
    new = {k: member_logits(test, *v) for k, v in strength.items()}
    right = (ensemble_probs(new, c).argmax(-1) == test).float().mean()
    assert right >= (new["flat"][:, 0].argmax(-1) == test).float().mean() - 0.01
    # A model made before keeps its raw vote, as its weights were fitted.
    raw = replace(c, tempered_vote=False)
    assert not torch.allclose(ensemble_probs(new, raw), ensemble_probs(new, c))


def test_metrics_on_known_cases() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert macro_f1(torch.tensor([0, 0, 1, 1, 2, 2]), labels, 3) == 100.0
    assert macro_f1(torch.tensor([0, 0, 0, 0, 0, 0]), labels, 3) == pytest.approx(100 * (0.5 / 3), abs=0.1)
    confident_and_right = torch.nn.functional.one_hot(labels, 3).float()
    assert expected_calibration_error(confident_and_right, labels) == 0.0
    assert expected_calibration_error(confident_and_right, (labels + 1) % 3) == 100.0


def test_warm_up_then_cosine() -> None:
    shares = [warmup_cosine(s, 10, 110) for s in range(110)]
    assert shares[0] == pytest.approx(0.1) and shares[9] == 1.0
    assert shares[60] == pytest.approx(0.5) and shares[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(shares[9:]))


def test_the_proxy_loss_learns_to_place_each_product_nearest_its_own_proxy() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 32, generator=generator) * 3
    labels = torch.arange(3).repeat_interleave(20)
    features = centres[labels] + torch.randn(60, 32, generator=generator)
    loss = ProxyLoss(32, 3, seed=0)
    optimizer = torch.optim.Adam(loss.parameters(), lr=1e-2)
    first = float(loss(features, labels).detach())
    for _ in range(100):
        optimizer.zero_grad()
        step = loss(features, labels)
        step.backward()
        optimizer.step()
    assert float(loss(features, labels).detach()) < first / 4
    z = torch.nn.functional.normalize(loss.project(features), dim=1)
    nearest = (z @ torch.nn.functional.normalize(loss.proxies, dim=1).T).argmax(1)
    assert bool((nearest == labels).all())


def test_fine_tuning_adds_the_proxy_loss_at_its_weight_and_leaves_no_hook() -> None:
    member = get_member("efficientnet_lite0")
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8, generator=generator)
    y = torch.arange(4).repeat(4)

    def first_epoch_loss(weight: float) -> float:
        torch.manual_seed(0)
        model = member.build(4, None, True)
        loader = DataLoader(TensorDataset(x, y), 8, shuffle=True, generator=torch.Generator().manual_seed(0))
        model, _, history = finetune(
            model, member, 32, loader, DataLoader(TensorDataset(x[:, :, :32, :32], y), 16), y,
            1e-3, 1.0, 0.0, 0.0, Schedule(1, 0, 1, math.inf), torch.device("cpu"), 0, embedding_weight=weight,
        )  # fmt: skip
        assert [h["epoch"] for h in history] == [0, 1]
        assert not model.get_submodule(member.head)._forward_pre_hooks  # the model answers as before
        return float(history[1]["loss"])

    # Proxies start at random, so their softmax over 4 products starts near log(4) = 1.39: the
    # epoch's loss holds the classifier's and, at weight 1, that much more.
    assert first_epoch_loss(1.0) - first_epoch_loss(0.0) > 1.0


def test_device_augmentation_crops_flips_and_normalizes_a_batch() -> None:
    x = torch.zeros(16, 3, 96, 96, dtype=torch.uint8)
    x[:, :, :, :48] = 255  # left half white
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    out = augment(x, 64, mean, std, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 64, 64) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    left = out[:, 0, :, :8].mean((1, 2))
    right = out[:, 0, :, -8:].mean((1, 2))
    # Some photos were mirrored (white on the right), some not: each photo its own draw.
    assert (left > right).any() and (left < right).any()
    plain = normalize(x, mean, std)
    assert plain[0, 0, 0, 0] == pytest.approx(2.0) and plain[0, 0, 0, -1] == pytest.approx(-2.0)


def test_batch_norm_folding_answers_the_same() -> None:
    model = efficientnet_lite.efficientnet_lite("efficientnet_lite0", 5).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), efficientnet_lite.fused_for_inference(model)(x), atol=1e-4)


def _photo(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def test_the_photo_cache_shrinks_once_and_remakes_a_cut_file(tmp_path: Path) -> None:
    original = _photo(tmp_path / "big.jpg", (900, 600), (200, 30, 30))
    cache = PhotoCache(tmp_path / "cache", side=150)
    img = cache.open("ab" * 32, original)
    assert img.size == (225, 150)
    kept = cache.path("ab" * 32)
    assert Image.open(kept).size == (225, 150)
    original.unlink()  # read from the cache now, not the store
    assert cache.open("ab" * 32, original).size == (225, 150)
    kept.write_bytes(kept.read_bytes()[:100])  # a write cut short
    _photo(original, (900, 600), (200, 30, 30))
    assert cache.open("ab" * 32, original).size == (225, 150)
    assert not list(kept.parent.glob(".*"))  # no temporary file left beside it


def test_photos_come_out_as_uint8_squares(tmp_path: Path) -> None:
    refs = [PhotoRef(_photo(tmp_path / f"{i}.png", size, (9, 9, 9))) for i, size in enumerate([(300, 200), (40, 90)])]
    evaluation = Photos(refs, [0, 1], None, resize=73, crop=64)
    train = Photos(refs, [0, 1], None, resize=73, crop=64, train=True)
    for i in range(2):
        assert evaluation[i][0].shape == (3, 64, 64) and evaluation[i][0].dtype == torch.uint8
        assert train[i][0].shape == (3, 73, 73)


def test_the_feature_store_reads_back_and_ignores_a_cut_shard(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, dim=4)
    feats = np.arange(3 * VIEWS * 4, dtype=np.float16).reshape(3, VIEWS, 4)
    store.add(["a", "b", "c"], feats)
    again = FeatureStore(tmp_path, dim=4)
    assert again.missing(["c", "d", "a"]) == ["d"]
    assert torch.equal(again.read(["c", "a"]), torch.from_numpy(feats[[2, 0]]).float())
    # A shard whose list of photos was never written (the process was killed) holds nothing.
    (tmp_path / "999-1.f16").write_bytes(np.zeros((1, VIEWS, 4), np.float16).tobytes())
    assert FeatureStore(tmp_path, dim=4).missing(["d"]) == ["d"]


def test_a_member_is_left_out_when_the_budget_cannot_hold_it() -> None:
    lite0, lite2 = get_member("efficientnet_lite0"), get_member("efficientnet_lite2")
    now = time.monotonic()
    # Lite0 took 10 s; Lite2 costs 899 / 407 as much a photo at its own side: about 22 s.
    assert not fits(lite2, (lite0, 10.0), now + 15, image_size=0)
    assert fits(lite2, (lite0, 10.0), now + 30, image_size=0)
    assert fits(lite2, (lite0, 10.0), math.inf, image_size=0)
    # At a side forced for all, cost follows the pixels: Lite2 at 130 px is a quarter of its own.
    assert lite2.cost(130) == pytest.approx(899 / 4)


def test_the_confusion_picture_shades_shares_of_each_row_and_carries_its_scale(tmp_path: Path) -> None:
    # Product 1's photos: all named right; product 2's: half taken for product 1.
    matrix = torch.tensor([[4, 0], [2, 2]])
    path = write_confusion_png(matrix, ["Oak lamp", "Teal duvet"], tmp_path / "confusion.png")
    with Image.open(path) as img:
        colours = {colour for _, colour in img.convert("RGB").getcolors(maxcolors=1 << 20) or []}
        width, height = img.size
    # The diagonal at 100% and 50%, the mistake at 50%: shares of each row, not counts.
    assert {RIGHT, shade(RIGHT, 0.5), shade(WRONG, 0.5)} <= colours
    # The scale runs from white to both colours: every shade a cell can take is on it.
    assert sum(1 for c in colours if c in {shade(RIGHT, v / 100) for v in range(101)}) > 50
    assert width > 400 and height >= LEGEND_HEIGHT  # room for the names, the numbers and the scale


def test_a_catalog_photos_similarity_is_put_in_customer_photos_terms() -> None:
    # Validation photos of 40 products against each product's customer photos and catalog photo,
    # as the grocery photos measured them: a catalog photo (on white, lit by the shop) is less like
    # a customer's photo of its product (0.38) than another product's customer photos are (0.45).
    rng = np.random.default_rng(0)
    n, products, noise = 400, 40, 0.05
    truth = torch.from_numpy(rng.integers(0, products, n))
    own = torch.arange(products)[None, :] == truth[:, None]

    def best(own_mean: float, other_mean: float) -> torch.Tensor:
        return torch.where(own, own_mean, other_mean) + torch.from_numpy(rng.normal(0, noise, own.shape)).float()

    customer, catalog = best(0.71, 0.45), best(0.38, 0.15)
    scale, shift = fit_catalog_map(catalog, customer, truth)
    embedding = Embedding(["m"], torch.zeros(1), torch.ones(1), None, catalog_scale=scale, catalog_shift=shift)
    # Put in customer terms, its own catalog photo outranks another product's customer photos.
    assert embedding.in_customer_terms(torch.tensor([0.38]))[0] > 0.45 + 2 * noise

    # The similarity at which a catalog photo is even odds to be the photo's product maps to the
    # one where a customer's photo is: for two Gaussians of one spread, the midpoint moved towards
    # the product's own by spread² / distance · ln(39 to 1).
    def even(own_mean: float, other_mean: float) -> float:
        return (own_mean + other_mean) / 2 + noise**2 / (own_mean - other_mean) * math.log(products - 1)

    mapped = embedding.in_customer_terms(torch.tensor([even(0.38, 0.15), -1.0]))
    assert mapped[0] == pytest.approx(even(0.71, 0.45), abs=0.03)
    assert mapped[1] == -1.0  # none stays none
    # Saved and loaded with the model; a model saved before the map counts catalog photos as they are.
    again = Embedding.from_state(embedding.state())
    assert (again.catalog_scale, again.catalog_shift) == (scale, shift)
    old = {k: v for k, v in embedding.state().items() if not k.startswith("catalog_")}
    assert (Embedding.from_state(old).catalog_scale, Embedding.from_state(old).catalog_shift) == (1.0, 0.0)
    # Too few validation photos with their product's catalog photo among the training photos to
    # tell: no map.
    few = catalog.clone()
    few[MIN_CATALOG_FIT - 1 :] = torch.where(own[MIN_CATALOG_FIT - 1 :], -1.0, few[MIN_CATALOG_FIT - 1 :])
    assert fit_catalog_map(few, customer, truth) == (1.0, 0.0)


def test_an_unsure_classifier_leaves_a_product_it_never_saw_to_the_index() -> None:
    # The classifier knows 20 products; the index finds one it never saw (the last) a little
    # nearer than the classifier's first (0.60 against 0.59, at temperature 0.05).
    best = torch.full((1, 21), 0.30)
    best[0, 0], best[0, 20] = 0.59, 0.60

    def first(classifier_top: float) -> int:
        classifier = torch.full((1, 20), (1 - classifier_top) / 19)
        classifier[0, 0] = classifier_top
        merged = merge(classifier, best, 0.05)
        assert merged.sum().item() == pytest.approx(1.0)
        return int(merged.argmax())

    # A sure classifier outweighs a slightly nearer photo of a product it never saw...
    assert first(0.99) == 0
    # ...an unsure one does not pull the photo to the products it knows.
    assert first(0.55) == 20
    # With no classifier at all, the index alone answers.
    assert int(merge(torch.zeros(1, 0), best, 0.05).argmax()) == 20
