"""The probe's choices: balancing where products are uneven, plain log-loss where they are not."""

from __future__ import annotations

import torch

from training.head import HeadSettings, Probe, Rows, fit_head


def _features(counts: list[int], spread: float, seed: int) -> tuple[dict[str, torch.Tensor], Rows]:
    """Photos of len(counts) products as 8-dim features around each product's centre."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.eye(len(counts), 8) * 2.0
    store, shas, labels = {}, [], []
    for label, n in enumerate(counts):
        for i in range(n):
            sha = f"s{seed}-{label}-{i}"
            store[sha] = (centres[label] + spread * torch.randn(8, generator=gen))[None]
            shas.append(sha)
            labels.append(label)
    return store, Rows(shas, labels)


def _reader(store: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    return lambda shas: torch.stack([store[s] for s in shas])


def test_uneven_products_are_balanced_where_validation_says_it_helps() -> None:
    # One product with 300 photos, three with 6; validation holds each product alike.
    train_store, train = _features([300, 6, 6, 6], 1.6, seed=1)
    val_store, val = _features([40, 40, 40, 40], 1.6, seed=2)
    read = _reader({**train_store, **val_store})
    head, record = fit_head(read, train, val, 8, 4, epochs=5, label_smoothing=0.0, seed=0)
    assert record["probe_balance"] in ("loss", "adjust")
    # The plain head names the big product for most of the small ones' photos; the chosen one does not.
    plain = Probe(read, 8, 4, 5, 0.0, 0).fit(Probe(read, 8, 4, 5, 0.0, 0).source(train), HeadSettings(1e-3))
    x = read(val.shas)[:, 0]
    labels = torch.tensor(val.labels)
    small = labels > 0
    chosen_right = (head(x).argmax(-1) == labels)[small].float().mean()
    plain_right = (plain(x).argmax(-1) == labels)[small].float().mean()
    assert chosen_right > plain_right + 0.1


def test_even_products_keep_the_plain_head() -> None:
    train_store, train = _features([30, 30, 30], 0.5, seed=3)
    val_store, val = _features([10, 10, 10], 0.5, seed=4)
    _, record = fit_head(_reader({**train_store, **val_store}), train, val, 8, 3, 5, 0.0, 0)
    assert record["probe_balance"] == "none" and record["probe_val_top1"] == 1.0
