"""Training pieces: strict weight loading, the member registry, leakage-free splits, Top-k."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import models as tvm
from torchvision.transforms import functional as TF

from core.layout import Layout
from models import efficientnet_lite
from reviewlens.cli import main
from tests.conftest import SHARED
from training.bundle import BUNDLE_FORMAT, Ensemble, NotAModel
from training.calibrate import Calibration
from training.data import UnreadablePhoto, load_image
from training.evaluate import HeldOut, better_than_chance, markdown_table, promotion_gate
from training.groups import assign_splits
from training.loading import PhotoRef
from training.members import MEMBERS, MissingWeights, get_member
from training.metrics import topk


def test_efficientnet_lite_loads_packaged_weights_strictly(tmp_path: Path) -> None:
    for name in efficientnet_lite.PACKAGES:
        model = efficientnet_lite.efficientnet_lite(name, num_classes=7)
        assert model(torch.zeros(1, 3, 96, 96)).shape == (1, 7)
    sd = torch.load(efficientnet_lite.packaged_weights("efficientnet_lite0"), weights_only=True)
    del sd["_blocks.3._bn1.running_var"]
    broken = tmp_path / "broken-lite0.pth"
    torch.save(sd, broken)
    with pytest.raises(RuntimeError, match="running_var"):
        efficientnet_lite.efficientnet_lite("efficientnet_lite0", 7, weights=broken)


@pytest.mark.skipif(not (SHARED / "data/grocery-store").exists(), reason="../shared/data/grocery-store is absent")
def test_efficientnet_lite_imagenet_weights_recognise_real_photos() -> None:
    # ImageNet class 954 is "banana", 945 "bell pepper": real weights name real photos.
    photos = SHARED / "data/grocery-store/sample_images/natural"
    for name in efficientnet_lite.PACKAGES:
        model = efficientnet_lite.efficientnet_lite(name, 1000).eval()
        sd = torch.load(efficientnet_lite.packaged_weights(name), weights_only=True)
        model._fc.load_state_dict({"weight": sd["_fc.weight"], "bias": sd["_fc.bias"]})
        for file, imagenet_class in (("Banana.jpg", 954), ("Green-Bell-Pepper.jpg", 945)):
            img = Image.open(photos / file).convert("RGB")
            x = TF.normalize(
                TF.to_tensor(TF.center_crop(TF.resize(img, 256), 224)), efficientnet_lite.MEAN, efficientnet_lite.STD
            )
            with torch.no_grad():
                assert int(model(x[None]).argmax()) == imagenet_class, (name, file)


def test_registry_holds_the_study_members_and_names_valid_ones() -> None:
    assert {"vgg19", "resnet50", "mobilenet_v3_large", "efficientnet_lite0"} <= set(MEMBERS)
    with pytest.raises(ValueError, match=r"valid members: efficientnet_lite0, .*vgg19"):
        get_member("vit_h_14")


def test_torchvision_member_loads_a_local_weights_file(tmp_path: Path) -> None:
    file = tmp_path / "mobilenet.pth"
    reference = tvm.mobilenet_v3_large(weights=None)
    torch.save(reference.state_dict(), file)
    model = get_member("mobilenet_v3_large").build(4, file, True)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 4)
    assert torch.equal(model.features[0][0].weight, reference.features[0][0].weight)  # type: ignore[index]


def test_torchvision_member_without_weights_says_how_to_supply_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No weights on disk, and a proxy on a closed local port: the download fails here, on this machine.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(MissingWeights, match=r"--weights resnet50=/path/to/weights\.pth") as err:
        get_member("resnet50").build(3, None, True)
    assert str(tmp_path) in str(err.value)


def test_splits_keep_groups_whole_and_fill_every_split() -> None:
    groups = [f"g{i // 3}" for i in range(60)]  # 20 groups of 3 photos
    splits = assign_splits({"lamp": groups}, 0.2, 0.2, seed=1)
    assert set(splits) == set(groups)
    assert sorted(list(splits.values()).count(s) for s in ("train", "val", "test")) == [4, 4, 12]
    assert assign_splits({"lamp": groups}, 0.2, 0.2, seed=1) == splits
    assert assign_splits({"lamp": groups}, 0.2, 0.2, seed=2) != splits


def test_topk_and_the_report_table() -> None:
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert topk(probs, labels, 1) == 33.3 and topk(probs, labels, 3) == 100.0
    table = markdown_table(
        {
            "mobilenet_v3_large": {"top1": 71.5, "top3": 89.6},
            "ensemble": {"top1": 74.4, "top3": 90.2, "macro_f1": 70.1, "ece": 3.2},
        },
        9423,
        54,
    )
    assert "| MobileNetV3 | 71.5 | 89.6 |  |  |" in table and "| Ensemble | 74.4 | 90.2 | 70.1 | 3.2 |" in table
    assert "9423 test photos of 54 products" in table


class _Planted:
    """A pickle that runs code when loaded: it makes a folder."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_a_planted_model_file_is_refused_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "the-pickle-ran"
    run = Layout(tmp_path).runs_dir / "20990101T000000Z-snap-planted"
    run.mkdir(parents=True)
    torch.save(_Planted(marker), run / "model.pt")
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 64)).save(photo)
    assert main(["predict", str(photo), "--data-dir", str(tmp_path)]) == 1
    assert "is not a model reviewlens wrote" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize("side", [7000, 20000], ids=["over the cap", "a decompression bomb"])
