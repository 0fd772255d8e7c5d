"""Fine-tuning the top on cached activations: the cut network is the network, tuning learns,
keeps its best epoch and the ImageNet batch-norm statistics, and stops at its deadline."""

from __future__ import annotations

import time

import torch

from models.efficientnet_lite import EfficientNetLite
from training.features import embed_batch
from training.members import get_member
from training.top_tune import (
    Split,
    activations,
    crop_maps,
    draw_views,
    epoch_seconds,
    top_features,
    top_logits,
    tune_top,
)


def _model(n_classes: int) -> EfficientNetLite:
    model = get_member("efficientnet_lite0").build(n_classes, None, True)
    assert isinstance(model, EfficientNetLite)
    return model.eval()


def _photos(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three 'products': photos tinted red, green or blue, under noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    x = torch.randn(n, 3, 64, 64, generator=gen) * 0.5
    x[torch.arange(n), labels] += 1.5
    return x, labels


def test_the_lower_part_and_the_top_are_the_whole_network() -> None:
    model = _model(3)
    x, _ = _photos(4, seed=0)
    for top_blocks in (1, 5):
        split = Split(model, top_blocks)
        assert torch.allclose(top_logits(split, split.lower(x).half()), model(x), atol=0.05)


def test_features_from_kept_activations_are_a_whole_pass_features() -> None:
    model = _model(3)
    x, _ = _photos(4, seed=0)
    split = Split(model, 5)
    whole = embed_batch(model, get_member("efficientnet_lite0").head, x)[:, 0]
    assert torch.allclose(top_features(split, split.lower(x).half()), whole, atol=0.05)


def test_tuning_learns_keeps_the_best_epoch_and_the_norm_statistics() -> None:
    torch.manual_seed(0)
    model = _model(3)
    split = Split(model, 2)
    (x_train, y_train), (x_val, y_val) = _photos(48, seed=1), _photos(24, seed=2)
    train = (activations(split, [x_train]), y_train)
    val = (activations(split, [x_val]), y_val)
    norms = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    result = tune_top(split, train, val, epochs=6, lr=1e-3, batch_size=16)
    assert result.val_top1[0] < 0.5  # a new classifier starts near chance (3 products)
    assert max(result.val_top1) > 0.9 and result.val_top1[result.best_epoch] == max(result.val_top1)
    kept = float((top_logits(split, val[0]).argmax(-1) == y_val).float().mean())
    assert kept == max(result.val_top1)  # the model holds the epoch kept, not the last
    assert all(torch.equal(model.state_dict()[k], v) for k, v in norms.items())


def test_tuning_stops_at_its_deadline_with_the_probe_in_place() -> None:
    model = _model(3)
    split = Split(model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (x, y) = _photos(12, seed=3)
    acts = activations(split, [x])
    result = tune_top(split, (acts, y), (acts, y), epochs=5, deadline=time.monotonic() - 1)
    assert result.best_epoch == 0 and len(result.val_top1) == 1
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_each_photo_is_drawn_from_one_of_its_views_in_order() -> None:
    # Three sources of 10 photos each; row r of source v holds 100 * v + r everywhere.
    sources = [torch.full((10, 2, 3, 3), 100.0 * v).add(torch.arange(10.0).view(10, 1, 1, 1)) for v in range(3)]
    index = torch.tensor([7, 2, 9, 0, 5, 5, 1, 3, 8, 4, 6, 2])
    drawn = draw_views(sources, index, torch.Generator().manual_seed(0))
    values = drawn.flatten(1)
    assert torch.equal(values.min(1).values, values.max(1).values)  # each row comes whole from one source
    assert torch.equal(values[:, 0] % 100, index.float())  # in the order asked
    assert len(set((values[:, 0] // 100).tolist())) == 3  # all three sources were drawn from
    assert torch.equal(draw_views(sources[:1], index, torch.Generator()), sources[0][index])


def test_views_train_the_top_and_an_epoch_is_estimated_without_a_step() -> None:
    torch.manual_seed(0)
    model = _model(3)
    split = Split(model, 2)
    (x_train, y_train), (x_val, y_val) = _photos(48, seed=1), _photos(24, seed=2)
    train = (activations(split, [x_train]), y_train)
    view = activations(split, [x_train.flip(-2)])  # another view of the same photos
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert epoch_seconds(split, train, activations(split, [x_val]), batch_size=16) > 0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    val = (activations(split, [x_val]), y_val)
    result = tune_top(split, train, val, epochs=6, views=(view,), lr=1e-3, batch_size=16)
    assert result.val_top1[0] < 0.5 and max(result.val_top1) > 0.8


def test_a_cropped_map_is_a_window_of_the_map() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(4 * 2 * 10 * 10, dtype=torch.float32).view(4, 2, 10, 10)
    sides = set()
    for _ in range(40):
        cropped = crop_maps(x, gen)
        sides.add(cropped.shape[-1])
        h, w = cropped.shape[-2:]
        for m, c in zip(x, cropped, strict=True):
            top, left = divmod(int(c[0, 0, 0] - m[0, 0, 0]), 10)  # where its first cell lay in the map
            assert torch.equal(c, m[:, top : top + h, left : left + w])
    assert sides == {10, 9, 7}  # kept whole, or cut to 85% or 70% of its side
