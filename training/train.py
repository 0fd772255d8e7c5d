"""Training: for each ensemble member a head on its frozen features, then (top mode, a CPU's
default) its last blocks fine-tuned on their kept inputs or (full mode, a GPU's) the whole
network fine-tuned; then the scores calibrated, and one run folder.

Validation chooses each head's settings and calibrates the scores, read off heads fitted on
train alone. Quick mode then fits each head again on train and validation together, as is usual:
on a small shop validation is a quarter of the labeled photos. Calibration is not cross-fitted
over folds of train and validation: where photos' sources are not known (an import without its
`group` column), near-identical shots fall into different folds and each fold's predictions
are flattering. On the grocery photos they were right 95% of the time against 75% on test, and
the "not sure" threshold fitted on them was 0.

Laid out after torchvision's classification references: the member's loop lives in
training/finetune.py, the probe in training/head.py, calibration in training/calibrate.py, and
train() writes a run folder whose model.pt keeps the settings that made it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import ReviewlensError
from core.layout import Layout
from core.settings import TrainConfig
from models.efficientnet_lite import EfficientNetLite
from training.augment import AugmentingCollate, augment, normalize
from training.bundle import BUNDLE_FORMAT
from training.calibrate import Calibration, calibrate, ensemble_probs, sure_threshold
from training.data import Example, Snapshot, make_snapshot
from training.embedding import (
    EMBEDDING_PHOTOS,
    Embedding,
    fit_catalog_map,
    fit_embedding,
    fit_temperature,
    merge,
    nearest_by_product,
)
from training.features import (
    FeatureStore,
    StoredRows,
    activation_store,
    embed_batch,
    embed_missing,
    feature_store,
    view_store,
)
from training.finetune import Schedule, autocast, finetune
from training.head import BALANCES, Probe, Rows, fit_head, settings_of
from training.loading import PhotoRef, Photos, default_workers, photo_loader
from training.members import Member, for_inference, get_member
from training.photo_cache import PhotoCache
from training.progress import Bar
from training.progress import log as progress
from training.runs import building_run
from training.top_tune import LR as TOP_LR
from training.top_tune import Split, epoch_seconds, top_features, top_logits, tune_top
from training.warm_start import WarmStart, warm_start

log = logging.getLogger(__name__)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_mode(config: TrainConfig, dev: torch.device) -> str:
    """`auto` fine-tunes the whole network where a GPU makes it affordable, the top elsewhere."""
    if config.mode != "auto":
        return config.mode
    return "full" if dev.type == "cuda" else "top"


class NotEnoughData(ReviewlensError):
    """Too few accepted photos to train on; the message says how many there are."""


class NothingNew(ReviewlensError):
    """The production model was made from these very photos and settings: training again would
    make the same model. The message says which model; `force` trains all the same."""


# Settings that change how a run goes, not the model it makes.
RUN_ONLY_SETTINGS = frozenset({"force", "workers", "num_threads", "budget_minutes"})


def same_as_production(layout: Layout, snapshot: Snapshot, config: TrainConfig) -> str | None:
    """The production model's version when it was trained on `snapshot` with these settings."""
    model = layout.production_dir / "model.pt"
    if not model.exists():
        return None
    made = torch.load(model, map_location="cpu", weights_only=True, mmap=True)
    wanted = {**asdict(config), "weights": dict(config.weights)}
    settings = {k: v for k, v in made.get("config", {}).items() if k not in RUN_ONLY_SETTINGS}
    wanted = {k: v for k, v in wanted.items() if k not in RUN_ONLY_SETTINGS}
    # Saved settings went through torch.save: tuples come back as tuples or lists alike.
    same = made.get("snapshot_id") == snapshot.snapshot_id and _plain(settings) == _plain(wanted)
    return str(made.get("version", layout.production_dir.resolve().name)) if same else None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class FeatureChunk:
    """Photos a member's feature cache lacks, to embed in another process (a cluster's worker)
    exactly as the trainer would: the same body, input size and shrunk photos."""

    member: str
    n_classes: int
    config: TrainConfig
    layout: Layout
    examples: tuple[Example, ...]


