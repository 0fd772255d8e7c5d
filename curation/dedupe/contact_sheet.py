"""A page to check the machine at a glance: every duplicate group, and the rule verdicts."""

from __future__ import annotations

import html
import os
from collections import defaultdict
from pathlib import Path

from core import queries as q
from core.layout import Layout
from core.manifest import Row, open_manifest
from curation.preannotate.estimates import photo_verdict

STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
.row { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 14px; align-items: flex-start; }
.group { display: flex; gap: 4px; padding: 4px; border: 1px solid #bbb; border-radius: 4px; }
dl.legend { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; max-width: 60em; }
dl.legend dt { font-weight: bold; } dl.legend dd { margin: 0; }
figure { margin: 0; width: 150px; font-size: 11px; }
img { width: 150px; height: 150px; object-fit: contain; background: #eee; border: 3px solid #ccc; }
.kept img { border-color: #2a2; } .ambiguous img { border-color: #d22; }
.framed { position: relative; width: 150px; }
.framed img { height: auto; display: block; border-width: 0; }
.box { position: absolute; border: 2px solid #f0f; box-sizing: border-box; }
h2 { border-bottom: 1px solid #999; }
"""


# What the verdicts and the captions under each photo mean.
VERDICTS = {
    "pass": "The machine finds both rules met: a person is still asked, and usually agrees.",
    "fail": "The machine finds a rule broken (the product too small, or several products).",
    "unsure": "The machine cannot tell: these photos go to people first.",
}
LEGEND = """
<h2>How to read the verdicts</h2>
<p>Each photo is judged on the study's two rules: the product covers at least half of the photo,
and the photo shows exactly one product. The caption under a photo reads:</p>
<dl class="legend">
<dt>coverage</dt><dd>the share of the photo the product's box covers (magenta), as the machine found it</dd>
<dt>object(s)</dt><dd>how many products the detector counted in the photo</dd>
<dt>score</dt><dd>the machine's confidence in its verdict, 0 to 1: unsure tasks come first in Label Studio</dd>
<dt>pass / fail / unsure</dt><dd>its verdict on each rule, coverage first, then one product</dd>
<dt>person</dt><dd>what a person decided in Label Studio, where one has</dd>
</dl>
"""


def _figure(src: str, caption: str, css: str = "") -> str:
    img = f'<img loading="lazy" src="{html.escape(src)}">'
    return f'<figure class="{css}">{img}<figcaption>{caption}</figcaption></figure>'


def _framed(src: str, box: str | None, caption: str) -> str:
    """A thumbnail at the photo's own shape with the machine's product box drawn over it."""
    overlay = ""
    if box:
        left, top, right, bottom = (100 * float(v) for v in box.split(","))
        overlay = (
            f'<div class="box" style="left:{left:.1f}%;top:{top:.1f}%;'
            f'width:{right - left:.1f}%;height:{bottom - top:.1f}%"></div>'
        )
    img = f'<img loading="lazy" src="{html.escape(src)}">'
    return f'<figure><div class="framed">{img}{overlay}</div><figcaption>{caption}</figcaption></figure>'


def write_contact_sheet(layout: Layout, out: Path | None = None, per_verdict: int = 60) -> Path:
    """Writes an HTML contact sheet under the data folder; returns its path.

    Images link to the store, so the page is small and shows the very bytes that were judged.
    """
    with open_manifest(layout) as m:
        members = m.rows(q.GROUP_MEMBERS)
        verdicts = m.rows(q.VERDICTS)
    out = out or layout.reports_dir / "contact-sheet.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(layout.store_dir, out.parent))
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in members:
        groups[r["group_id"]].append(r)
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>reviewlens contact sheet</title>"
        f"<style>{STYLE}</style></head><body><h1>reviewlens contact sheet</h1>"
    ]
    duplicated = [g for g in groups.values() if len(g) > 1]
    parts.append(
        f"<h2>Duplicate groups ({len(duplicated)})</h2><p>Green: the photo kept. Red: posted under "
        "more than one product, kept out of training until a person decides.</p>"
    )
    # Groups side by side, each boxed: a page of one group per line is mostly empty.
    parts.append("<div class='row'>")
    for group in duplicated:
        figs = []
        for r in group:
            css = "ambiguous" if r["is_ambiguous"] else "kept" if r["is_kept"] else ""
            caption = f"{r['sha256'][:10]} {r['width']}x{r['height']}<br>{html.escape(r['products'] or '')}"
            figs.append(_figure((rel / r["path"]).as_posix(), caption, css))
        parts.append(f"<div class='group'>{''.join(figs)}</div>")
    parts.append("</div>")
    parts.append(LEGEND)
    by_verdict: dict[str, list[Row]] = defaultdict(list)
    for r in verdicts:
        by_verdict[photo_verdict(r["coverage_verdict"], r["objects_verdict"])].append(r)
    for verdict in ("pass", "fail", "unsure"):
        shown = by_verdict[verdict][:per_verdict]
        parts.append(
            f"<h2>Machine verdict: {verdict} ({len(by_verdict[verdict])}, {len(shown)} shown)</h2>"
            f"<p>{VERDICTS[verdict]} Magenta: the product's box as the machine found it.</p><div class='row'>"
        )
        for r in shown:
            coverage = "?" if r["coverage"] is None else f"{r['coverage']:.0%}"
            person = f"<br>person: {r['decision']}" if r["decision"] else ""
            caption = (
                f"coverage {coverage}, {r['n_objects']} object(s), score {r['confidence']:.2f}"
                f"<br>{r['coverage_verdict']} / {r['objects_verdict']}{person}"
            )
            parts.append(_framed((rel / r["path"]).as_posix(), r["box"], caption))
        parts.append("</div>")
    parts.append("</body></html>")
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
