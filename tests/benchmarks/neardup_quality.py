"""Near-duplicate quality on real photos: 500 grocery-store test photos and transformed copies.

For each transform (JPEG quality 40, resized to 50%, 10% border crop, brightness +20%, and a
horizontal flip reported apart), the recall of copy-original pairs, and the share of false
pairs among the different originals, for reviewlens's pHash at each threshold and for
imagededup's PHash at its default threshold, in the same run.

    .venv/bin/python -m tests.benchmarks.neardup_quality
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from curation.dedupe import DedupeConfig
from curation.hashing import check_photos, hamming_matrix
from tests.benchmarks._grocery import GROCERY, grocery_photos

N = 500


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def _crop(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.crop((w // 10, h // 10, w - w // 10, h - h // 10))


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q40": lambda im: _jpeg(im, 40),
    "resize_50": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
    "crop_10": _crop,
    "brightness_120": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "hflip": ImageOps.mirror,
}


def main() -> None:
    originals = [p for p in grocery_photos() if "/test/" in str(p.relative_to(GROCERY.parent))][:N]
    work = Path(tempfile.mkdtemp(prefix="reviewlens-neardup-"))
    files: dict[str, list[Path]] = {"original": []}
    for i, p in enumerate(originals):
        img = Image.open(p).convert("RGB")
        dst = work / "original" / f"{i:04d}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
        files["original"].append(dst)
        for name, fn in TRANSFORMS.items():
            out = work / name / f"{i:04d}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            fn(img).convert("RGB").save(out, "JPEG", quality=95)
            files.setdefault(name, []).append(out)

    ours = {k: np.array([c.phash for c in check_photos(v, 1)], dtype=np.uint64) for k, v in files.items()}
    base = ours["original"]
    cross = hamming_matrix(base, base)[np.triu_indices(N, 1)]
    print(f"{N} grocery-store test photos; false pairs counted among {len(cross)} pairs of different originals")
    print("reviewlens pHash (draft decode): recall per transform and false-pair share by threshold")
    print("threshold | " + " | ".join(TRANSFORMS) + " | false pairs")
    for t in (4, 6, 8, 10, 12, 14):
        recalls = [float(np.mean(np.bitwise_count(base ^ ours[k]) <= t)) for k in TRANSFORMS]
        print(f"{t:9d} | " + " | ".join(f"{r:.3f}" for r in recalls) + f" | {np.mean(cross <= t):.5f}")

    from imagededup.methods import PHash

    phasher = PHash(verbose=False)
    theirs = {}
    for k, v in files.items():
        enc = phasher.encode_images(image_dir=str(v[0].parent))
        theirs[k] = np.array([int(enc[p.name], 16) for p in v], dtype=np.uint64)
    tb = theirs["original"]
    tcross = hamming_matrix(tb, tb)[np.triu_indices(N, 1)]
    t = 10  # imagededup's default max_distance_threshold
    recalls = [float(np.mean(np.bitwise_count(tb ^ theirs[k]) <= t)) for k in TRANSFORMS]
    print(f"imagededup PHash at its default threshold {t}:")
    print(f"{t:9d} | " + " | ".join(f"{r:.3f}" for r in recalls) + f" | {np.mean(tcross <= t):.5f}")

    chosen = DedupeConfig().max_distance
    ours_recall = np.mean([np.mean(np.bitwise_count(base ^ ours[k]) <= chosen) for k in TRANSFORMS if k != "hflip"])
    their_recall = np.mean([np.mean(np.bitwise_count(tb ^ theirs[k]) <= 10) for k in TRANSFORMS if k != "hflip"])
    print(f"recall_without_flip_reviewlens_at_{chosen}: {ours_recall:.3f}")
    print(f"recall_without_flip_imagededup_at_10: {their_recall:.3f}")
    print(f"false_pair_share_reviewlens_at_{chosen}: {np.mean(cross <= chosen):.5f}")
    print(f"false_pair_share_imagededup_at_10: {np.mean(tcross <= 10):.5f}")
    print(f"neardup_recall_reviewlens: {ours_recall:.3f}")


if __name__ == "__main__":
    main()