# Embeds every chunk into its member's feature cache, returning once all are there. By default
# the trainer embeds what its cache lacks itself; a flow may hand in a cluster's (flows/dask.py).
FeatureExtractor = Callable[[list[FeatureChunk]], None]
CHUNK = 256  # photos per chunk handed to an extractor


def photo_cache(config: TrainConfig, layout: Layout) -> PhotoCache:
    """The shrunk photos every member of `config` reads, at the largest member's size."""
    largest = max(round(get_member(m).input_size(config.image_size) * config.resize_ratio) for m in config.members)
    return PhotoCache(layout.cache_dir / "photos", largest)


@dataclass(frozen=True)
class Context:
    """What every member's training shares."""

    snapshot: Snapshot
    layout: Layout
    config: TrainConfig
    cache: PhotoCache
    dev: torch.device
    workers: int
    extract: FeatureExtractor | None = None
    warm: WarmStart | None = None  # top mode: production's tuned tops to start from

    def refs(self, examples: list[Example]) -> list[PhotoRef]:
        return [PhotoRef(self.layout.store_dir / e.path, e.sha256, e.box) for e in examples]

    def eval_photos(self, examples: list[Example], size: int) -> Photos:
        resize = round(size * self.config.resize_ratio)
        return Photos(self.refs(examples), [e.label for e in examples], self.cache, resize, size)

    def loader(self, photos: Photos, batch_size: int, **kwargs: Any) -> Any:
        return photo_loader(photos, batch_size, self.workers, self.dev.type == "cuda", **kwargs)


def embed_snapshot(ctx: Context, member: Member, model: nn.Module, size: int, store: FeatureStore) -> int:
    """Embeds every photo of the snapshot the store lacks (test photos too: evaluation reads them)."""
    model = for_inference(model).to(ctx.dev).to(memory_format=torch.channels_last)
    by_key = {e.key: e for e in ctx.snapshot.examples}
    keys = list(by_key)

    def batches(todo: list[str]) -> Any:
        photos = ctx.eval_photos([by_key[k] for k in todo], size)
        with Bar(len(todo), f"{member.name} features") as bar:
            for x, y in ctx.loader(photos, ctx.config.batch_size * 2):
                yield x, y
                bar.update(len(y))

    def embed(x: torch.Tensor) -> torch.Tensor:
        with autocast(ctx.dev):
            return embed_batch(model, member.head, normalize(x.to(ctx.dev, non_blocking=True), member.mean, member.std))

    started = time.monotonic()
    done = embed_missing(store, keys, batches, embed)
    progress.info(
        "%s: features of %d photos computed in %.0f s, %d read from the cache",
        member.name,
        done,
        time.monotonic() - started,
        len(keys) - done,
    )
    return done


def _rows(examples: list[Example]) -> Rows:
    return Rows([e.key for e in examples], [e.label for e in examples])


