"""Where a stored photo lies, derived from its hash, and whether its bytes are still the ones stored.

The store names each photo `<first two hex digits>/<sha256>.<ext>`. A manifest path that is not
that name for its hash is refused, whatever it points at. A photo whose file is missing or whose
bytes no longer hash to its name is damaged: it is taken out of use (its review is recorded as a
failed photo) and the next crawl fetches it again.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from core import queries as q
from core.errors import ReviewlensError
from core.layout import Layout
from core.manifest import Manifest, Row, utc_now
from core.store import localise

log = logging.getLogger(__name__)
EXTENSIONS = ("jpg", "png", "webp", "gif")
SHA256 = re.compile(r"[0-9a-f]{64}")
DAMAGED = ".damaged"  # where damaged files are moved, under the store, for a person to look at


class OutsideStore(ReviewlensError):
    """A manifest path that is not the store's own name for the photo's hash."""


def store_name(sha256: str, extension: str) -> str:
    """The path, relative to the store, of the photo with this hash."""
    return f"{sha256[:2]}/{sha256}.{extension}"


def photo_path(layout: Layout, sha256: str, rel: str) -> Path:
    """The file of a stored photo; raises OutsideStore for a path the store would not have written."""
    name = PurePosixPath(rel)
    if not (SHA256.fullmatch(sha256) and name.suffix[1:] in EXTENSIONS and rel == store_name(sha256, name.suffix[1:])):
        raise OutsideStore(f"photo {sha256[:12]}: the manifest's path {rel!r} is not the store's own")
    return layout.store_dir / rel


def find_damaged(manifest: Manifest, layout: Layout, photos: Iterable[Row]) -> dict[str, str]:
    """{sha256: reason} of the `photos` (rows with sha256 and path) that cannot be used as stored.

    A file is hashed again only when its size or modification time changed since it last
    proved intact. A missing or changed photo is recorded as a failed fetch of its reviews and
    a changed file is set aside, so the next crawl fetches the photo again; a path the store
    would not have written is refused and left for a person.
    """
    intact = {r["sha256"]: (r["bytes"], r["mtime_ns"]) for r in manifest.rows(q.INTACT_PHOTOS)}
    refused: dict[str, str] = {}
    damaged: dict[str, str] = {}
    proved: list[tuple[str, int, int]] = []
    changed: list[Path] = []
    paths: dict[str, Path] = {}
    for row in photos:
        try:
            paths[row["sha256"]] = photo_path(layout, row["sha256"], row["path"])
        except OutsideStore as exc:
            refused[row["sha256"]] = str(exc)
            log.warning("%s: left out", exc)
    # Where the store is shared, this machine first fetches the photos it has no copy of.
    localise(layout, (str(path.relative_to(layout.store_dir)) for path in paths.values()))
    for sha, path in paths.items():
        try:
            stat = path.stat()
        except FileNotFoundError:
            damaged[sha] = "missing from the store"
            continue
        if intact.get(sha) == (stat.st_size, stat.st_mtime_ns):
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            damaged[sha] = "bytes in the store do not match their hash"
            changed.append(path)
            continue
        proved.append((sha, stat.st_size, stat.st_mtime_ns))
    for path in changed:
        aside = layout.store_dir / DAMAGED / path.name
        aside.parent.mkdir(exist_ok=True)
        path.replace(aside)
    now = utc_now()
    with manifest.transaction() as db:
        db.run_many(q.PROVE_INTACT, proved)
        for sha, reason in damaged.items():
            log.warning("photo %s: %s; the next crawl fetches it again", sha[:12], reason)
            db.run(q.FAIL_SOURCES_OF, reason, now, sha)
            db.run(q.DELETE_SOURCES_OF, sha)
            db.run(q.FORGET_INTACT, sha)
    return {**refused, **damaged}
