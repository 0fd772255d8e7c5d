"""Every default in one place: the typed configuration each entry point takes.

The same classes are the parameters of the Prefect flows (which validate them) and of the
command's --config files and flags; unknown keys are rejected everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError, with_config

from core.errors import ConfigError, quoted

# Flow parameters are validated by pydantic: a key a config does not know is an error there too.
_STRICT_KEYS = ConfigDict(extra="forbid")

# The ranges a setting may take; a value outside is refused with the range in the message.
Count = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
Bits = Annotated[int, Field(ge=0, le=64)]
Text = Annotated[str, Field(min_length=1)]


def _web_address(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"'{url}' is not an http(s) address such as https://ohou.se")
    return url


def _host(host: str) -> str:
    if not host or urlsplit(f"//{host}").netloc != host:
        raise ValueError(f"'{host}' is not a host[:port] such as image.ohou.se")
    return host


WebAddress = Annotated[str, AfterValidator(_web_address)]
Host = Annotated[str, AfterValidator(_host)]


@with_config(_STRICT_KEYS)
@dataclass(frozen=True)
class CrawlConfig:
    shop: Text = "ohouse"
    # Base URLs of the shop's API/page host; the demo shop serves the same shapes locally.
    shop_url: WebAddress = "https://ohou.se"
    ranking_url: WebAddress = "https://store.ohou.se"
    # Hosts photos may come from besides the shop's own (the real shop serves them from a CDN).
    image_hosts: tuple[Host, ...] = ("image.ohou.se",)
    # The study's setting: the 20 best sellers of each category.
    categories: Annotated[tuple[int, ...], Field(min_length=1)] = (10000000, 18000000, 28000000, 11000000)
    top_n: Count = 20
    # Where the ranking comes from: the ranks JSON, or the ranking page's product links.
    ranking_source: Literal["json", "html"] = "json"
    max_reviews_per_product: Count = 4000
    # Read each new product's page for the shop's own photo of it (its Open Graph image): search
    # then finds the product before any review photo of it is labeled.
    catalog_photos: bool = True
    # Requests per second the crawler allows itself on the page/JSON hosts and on the photo hosts.
    api_rate: Positive = 2.0
    image_rate: Positive = 10.0
    user_agent: Text = "reviewlens/0.1 (+https://github.com/reviewlens/reviewlens)"
    connect_timeout_s: Positive = 5.0
    read_timeout_s: Positive = 20.0
    # One answer whole, however it arrives: a page sent a byte at a time never passes read_timeout_s.
    total_timeout_s: Positive = 120.0
    # Times a failed request, or an answer that may pass when asked again, is tried again,
    # with exponential backoff from backoff_s (crawler/retry.py).
    retries: Annotated[int, Field(ge=0, le=10)] = 4
    backoff_s: NonNegativeFloat = 0.5
    image_workers: Count = 4
    max_image_bytes: Count = 20_000_000
    max_image_pixels: Count = 40_000_000


@with_config(_STRICT_KEYS)
@dataclass(frozen=True)
class DedupeConfig:
    # Photos smaller than this on their short side carry too little of the product to learn from.
    min_side: Count = 64
    # Hamming distance on the 64-bit pHash at or under which two photos are one photo re-posted;
    # see curation/dedupe/grouping.py for the measurement behind it.
    max_distance: Bits = 10
    # ...and between one photo's pHash and the other's centre hash (a re-post cropped at the border).
    max_cross_distance: Bits = 6
    workers: NonNegativeInt = 0  # processes that hash photos; 0: one per core


@with_config(_STRICT_KEYS)
@dataclass(frozen=True)
class LabelConfig:
    project_title: Text = "reviewlens: review photos"
    # Where a person chooses the product of a photo posted under several products.
    choice_project_title: Text = "reviewlens: which product"
    # The study's first rule: the product covers at least half of the photo.
    min_coverage: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.5
    # Detections under this score are not shown to annotators as pre-annotations.
    detector_min_score: Share = 0.3
    # The share of rules tasks two annotators answer (Label Studio's overlap): their agreement is
    # measured, and a photo they decide differently goes to the review project, whose decision counts.
    overlap: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.1
    review_project_title: Text = "reviewlens: disagreements to review"


def _input_size(size: int) -> int:
    # The networks downsample 32 times: a smaller photo has no pixels left at their last stage.
    if size and not 32 <= size <= 1024:
        raise ValueError(f"image_size must be 0 (each member's own) or from 32 to 1024, got {size}")
    return size


@with_config(_STRICT_KEYS)
@dataclass(frozen=True)
class TrainConfig:
    # Offline members by default: their ImageNet weights install with the package. Strongest
    # first (ImageNet top-1 77.6, 76.6, 75.1): when the time budget cannot hold every member,
    # those trained first stay, and the cheapest that still fits comes after them.
    members: Annotated[tuple[str, ...], Field(min_length=1)] = (
        "efficientnet_lite2",
        "efficientnet_lite1",
        "efficientnet_lite0",
    )
    # quick: a head on each member's frozen, cached features (minutes on a CPU); top: that head,
    # then the member's last blocks fine-tuned on their inputs, computed once (training/top_tune.py:
    # fine-tuning's gain at a fraction of its cost on a CPU); full: that head, then the whole
    # network fine-tuned. auto: full where a GPU is present, top elsewhere (on the grocery photos
    # top is about 4 points of Top-1 over quick, in the same 30-minute budget from cold).
    mode: Literal["auto", "quick", "top", "full"] = "auto"
    # Wall-clock minutes the whole training may take (0: no limit); fine-tuning stops at an epoch
    # boundary before the budget runs out and keeps its best epoch so far.
    budget_minutes: NonNegativeFloat = 0.0
    # Input side in pixels; 0 gives each member the size it was pretrained at (224, 240, 260).
    image_size: Annotated[int, AfterValidator(_input_size)] = 0
    # Fine-tuning's epoch budget; it stops earlier once validation stops improving for `patience`.
    epochs: Count = 30
    patience: Count = 5
    # Epochs the learning rate climbs from zero before its cosine decay: a head still finding
    # its way would otherwise send large gradients into the pretrained body.
    warmup_epochs: NonNegativeInt = 1
    batch_size: Count = 32
    lr: Positive = 1e-3
    # The body learns ten times slower than the head: a small shop's photos would otherwise
    # wash out the ImageNet features in a few steps.
    backbone_lr_scale: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.1
    weight_decay: NonNegativeFloat = 1e-4
    # Passes of the head over the cached features (the linear probe).
    head_epochs: Count = 40
    # Top mode: how many of an EfficientNet-Lite's last blocks learn (5 in Lite0 is every block at
    # the smallest scale), and for how many epochs at most; the epoch best on validation is kept.
    top_blocks: Count = 5
    top_epochs: Count = 8
    # Top mode: augmented views (random resized crop, flip, colour) of each training photo whose
    # activations are kept beside its centre crop's, each a pass of the lower blocks over the
    # training photos, taken only where the epochs still fit the budget after them (0: none).
    top_views: NonNegativeInt = 2
    # A retrain in top mode starts from the production model's tuned top where that is safe
    # (training/warm_start.py) and tunes it this many epochs more.
    top_retrain_epochs: Count = 1
    # ... at this share of a first training's learning rate. A tuned top is near where it should
    # be; at the full rate, the one short epoch of a retrain threw it away (validation Top-1 fell
    # 7 to 15 points in tests/benchmarks/retrain_cost.py, so the retrain kept the probe); at a
    # tenth, it held.
    top_retrain_lr_scale: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.1
    # Customers' photos of one product are often mislabeled or show it barely: smoothed targets
    # keep the model from betting everything on one class (torchvision's references use 0.1).
    label_smoothing: Share = 0.1
    # Full mode: the weight of the search embedding's own loss (a normalised softmax against one
    # proxy per product) beside the classifier's while the body fine-tunes. The classifier alone
    # shapes features that tell the trained products apart; the proxy loss shapes them so nearest
    # photos share a product, which is how products never trained on are found. Measured by
    # tests/benchmarks/open_set_finetuned.py against the classifier alone (H200, 3 splits): it
    # finds unseen products better (Recall@1 93.4 against 92.7 for Lite2) and names the trained
    # ones better too (closed-set Top-1 87.3 against 86.6; Lite0 86.3 against 81.4).
    embedding_weight: NonNegativeFloat = 1.0
    # Evaluation resizes the short side to image_size * this, then crops the centre: the
    # 256 / 224 of the ImageNet recipe, so a product at the frame's edge is mostly kept.
    resize_ratio: Annotated[float, Field(ge=1, le=2, allow_inf_nan=False)] = 1.14
    # Products with fewer accepted photos are left out, as the study left out products with
    # too few photo reviews: a split needs a photo for each of train, validation and test.
    min_photos: Count = 5
    # The labeling stage's boxes train too: each photo a person boxed as one product adds the
    # view cut to its box (also photos refused only because the product is small in them), so the
    # model knows a product as the object search sees it, cut out of a larger scene.
    train_on_boxes: bool = True
    # How the head weighs products with few photos: plain log-loss ('none'), a class-balanced
    # loss ('loss') or logit adjustment ('adjust'); 'auto' keeps whichever raises validation
    # macro-F1 without lowering its Top-1 (training/head.py).
    balance: Literal["auto", "none", "loss", "adjust"] = "auto"
    # Quick mode: once validation has chosen a head's settings and calibrated its scores, the head
    # is fitted again on train and validation photos together, so every labeled photo outside
    # test trains the model (false: train alone, as full mode).
    refit: bool = True
    # predict says "not sure" below the score at which this share of validation answers was right.
    sure_precision: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.9
    # Train even when the production model was made from the same photos with the same settings
    # (otherwise such a retrain says so and stops: it would make the same model again).
    force: bool = False
    seed: int = 0
    val_share: Share = 0.2
    test_share: Share = 0.2
    num_threads: NonNegativeInt = 0  # 0: let torch decide
    # Processes that decode and augment photos beside the model; 0: one per two cores, up to 8.
    workers: NonNegativeInt = 0
    weights: Mapping[str, str] = field(default_factory=dict)  # member name -> local weights file

    def __post_init__(self) -> None:
        if self.val_share + self.test_share >= 1:
            raise ValueError(f"val_share + test_share must stay under 1, got {self.val_share + self.test_share:.2f}")


T = TypeVar("T")


def from_mapping(cls: type[T], values: Mapping[str, Any]) -> T:
    """Builds config `cls` from a mapping (a --config file, flags, YAML), checking keys and types.

    Lists become tuples, so a config read from JSON equals one built in code.
    """
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        given = quoted(", ".join(map(str, unknown)))
        raise ConfigError(f"unknown {cls.__name__} keys: {given}; valid keys: {', '.join(sorted(known))}")
    try:
        return TypeAdapter(cls).validate_python(dict(values))
    except ValidationError as exc:
        problems = "; ".join(
            quoted(": ".join(filter(None, (".".join(map(str, e["loc"])), e["msg"])))) for e in exc.errors()[:5]
        )
        raise ConfigError(f"bad {cls.__name__} values: {problems}") from exc


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value: a settings file or a request is
    refused past a few dozen levels (Python's own parser allows about a thousand)."""
    if isinstance(value, dict):
        return 1 + max(map(json_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(json_depth, value), default=0)
    return 0