def train_member(
    ctx: Context, member: Member, mode: str, deadline: float
) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
    """One member: the probe on cached features, then in full mode fine-tuning.
    Returns the model, its validation logits (N, views, C) and its training record."""
    config, n_classes = ctx.config, len(ctx.snapshot.classes)
    size = member.input_size(config.image_size)
    weights = config.weights.get(member.name)
    model = member.build(n_classes, Path(weights) if weights else None, True)
    if mode == "top" and isinstance(model, EfficientNetLite):
        return train_member_top(ctx, member, model, size, deadline)
    store = feature_store(ctx.layout, member, model, size, config.resize_ratio)
    if ctx.extract is not None:
        by_key = {e.key: e for e in ctx.snapshot.examples}
        missing = [by_key[k] for k in store.missing(list(by_key))]
        chunks = [tuple(missing[i : i + CHUNK]) for i in range(0, len(missing), CHUNK)]
        ctx.extract([FeatureChunk(member.name, n_classes, config, ctx.layout, chunk) for chunk in chunks])
        store = feature_store(ctx.layout, member, model, size, config.resize_ratio)  # what they added
    embedded = embed_snapshot(ctx, member, model, size, store)
    train, val = ctx.snapshot.split("train"), ctx.snapshot.split("val")
    head, probe = fit_head(
        store.read,
        _rows(train),
        _rows(val),
        store.dim,
        n_classes,
        config.head_epochs,
        config.label_smoothing,
        config.seed,
        BALANCES if config.balance == "auto" else (config.balance,),
    )
    record: dict[str, Any] = {"image_size": size, "embedded": embedded, **probe, "epochs": []}
    log_probe(member, probe)
    val_labels = torch.tensor([e.label for e in val])
    val_logits = torch.stack([head(f) for f in store.read([e.key for e in val]).unbind(1)], 1).detach()
    if mode == "quick":
        if config.refit and val:
            head = refit_head(ctx, store.read, store.dim, probe)
            record["refit_photos"] = len(train) + len(val)
        model.get_submodule(member.head).load_state_dict(head.state_dict())
        return model, val_logits, record
    model.get_submodule(member.head).load_state_dict(head.state_dict())
    if mode == "top":
        progress.info("%s: top mode tunes EfficientNet-Lite members only; its head stays the probe", member.name)
        return model, val_logits, record
    resize = round(size * config.resize_ratio)
    train_photos = Photos(ctx.refs(train), [e.label for e in train], ctx.cache, resize, size, train=True)
    generator = torch.Generator().manual_seed(config.seed)
    # On a CPU the loader's workers augment too, beside the model's step; a GPU does it itself.
    on_cpu_workers = ctx.dev.type == "cpu" and ctx.workers > 0
    train_loader = ctx.loader(
        train_photos,
        config.batch_size,
        shuffle=True,
        generator=generator,
        drop_last=len(train_photos) > config.batch_size,
        collate_fn=AugmentingCollate(size, member.mean, member.std) if on_cpu_workers else None,
        persistent=True,
    )
    val_loader = ctx.loader(ctx.eval_photos(val, size), config.batch_size * 2)
    schedule = Schedule(config.epochs, config.warmup_epochs, config.patience, deadline)
    model, val_logits, history = finetune(
        model,
        member,
        size,
        train_loader,
        val_loader,
        val_labels,
        config.lr,
        config.backbone_lr_scale,
        config.weight_decay,
        config.label_smoothing,
        schedule,
        ctx.dev,
        config.seed,
        config.embedding_weight,
    )
    record["epochs"] = history
    return model.cpu(), val_logits, record


def top_inputs(
    layout: Layout, member: Member, model: EfficientNetLite, size: int, config: TrainConfig
) -> tuple[Split, FeatureStore, tuple[int, ...]]:
    """`model` cut before its top, the store of its top's inputs, and the shape of one photo's."""
    split = Split(model, config.top_blocks)
    shape = tuple(split.lower(torch.zeros(1, 3, size, size)).shape[1:])
    return split, activation_store(layout, member, model, size, config.resize_ratio, config.top_blocks, shape), shape


