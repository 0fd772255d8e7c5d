"""The Ohouse adapter: URLs of the shop's rankings and reviews, and pure parsers of its responses.

Shapes from ../shared/docs/ohouse.md. A parser that does not find what it expects raises
LayoutChanged naming the field or selector, never returns an empty result. One item of a list
that does not read (a field missing, or of another kind) is set aside with its reason and the
page's other items are read: only a page none of whose items reads is a changed layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode, urljoin

from bs4 import BeautifulSoup

from core.errors import ConfigError, quoted
from crawler.errors import LayoutChanged

PRODUCT_LINK = re.compile(r"/productions/(\d+)(?:/|$)")
T = TypeVar("T")


@dataclass(frozen=True)
class RankedProduct:
    product_id: str
    name: str  # empty when the ranking does not carry it; reviews carry it too
    review_count: int


@dataclass(frozen=True)
class Review:
    review_id: str
    created_at: str
    photo_url: str  # empty when the review has no photo
    product_name: str


def _field(obj: Any, path: str) -> Any:
    """Returns obj[a][b]... for path 'a.b', raising LayoutChanged naming the missing part."""
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise LayoutChanged(f"field '{path}' not found (missing '{part}')")
        obj = obj[part]
    return obj


def _text(obj: dict[str, Any], path: str) -> str:
    """An optional text field ('' when absent); a number is read as its digits, anything else
    (an object, a list) is a changed layout naming the field."""
    value: Any = obj
    for part in path.split("."):
        if value is None or value == "":
            return ""
        if not isinstance(value, dict):
            raise LayoutChanged(f"field '{path}' is not an object at '{part}'")
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise LayoutChanged(f"field '{path}' is not text: {quoted(json.dumps(value), 60)}")
    return str(value)


def _count(obj: dict[str, Any], name: str) -> int:
    """An optional count (0 when absent): a whole number from 0, or a changed layout naming it."""
    value = obj.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LayoutChanged(f"field '{name}' is not a count: {quoted(json.dumps(value), 60)}")
    return value


@dataclass(frozen=True)
class Parsed(Generic[T]):
    """The items of one page that read, and those that did not: (place on the page, reason)."""

    items: list[T]
    bad: list[tuple[int, str]]


def _each(payload: Any, name: str, read: Callable[[dict[str, Any]], T]) -> Parsed[T]:
    raw = _field(payload, name) if isinstance(payload, dict) else None
    if not isinstance(raw, list):
        raise LayoutChanged(f"field '{name}' is not a list")
    good: list[T] = []
    bad: list[tuple[int, str]] = []
    for place, item in enumerate(raw):
        try:
            if not isinstance(item, dict):
                raise LayoutChanged(f"field '{name}' holds an item that is not an object")
            good.append(read(item))
        except LayoutChanged as exc:
            bad.append((place, str(exc)))
    if bad and not good:
        raise LayoutChanged(f"none of the {len(bad)} items of '{name}' reads: {bad[0][1]}")
    return Parsed(good, bad)


def load_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LayoutChanged(f"{what} is not JSON: {body[:60]!r}") from exc
    except RecursionError as exc:  # nested deeper than any answer of the shop: thousands of levels
        raise LayoutChanged(f"{what} is JSON nested too deep to read") from exc


def parse_ranking_json(payload: Any) -> Parsed[RankedProduct]:
    """Returns the ranked products of one ranks.json page, best first."""

    def read(p: dict[str, Any]) -> RankedProduct:
        product_id = _text(p, "id") or str(_field(p, "id"))
        if not product_id:
            raise LayoutChanged("field 'id' is empty")
        return RankedProduct(product_id, _text(p, "name"), _count(p, "review_count"))

    return _each(payload, "products", read)


def parse_ranking_html(text: str) -> list[str]:
    """Returns product ids of a ranking page in page order, each once.

    Class names on the real page are generated per deploy, so products are found by the
    link pattern /productions/<id>.
    """
    soup = BeautifulSoup(text, "html.parser")
    ids: list[str] = []
    for a in soup.find_all("a", href=True):
        m = PRODUCT_LINK.search(str(a["href"]))
        if m and m.group(1) not in ids:
            ids.append(m.group(1))
    if not ids:
        raise LayoutChanged("no link matching /productions/<id> on the ranking page")
    return ids


def parse_catalog_photo(text: str, page_url: str) -> str:
    """The URL of the product page's own photo, its Open Graph image; "" when the page names none.

    Shops name it for sharing links; a page without it is not a changed layout, only a product
    without a catalog photo.
    """
    tag = BeautifulSoup(text, "html.parser").find("meta", attrs={"property": "og:image"})
    content = str(tag.get("content") or "").strip() if tag is not None else ""
    return urljoin(page_url, content) if content else ""


def parse_reviews(payload: Any) -> Parsed[Review]:
    """Returns the reviews of one production_reviews.json page; none at the end of paging."""

    def read(r: dict[str, Any]) -> Review:
        _field(r, "card.image_url")  # the key is required, its value may be null: a missing one is named
        review_id = _text(r, "id") or str(_field(r, "id"))
        if not review_id:
            raise LayoutChanged("field 'id' is empty")
        photo_url, name = _text(r, "card.image_url"), _text(r, "production_information.name")
        return Review(review_id, _text(r, "created_at"), photo_url, name)

    return _each(payload, "reviews", read)


@dataclass(frozen=True)
class OhouseAdapter:
    """Where the Ohouse pages lie; base URLs are configurable so the demo shop stands in."""

    shop_url: str = "https://ohou.se"
    ranking_url: str = "https://store.ohou.se"
    per_page: int = 20
    name: str = "ohouse"

    def ranking_json_url(self, category_id: int, page: int) -> str:
        q = urlencode({"v": 2, "type": "best", "category": category_id, "page": page, "per": self.per_page})
        return f"{self.shop_url}/commerces/ranks.json?{q}"

    def ranking_html_url(self, category_id: int) -> str:
        return f"{self.ranking_url}/ranks?{urlencode({'type': 'best', 'category_id': category_id})}"

    def reviews_url(self, product_id: str, page: int) -> str:
        q = urlencode({"production_id": product_id, "page": page, "order": "recent", "photo_review_only": "true"})
        return f"{self.shop_url}/production_reviews.json?{q}"

    def product_url(self, product_id: str) -> str:
        return f"{self.shop_url}/productions/{product_id}/selling"


ADAPTERS = {"ohouse": OhouseAdapter}


def get_adapter(name: str, shop_url: str, ranking_url: str) -> OhouseAdapter:
    """Returns the adapter registered as `name`; an unknown name lists the valid ones."""
    if name not in ADAPTERS:
        raise ConfigError(f"unknown shop '{name}'; valid shops: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name](shop_url=shop_url.rstrip("/"), ranking_url=ranking_url.rstrip("/"))
