"""The catalog photos' map for an index no training validated: the pretrained bodies' (search
before any training, training/pretrained.py).

A trained model fits the map that puts a catalog photo's similarity in customer photos' terms on
its validation photos (training/embedding.py). Before any training there are none, so the index's
own customer photos of products that also have a catalog photo play them: for a sample of
products, the photos of some of each product's sources (a review's photos, held out whole, as a
split holds them) are asked against the product's catalog photo and the photos of its other
sources, and against the other sampled products' alike. Without such products (a shop of catalog
photos alone) the map is none, and a catalog photo's similarity counts as it is.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from core.boxes import VIEW_MARK
from search.product_index import ProductIndex
from training.embedding import best_by_product, fit_catalog_map

PRODUCTS = 200  # products sampled: the fit's cost stays flat as the shop grows
ASKED = 5  # of each, customer photos asked (whole sources)
COMPARED = 20  # of each, customer photos of its other sources they are compared with


def index_catalog_map(index: ProductIndex, source_of: dict[str, str], seed: int = 0) -> tuple[float, float]:
    """(catalog_scale, catalog_shift) fitted on `index`'s own photos; `source_of` names each
    photo's source by its key (a photo without one is a source of its own)."""
    catalog: dict[str, list[int]] = defaultdict(list)
    customers: dict[str, list[int]] = defaultdict(list)
    for row, entry in enumerate(index.entries):
        if entry.catalog:
            catalog[entry.product_id].append(row)
        elif VIEW_MARK not in entry.key:  # a view cut to a box is its photo's: never held out apart
            customers[entry.product_id].append(row)
    rng = np.random.default_rng(seed)
    products = sorted(p for p in catalog if len(customers[p]) >= 2)
    products = [products[i] for i in sorted(rng.permutation(len(products))[:PRODUCTS])]
    asked: list[int] = []
    asked_labels: list[int] = []
    compared: list[int] = []
    compared_labels: list[int] = []
    for label, product in enumerate(products):
        by_source: dict[str, list[int]] = defaultdict(list)
        for row in customers[product]:
            key = index.entries[row].key
            by_source[source_of.get(key, key)].append(row)
        sources = [by_source[s] for s in sorted(by_source)]
        # Whole sources asked, the first always, then more up to ASKED photos; the rest compared.
        held: list[int] = []
        kept: list[int] = []
        for i, n in enumerate(rng.permutation(len(sources))):
            if i == 0 or (len(held) + len(sources[n]) <= ASKED and i < len(sources) - 1):
                held += sources[n]
            else:
                kept += sources[n]
        asked += held[:ASKED]
        asked_labels += [label] * len(held[:ASKED])
        compared += kept[:COMPARED]
        compared_labels += [label] * len(kept[:COMPARED])
    catalog_rows = [(row, label) for label, p in enumerate(products) for row in catalog[p]]
    if not asked or not compared or not catalog_rows:
        return 1.0, 0.0
    queries = torch.from_numpy(index.gather(np.array(asked)))
    truth = torch.tensor(asked_labels)

    def best(rows: list[int], labels: list[int]) -> torch.Tensor:
        order = np.argsort(rows, kind="stable")  # gathered in row order
        photos = torch.from_numpy(index.gather(np.array(rows)[order]))
        return best_by_product(queries @ photos.T, torch.tensor(labels)[order], len(products))

    return fit_catalog_map(
        best([r for r, _ in catalog_rows], [lb for _, lb in catalog_rows]), best(compared, compared_labels), truth
    )