def train_member_top(
    ctx: Context, member: Member, model: EfficientNetLite, size: int, deadline: float
) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
    """Top mode: every photo runs once through the frozen lower blocks and their output is kept on
    disk (a retrain finds it there). The probe is fitted on the top's features of those
    activations, the last blocks are fine-tuned on them, and the tuned model's features of every
    photo come from them too: no photo is decoded twice. Returns what train_member does."""
    config, n_classes = ctx.config, len(ctx.snapshot.classes)
    split, store, shape = top_inputs(ctx.layout, member, model, size, config)
    by_key = {e.key: e for e in ctx.snapshot.examples}
    examples = list(by_key.values())
    warm_from = ctx.warm.version if ctx.warm and member.name in ctx.warm.states else ""
    if ctx.warm and warm_from:  # after the store is named: its activations are the ImageNet body's
        model.load_state_dict(ctx.warm.states[member.name], strict=False)
        progress.info("%s: its top starts from production %s's", member.name, warm_from)

    def batches(todo: list[str]) -> Any:
        with Bar(len(todo), f"{member.name} inputs of the top") as bar:
            for x, y in ctx.loader(ctx.eval_photos([by_key[k] for k in todo], size), config.batch_size * 2):
                yield x, y
                bar.update(len(y))

    started = time.monotonic()
    embedded = embed_missing(
        store, list(by_key), batches, lambda x: split.lower(normalize(x, member.mean, member.std)).flatten(1)[:, None]
    )
    lower_seconds = (time.monotonic() - started) / embedded if embedded else lower_pass_seconds(split, size)
    progress.info("%s: inputs of the top of %d photos computed in %.0f s, %d read from the cache",
                  member.name, embedded, time.monotonic() - started, len(by_key) - embedded)  # fmt: skip

    def rows(of: list[Example]) -> StoredRows:
        return StoredRows(store, [e.key for e in of], shape)

    def features_into(features: FeatureStore, of: list[Example]) -> float:
        """Adds the top's features of the photos `features` lacks; returns the seconds a photo took."""
        todo = [by_key[k] for k in features.missing([e.key for e in of])]
        timed = todo or of[:64]  # all there already: a batch is timed all the same
        started = time.monotonic()
        for i in range(0, len(timed), CHUNK * 8):
            part = timed[i : i + CHUNK * 8]
            found = top_features(split, rows(part))[:, None].half().numpy()
            if todo:
                features.add([e.key for e in part], found)
        return (time.monotonic() - started) / max(1, len(timed))

    # The probe's features: the frozen body's (quick mode finds them later), or the body a
    # retrain starts from. Kept on disk like quick mode's, so a large shop's are never all held.
    train, val = ctx.snapshot.split("train"), ctx.snapshot.split("val")
    start = feature_store(ctx.layout, member, model, size, config.resize_ratio)
    # The last pass, every photo through the tuned top, costs about what this one does a photo.
    final_pass = features_into(start, train + val) * len(examples)
    head, probe = fit_head(
        start.read, _rows(train), _rows(val), start.dim, n_classes, config.head_epochs, config.label_smoothing,
        config.seed, BALANCES if config.balance == "auto" else (config.balance,),
    )  # fmt: skip
    model.get_submodule(member.head).load_state_dict(head.state_dict())
    log_probe(member, probe)
    train_set = (rows(train), torch.tensor([e.label for e in train]))
    epochs = config.top_retrain_epochs if warm_from else config.top_epochs
    lr = TOP_LR * (config.top_retrain_lr_scale if warm_from else 1.0)
    # The views come second to the epochs: each is taken only if every planned epoch still fits.
    epoch_guess = epoch_seconds(split, train_set, rows(val)) if math.isfinite(deadline) else None
    reserve = final_pass + epochs * epoch_guess if epoch_guess is not None else 0.0
    view_stores = [view_store(store, view) for view in range(1, config.top_views + 1)]
    views = augmented_views(ctx, member, split, size, shape, view_stores, train, lower_seconds, deadline - reserve)
    started = time.monotonic()
    result = tune_top(
        split,
        train_set,
        (rows(val), torch.tensor([e.label for e in val])),
        epochs,
        views=views,
        lr=lr,
        label_smoothing=config.label_smoothing,
        seed=config.seed,
        deadline=deadline - final_pass,
        epoch_guess=epoch_guess,
    )
    progress.info("%s: last %d blocks tuned in %.0f s on %d views of each photo, val top-1 by epoch %s, kept epoch %d",
                  member.name, config.top_blocks, time.monotonic() - started, 1 + len(views), result.val_top1,
                  result.best_epoch)  # fmt: skip
    # The tuned body's features of every photo, for the search embedding and the evaluation.
    features_into(feature_store(ctx.layout, member, model, size, config.resize_ratio), examples)
    record: dict[str, Any] = {"image_size": size, "embedded": embedded, **probe, "epochs": [],
              "top_tune": {"blocks": config.top_blocks, "views": len(views), **asdict(result),
                           "warm_from": warm_from, "lr": lr}}  # fmt: skip
    return model, top_logits(split, rows(val))[:, None], record