def test_a_photo_too_large_to_decode_is_refused_before_decoding(side: int, tmp_path: Path) -> None:
    photo = tmp_path / "huge.png"
    Image.new("1", (side, side)).save(photo, optimize=True)  # a few kB on disk
    with pytest.raises(UnreadablePhoto, match="too many pixels to decode safely"):
        load_image(photo)
    photo.write_bytes(b"<html>not a photo</html>")
    with pytest.raises(UnreadablePhoto, match="not a readable image"):
        load_image(photo)


def test_the_gate_never_promotes_a_model_at_chance(tmp_path: Path) -> None:
    layout = Layout(tmp_path)  # nothing in production: only chance stands in the way
    tests = HeldOut([PhotoRef(tmp_path / "p.jpg")] * 36, ["1"] * 36)
    assert better_than_chance(36, 6) == pytest.approx(29.1, abs=0.1)  # 16.7% + 2 standard errors
    at_chance = promotion_gate(16.7, layout, tests, 0.0, n_classes=6)
    assert not at_chance["promote"] and "not above chance" in at_chance["reason"]
    assert promotion_gate(60.0, layout, tests, 0.0, n_classes=6)["promote"]


def test_a_model_with_non_finite_weights_is_refused(tmp_path: Path) -> None:
    model = get_member("efficientnet_lite0").build(3, None, True)
    state = model.state_dict()
    state["_fc.weight"] = torch.full_like(state["_fc.weight"], float("nan"))  # what a diverged run leaves
    calibration = Calibration(
        {"efficientnet_lite0": 1.0}, {"efficientnet_lite0": False}, {"efficientnet_lite0": 1.0}, 1, 0
    )
    bundle = {
        "format": BUNDLE_FORMAT,
        "version": "20990101T000000Z-snap-x",
        "mode": "quick",
        "classes": [{"product_id": str(i), "name": f"p{i}", "url": ""} for i in range(3)],
        "snapshot_id": "snap-x",
        "config": {"members": ["efficientnet_lite0"]},
        "calibration": asdict(calibration),
        "members": {"efficientnet_lite0": {"state_dict": state, "history": {"image_size": 64}}},
    }
    torch.save(bundle, tmp_path / "model.pt")
    with pytest.raises(NotAModel, match="weights are not finite"):
        Ensemble.load(tmp_path)
    state["_fc.weight"] = torch.zeros_like(state["_fc.weight"])
    torch.save(bundle, tmp_path / "model.pt")
    assert Ensemble.load(tmp_path).config.members == ("efficientnet_lite0",)
    # A model file of the first release is named as such, with what to do.
    del bundle["format"]
    torch.save(bundle, tmp_path / "model.pt")
    with pytest.raises(NotAModel, match=r"older reviewlens \(format 1.*train again"):
        Ensemble.load(tmp_path)
