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

from core.settings import DedupeConfig
from curation.dedupe.hashing import check_photos, hamming_matrix
from tests.benchmarks._grocery import GROCERY, grocery_photos
from tests.benchmarks._smoke import parser as smoke_parser
from tests.benchmarks._smoke import sized

N = sized(500, 8)  # the stand-in's test photos, at smoke size


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
    smoke_parser(__doc__).parse_args()
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

    checks = {k: list(check_photos(v, 1)) for k, v in files.items()}
    ours = {k: np.array([c.phash for c in v], dtype=np.uint64) for k, v in checks.items()}
    centres = {k: np.array([c.centre_hash for c in v], dtype=np.uint64) for k, v in checks.items()}
    base, base_c = ours["original"], centres["original"]
    iu = np.triu_indices(N, 1)
    cross = hamming_matrix(base, base)[iu]
    # reviewlens pairs two photos when their pHashes are within t, or one's pHash is within
    # max_cross of the other's centre hash.
    via_centre = np.minimum(hamming_matrix(base, base_c), hamming_matrix(base_c, base))[iu]
    max_cross = DedupeConfig().max_cross_distance

    def paired(k: str, t: int, with_centre: bool) -> np.ndarray:
        full = np.bitwise_count(base ^ ours[k]) <= t
        if not with_centre:
            return full
        centre = np.minimum(np.bitwise_count(base ^ centres[k]), np.bitwise_count(base_c ^ ours[k])) <= max_cross
        return full | centre

    print(f"{N} grocery-store test photos; false pairs counted among {len(cross)} pairs of different originals")
    for with_centre in (False, True):
        rule = f"pHash, or centre hash within {max_cross}" if with_centre else "pHash alone"
        print(f"reviewlens ({rule}): recall per transform and false-pair share by pHash threshold")
        print("threshold | " + " | ".join(TRANSFORMS) + " | false pairs")
        for t in (4, 6, 8, 10, 12, 14):
            recalls = [float(np.mean(paired(k, t, with_centre))) for k in TRANSFORMS]
            false = (cross <= t) | (via_centre <= max_cross) if with_centre else cross <= t
            print(f"{t:9d} | " + " | ".join(f"{r:.3f}" for r in recalls) + f" | {np.mean(false):.5f}")

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
    ours_recall = np.mean([np.mean(paired(k, chosen, True)) for k in TRANSFORMS if k != "hflip"])
    their_recall = np.mean([np.mean(np.bitwise_count(tb ^ theirs[k]) <= 10) for k in TRANSFORMS if k != "hflip"])
    ours_false = np.mean((cross <= chosen) | (via_centre <= max_cross))
    print(f"recall_without_flip_reviewlens_at_{chosen}_{max_cross}: {ours_recall:.3f}")
    print(f"recall_without_flip_imagededup_at_10: {their_recall:.3f}")
    print(f"flip_recall_reviewlens: {np.mean(paired('hflip', chosen, True)):.3f}")
    print(f"false_pair_share_reviewlens: {ours_false:.5f}")
    print(f"false_pair_share_imagededup_at_10: {np.mean(tcross <= 10):.5f}")
    print(f"neardup_recall_reviewlens: {ours_recall:.3f}")


if __name__ == "__main__":
    main()