def augmented_views(
    ctx: Context,
    member: Member,
    split: Split,
    size: int,
    shape: tuple[int, ...],
    stores: list[FeatureStore],
    train: list[Example],
    lower_seconds: float,
    until: float,
) -> tuple[StoredRows, ...]:
    """The activations of augmented views of every training photo (a random resized crop, flip and
    colour each), one store a view, kept on disk like the centre crop's: a retrain computes only
    new photos'. A view is taken only if its pass (`lower_seconds` a photo) ends by `until`."""
    keys, by_key = [e.key for e in train], {e.key: e for e in train}
    side = round(size * ctx.config.resize_ratio)
    found: list[StoredRows] = []
    for view, store in enumerate(stores, 1):
        if time.monotonic() + lower_seconds * len(store.missing(keys)) > until:
            progress.info("%s: %d augmented views of each photo; another would not leave the epochs their time",
                          member.name, view - 1)  # fmt: skip
            break
        gen = torch.Generator().manual_seed(ctx.config.seed * 1000 + view)

        def batches(todo: list[str], view: int = view) -> Any:
            chosen = [by_key[k] for k in todo]
            photos = Photos(ctx.refs(chosen), [e.label for e in chosen], ctx.cache, side, side)
            with Bar(len(todo), f"{member.name} view {view} of the top's inputs") as bar:
                for x, y in ctx.loader(photos, ctx.config.batch_size * 2):
                    yield x, y
                    bar.update(len(y))

        def lower(x: torch.Tensor, gen: torch.Generator = gen) -> torch.Tensor:
            return split.lower(augment(x, size, member.mean, member.std, gen)).flatten(1)[:, None]

        embed_missing(store, keys, batches, lower)
        found.append(StoredRows(store, keys, shape))
    return tuple(found)


def lower_pass_seconds(split: Split, size: int, n: int = 4) -> float:
    """Seconds the frozen lower blocks take a photo, timed on a small batch (its second pass)."""
    x = torch.zeros(n, 3, size, size)
    split.lower(x)
    started = time.monotonic()
    split.lower(x)
    return (time.monotonic() - started) / n


def log_probe(member: Member, probe: dict[str, Any]) -> None:
    progress.info(
        "%s: probe val top-1 %.3f, macro-F1 %.3f (L2 %g, balancing: %s)",
        member.name,
        probe["probe_val_top1"],
        probe["probe_val_macro_f1"],
        probe["probe_l2"],
        probe["probe_balance"],
    )


def refit_head(ctx: Context, read: Callable[[list[str]], torch.Tensor], dim: int, chosen: dict[str, Any]) -> nn.Linear:
    """The head with the settings validation chose, fitted on train and val together."""
    config = ctx.config
    probe = Probe(read, dim, len(ctx.snapshot.classes), config.head_epochs, config.label_smoothing, config.seed)
    return probe.fit(probe.source(_rows(ctx.snapshot.split("train") + ctx.snapshot.split("val"))), settings_of(chosen))


def member_share(members: list[Member], config: TrainConfig, mode: str, now: float, deadline: float) -> float:
    """When the first of `members` must be done. Top mode plans each member's work to an end
    (`top_epochs`, `top_views`), so the strongest, first, takes what its plan needs and those
    after it go in while they fit: on the grocery photos in 30 minutes from cold, Lite2 tuned to
    its end scored 83.9 Top-1 where three members cut to a share each voted 82.2. Full mode's
    epochs run until validation stops improving, so each member gets a share of what is left in
    proportion to its cost."""
    if mode == "top":
        return deadline
    share = members[0].cost(config.image_size) / sum(m.cost(config.image_size) for m in members)
    return now + (deadline - now) * share


def fits(member: Member, last: tuple[Member, float], deadline: float, image_size: int) -> bool:
    """Whether `member` is expected to finish by `deadline`, judged by what the last one took per unit of cost."""
    if math.isinf(deadline):
        return True
    previous, seconds = last
    expected = seconds * member.cost(image_size) / previous.cost(image_size)
    return time.monotonic() + expected <= deadline


def extract_chunk(chunk: FeatureChunk) -> int:
    """Embeds a chunk's photos into its member's feature cache; returns how many it embedded."""
    member = get_member(chunk.member)
    weights = chunk.config.weights.get(member.name)
    model = member.build(chunk.n_classes, Path(weights) if weights else None, True)
    size = member.input_size(chunk.config.image_size)
    store = feature_store(chunk.layout, member, model, size, chunk.config.resize_ratio)
    snapshot = Snapshot("chunk", [], list(chunk.examples))
    # No loader processes of its own: a cluster's worker process may not start children.
    ctx = Context(snapshot, chunk.layout, chunk.config, photo_cache(chunk.config, chunk.layout), device(), 0)
    return embed_snapshot(ctx, member, model, size, store)


def train(config: TrainConfig, layout: Layout, extract: FeatureExtractor | None = None) -> Path:
    """Snapshots the accepted photos and trains every member; returns the run folder.

    The run folder holds model.pt (every member's weights, the classes, the calibration and the
    config that made them) and snapshot.json (the photos and their split).
    """
    started = time.monotonic()
    for name in config.members:
        get_member(name)  # an unknown name fails before any work
    snapshot = make_snapshot(
        layout, config.val_share, config.test_share, config.seed, config.min_photos, config.train_on_boxes
    )
    if len(snapshot.classes) < 2:
        raise NotEnoughData(
            f"{len(snapshot.classes)} products have {max(config.min_photos, 2)} or more accepted photos: "
            "at least 2 are needed to train; `reviewlens index` makes every product searchable without training"
        )
    if snapshot.searched_only:
        progress.info(
            "training %d products; %d with fewer than %d accepted photos are searched, not trained on "
            "(`reviewlens index` holds their photos)",
            len(snapshot.classes),
            snapshot.searched_only,
            max(config.min_photos, 2),
        )
    if not config.force and (version := same_as_production(layout, snapshot, config)):
        raise NothingNew(
            f"nothing new to train on: the production model {version} was made from these "
            f"{len(snapshot.examples)} photos with these settings (force trains again)"
        )
    return train_snapshot(snapshot, config, layout, started, extract)


def train_snapshot(
    snapshot: Snapshot,
    config: TrainConfig,
    layout: Layout,
    started: float | None = None,
    extract: FeatureExtractor | None = None,
) -> Path:
    """Trains every member on a snapshot whose photos lie in the layout's store; returns the run folder."""
    started = started or time.monotonic()
    deadline = started + config.budget_minutes * 60 if config.budget_minutes else math.inf
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    members = [get_member(name) for name in config.members]
    dev = device()
    mode = resolve_mode(config, dev)
    ctx = Context(
        snapshot,
        layout,
        config,
        photo_cache(config, layout),
        dev,
        config.workers or default_workers(),
        extract,
        warm_start(layout, snapshot, config) if mode == "top" else None,
    )
    progress.info(
        "training %s mode on %s: %d products, %d train (%d of them cut to a person's box) / %d val / %d test photos",
        mode,
        dev,
        len(snapshot.classes),
        len(snapshot.split("train")),
        sum(1 for e in snapshot.split("train") if e.box),
        len(snapshot.split("val")),
        len(snapshot.split("test")),
    )
    with building_run(layout, snapshot.snapshot_id) as (work_dir, run_dir):
        snapshot.save(work_dir / "snapshot.json")
        models, val_logits, records = {}, {}, {}
        last: tuple[Member, float] | None = None  # the member trained last, and what it took
        for i, member in enumerate(members):
            if last is not None and not fits(member, last, deadline, config.image_size):
                progress.info("%s left out: it would not finish within the time budget", member.name)
                continue
            member_started = time.monotonic()
            member_deadline = member_share(members[i:], config, mode, member_started, deadline)
            models[member.name], val_logits[member.name], records[member.name] = train_member(
                ctx, member, mode, member_deadline
            )
            last = (member, time.monotonic() - member_started)
        val_labels = torch.tensor([e.label for e in snapshot.split("val")])
        calibration = calibrate(val_logits, val_labels, config.sure_precision)
        progress.info("calibrated on validation: %s", calibration)
        embedding = train_embedding(ctx, models, ensemble_probs(val_logits, calibration))
        torch.save(
            bundle(
                snapshot,
                config,
                mode,
                models,
                records,
                calibration,
                embedding,
                time.monotonic() - started,
                run_dir.name,
            ),
            work_dir / "model.pt",
        )
    return run_dir


def train_embedding(ctx: Context, models: dict[str, nn.Module], val_probs: torch.Tensor) -> Embedding:
    """The search embedding on the trained bodies' features (quick mode: the ones already cached).
    Its temperature and the merged answer's "sure" threshold are fitted by searching the
    validation photos among the training photos and merging with the classifier's `val_probs`."""
    features: dict[str, FeatureStore] = {}
    for name, model in models.items():
        member = get_member(name)
        size = member.input_size(ctx.config.image_size)
        features[name] = feature_store(ctx.layout, member, model, size, ctx.config.resize_ratio)
        embed_snapshot(ctx, member, model, size, features[name])  # a fine-tuned body sees its photos again

    def embed(examples: list[Example]) -> dict[str, torch.Tensor]:
        return {name: store.read([e.key for e in examples])[:, 0] for name, store in features.items()}

    train, val = ctx.snapshot.split("train"), ctx.snapshot.split("val")
    if len(train) > EMBEDDING_PHOTOS:
        chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(ctx.config.seed))
        train = [train[int(i)] for i in chosen[:EMBEDDING_PHOTOS].sort().values]
    train_labels = torch.tensor([e.label for e in train])
    embedding = fit_embedding(embed(train), train_labels, ctx.config.seed)
    if val:
        val_labels = torch.tensor([e.label for e in val])
        n = len(ctx.snapshot.classes)
        photos, queries = embedding(embed(train)), embedding(embed(val))
        # Each product's best among the catalog photos and among the customers', as the index
        # searches them (search/finder.py); the map is fitted on the customers' validation photos.
        catalog = torch.tensor([e.catalog for e in train], dtype=torch.bool)

        def best_among(kind: torch.Tensor) -> torch.Tensor:
            if not kind.any():
                return torch.full((len(queries), n), -1.0)
            return nearest_by_product(queries, photos[kind], train_labels[kind], n)[0]

        best_catalog, best_customer = best_among(catalog), best_among(~catalog)
        customers = torch.tensor([not e.catalog for e in val], dtype=torch.bool)
        embedding.catalog_scale, embedding.catalog_shift = fit_catalog_map(
            best_catalog[customers], best_customer[customers], val_labels[customers]
        )
        best = torch.maximum(best_customer, embedding.in_customer_terms(best_catalog))
        embedding.temperature = fit_temperature(best, val_labels)
        merged = merge(val_probs, best, embedding.temperature)
        embedding.sure_threshold = sure_threshold(merged, val_labels, ctx.config.sure_precision)
        own = best.gather(1, val_labels[:, None])[:, 0]
        embedding.object_similarity = float(own[own > -1].quantile(0.05)) if (own > -1).any() else 0.0
        # The product of each validation photo's nearest training photo, of either kind.
        hits = float((torch.maximum(best_customer, best_catalog).argmax(1) == val_labels).float().mean())
        progress.info(
            "search embedding: val nearest-photo top-1 %.3f, merged top-1 %.3f, temperature %g, sure from %.2f%s",
            hits,
            float((merged.argmax(1) == val_labels).float().mean()),
            embedding.temperature,
            embedding.sure_threshold,
            catalog_line(embedding, int(catalog.sum())),
        )
    return embedding


def catalog_line(embedding: Embedding, catalog_photos: int) -> str:
    """The catalog photos' map for the training log, where the shop has catalog photos."""
    if not catalog_photos:
        return ""
    if (embedding.catalog_scale, embedding.catalog_shift) == (1.0, 0.0):
        return f"; {catalog_photos} catalog photos, too few beside validation to map their similarity"
    return (
        f"; a catalog photo's similarity s counts as {embedding.catalog_scale:.2f}s"
        f" {embedding.catalog_shift:+.2f} ({catalog_photos} catalog photos)"
    )


def bundle(
    snapshot: Snapshot,
    config: TrainConfig,
    mode: str,
    models: dict[str, nn.Module],
    records: dict[str, dict[str, Any]],
    calibration: Calibration,
    embedding: Embedding,
    seconds: float,
    version: str,
) -> dict[str, Any]:
    """model.pt's content: tensors and plain data only, so it loads without running code."""
    return {
        "format": BUNDLE_FORMAT,
        "version": version,
        "classes": [asdict(c) for c in snapshot.classes],
        "snapshot_id": snapshot.snapshot_id,
        "mode": mode,
        "train_seconds": round(seconds, 1),
        "config": {**asdict(config), "weights": dict(config.weights)},
        "calibration": asdict(calibration),
        "embedding": embedding.state(),
        "members": {
            name: {"state_dict": model.cpu().state_dict(), "history": records[name]} for name, model in models.items()
        },
    }
