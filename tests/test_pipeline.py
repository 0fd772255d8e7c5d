"""The whole pipeline as Prefect flows, against the demo shop and a real Label Studio server.

The demo's flow runs the stages with the scripted annotator answering; the production pipeline
then runs again over the same data and changes nothing it should not. Both run once for the module;
each test checks one thing of what they left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from core.layout import Layout
from core.manifest import open_manifest
from core.settings import LabelConfig, TrainConfig, from_mapping
from curation.dedupe.contact_sheet import write_contact_sheet
from curation.labeling.client import LabelStudioError, connect
from curation.labeling.report import labeling_report
from curation.labeling.sync import push
from curation.preannotate.colocalise import LOCALISER_VERSION
from demo.flow import ANNOTATOR_KEY, SCRIPTED_ANNOTATOR, SECOND_ANNOTATOR, SECOND_ANNOTATOR_KEY, demo_flow
from demo.shop.faults import bomb_png
from demo.shop.generate import PhotoTruth, load_truth
from demo.shop.server import DemoShop
from flows.pipeline import PipelineResult, pipeline_flow, retrain_flow
from flows.tasks import Evaluation
from reviewlens.labelstudio_server import LabelStudioServer
from search.answers import answer_files
from search.finder import Finder
from tests.conftest import crawl_config
from tests.db import count, run

pytestmark = pytest.mark.integration

TRAIN = {"members": ["efficientnet_lite0", "efficientnet_lite1"], "epochs": 1, "image_size": 96, "batch_size": 16}


@dataclass(frozen=True)
class Ran:
    layout: Layout
    shop_dir: Path
    label: LabelConfig
    result: PipelineResult  # the demo's flow
    again: PipelineResult  # the production pipeline over the same shop and data
    forced: Evaluation  # a retrain over the same photos, forced
    truth: dict[str, PhotoTruth]
    products: set[str]  # the shop's product names
    rows: list[Any]  # each labeled photo: its URL, decision, reason and group
    groups: dict[str, str]  # photo id: duplicate group

    def truth_of(self, photo_url: str) -> PhotoTruth:
        return self.truth[photo_url.rsplit("/", 1)[1].removesuffix(".jpg")]


@pytest.fixture(scope="module")
def ran(
    label_studio: LabelStudioServer, shop_dir: Path, shop_ports: tuple[int, int], document_root: Path
) -> Iterator[Ran]:
    layout = Layout(document_root / "pipeline", database_url=None)
    label = LabelConfig(project_title=f"pipeline {layout.data_dir.name}")
    train = from_mapping(TrainConfig, TRAIN)
    port, image_port = shop_ports
    with pytest.MonkeyPatch.context() as env, DemoShop(shop_dir, port=port, image_port=image_port) as shop:
        # The scripted annotator answers as a user of its own, as the demo runs it.
        env.setenv(ANNOTATOR_KEY, label_studio.person(SCRIPTED_ANNOTATOR).token)
        env.setenv(SECOND_ANNOTATOR_KEY, label_studio.person(SECOND_ANNOTATOR).token)
        result = demo_flow(str(layout.data_dir), str(shop_dir), crawl_config(shop), train, label)
        again = pipeline_flow(str(layout.data_dir), crawl_config(shop), label=label, train=train)
        products = {p.name for p in shop.data.products}
    forced = retrain_flow(str(layout.data_dir), replace(train, force=True), promote=False, label=label)
    with open_manifest(layout) as m:
        rows = run(
            m,
            "SELECT s.photo_url, l.decision, l.reason, c.group_id FROM labels l "
            "JOIN sources s USING (sha256) JOIN curation c USING (sha256)",
        ).fetchall()
        groups = {
            r["photo_url"].rsplit("/", 1)[1].removesuffix(".jpg"): r["group_id"]
            for r in run(m, "SELECT s.photo_url, c.group_id FROM sources s JOIN curation c USING (sha256)")
        }
    yield Ran(layout, shop_dir, label, result, again, forced, load_truth(shop_dir), products, rows, groups)


def test_every_kept_photo_is_decided_as_the_rules_give_on_the_truth(ran: Ran) -> None:
    # Photos posted under two products went out once a person had chosen their product.
    crossed = [t for t in ran.truth.values() if t.kind == "cross"]
    assert crossed and len(ran.rows) == ran.result.dedupe.groups
    assert ran.result.push.pushed == len(ran.rows) - ran.result.pull.chosen
    for r in ran.rows:
        t = ran.truth_of(r["photo_url"])
        expected = "accept" if t.coverage >= 0.5 and t.n_objects == 1 else "reject"
        assert r["decision"] == expected, (t, r["reason"])
    assert {r["decision"] for r in ran.rows} == {"accept", "reject"}


def test_who_answered_and_how_long_it_took_is_reported(ran: Ran) -> None:
    # As Label Studio measured it; the flow reported it all.
    with open_manifest(ran.layout) as m:
        answered = run(m, "SELECT DISTINCT annotator, lead_time FROM labels").fetchall()
    assert {tuple(a) for a in answered} == {(SCRIPTED_ANNOTATOR, 1.0), (SECOND_ANNOTATOR, 1.0)}
    labeling = (ran.layout.data_dir / "reports" / "labeling.md").read_text()
    assert f"| decided | {len(ran.rows)} | accepted " in labeling and "| in the newest training |" in labeling
    # Every count of the funnel adds up, down to the training's splits: whole accepted photos, and
    # views cut to a box counted apart.
    report = labeling_report(ran.layout)
    for step, n, parts in report.funnel_steps():
        assert n == sum(count for _, count in parts) and all(count >= 0 for _, count in parts), (step, parts)
    snapshot = json.loads((Path(ran.result.evaluate.run_dir) / "snapshot.json").read_text())["examples"]
    for split in ("train", "val", "test"):
        photos = sum(1 for e in snapshot if e["split"] == split and not e["box"])
        views = sum(1 for e in snapshot if e["split"] == split and e["box"])
        assert report.splits.get(split, {}).get("photos", 0) == photos == report.trained.get(split, 0)
        assert report.splits.get(split, {}).get("views", 0) == views
    assert sum(report.trained.values()) == report.funnel["accepted"]  # every product has enough photos
    # A tenth of the tasks went to both scripted annotators, who answer alike.
    overlap = json.loads((ran.layout.data_dir / "reports" / "labeling.json").read_text())["overlap"]
    assert overlap["answered_by_two"] > 0 and overlap["agreed"] == overlap["answered_by_two"]


def test_the_pull_keeps_the_box_drawn_around_the_one_product(ran: Ran) -> None:
    with open_manifest(ran.layout) as m:
        boxes = run(
            m, "SELECT s.photo_url, l.box FROM labels l JOIN sources s USING (sha256) WHERE l.n_objects = 1"
        ).fetchall()
    assert boxes and all(b["box"] for b in boxes)
    for b in boxes:  # as fractions of the frame
        t = ran.truth_of(b["photo_url"])
        drawn = [float(v) for v in b["box"].split(",")]
        expected = [t.bbox[0] / t.width, t.bbox[1] / t.height, t.bbox[2] / t.width, t.bbox[3] / t.height]
        assert drawn == pytest.approx(expected, abs=1e-3)


def test_reposts_land_in_their_originals_duplicate_group(ran: Ran) -> None:
    reposts = [t for t in ran.truth.values() if t.duplicate_of]
    assert reposts and all(ran.groups[t.photo_id] == ran.groups[t.duplicate_of] for t in reposts)


def test_a_photo_posted_under_two_products_trains_as_the_product_a_person_chose(ran: Ran) -> None:
    crossed = [t for t in ran.truth.values() if t.kind == "cross"]
    with open_manifest(ran.layout) as m:
        chosen = {
            r["group_id"]: r["product_id"]
            for r in run(m, "SELECT c.group_id, pc.product_id FROM product_choices pc JOIN curation c USING (sha256)")
        }
        versions = [r[0] for r in run(m, "SELECT model_version FROM estimates JOIN product_choices USING (sha256)")]
    assert len(chosen) == ran.result.pull.chosen >= len(crossed)
    # ... and was located among the photos of the product chosen for it.
    assert len(versions) == len(chosen) and all(LOCALISER_VERSION in v for v in versions)
    for t in crossed:
        assert chosen[ran.groups[t.photo_id]] == str(ran.truth[t.duplicate_of].product_id)  # type: ignore[index]
    snapshot = json.loads((Path(ran.result.evaluate.run_dir) / "snapshot.json").read_text())
    trained_as = {
        e["group_id"]: snapshot["classes"][e["label"]]["product_id"]
        for e in snapshot["examples"]
        if e["group_id"] in chosen
    }
    assert trained_as and all(chosen[g] == p for g, p in trained_as.items())


def test_boxes_train_as_views_in_the_training_split_only(ran: Ran) -> None:
    # Also of photos refused only because their product is small in the frame.
    snapshot = json.loads((Path(ran.result.evaluate.run_dir) / "snapshot.json").read_text())
    views = [e for e in snapshot["examples"] if e["box"]]
    small = {e["sha256"] for e in views} - {e["sha256"] for e in snapshot["examples"] if not e["box"]}
    assert views and {e["split"] for e in views} == {"train"} and small


def test_the_report_holds_every_member_and_the_ensemble_and_the_model_is_promoted(ran: Ran) -> None:
    # As JSON and as a table.
    run_dir = Path(ran.result.evaluate.run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["results"]) == {"efficientnet_lite0", "efficientnet_lite1", "ensemble"}
    for figures in report["results"].values():
        assert 0 <= figures["top1"] <= figures["top3"] <= 100
    markdown = (run_dir / "report.md").read_text()
    assert "| Ensemble |" in markdown and "| study: Ensemble (soft voting) | 74.4 | 90.2 |" in markdown
    assert ran.result.evaluate.promoted and (ran.layout.production_dir / "model.pt").exists()


def test_every_pushed_photo_has_an_estimate_and_unsure_tasks_come_first(ran: Ran) -> None:
    client = connect()
    with open_manifest(ran.layout) as m:
        assert count(m, "estimates") == len(ran.rows)
    tasks = sorted(client.tasks(ran.result.push.project_id), key=lambda t: t.id)
    # (each push orders its own tasks; the run's second push held the photos whose product was chosen)
    verdicts = [t.data["machine_verdict"] for t in tasks][: ran.result.push.pushed]
    assert "unsure" in verdicts
    assert verdicts == sorted(verdicts, key=lambda v: v != "unsure")


def test_the_contact_sheet_shows_every_duplicate_group_the_boxes_and_three_verdicts(ran: Ran) -> None:
    page = write_contact_sheet(ran.layout).read_text()
    # ... with the machine's product box over each photo it found one in.
    with open_manifest(ran.layout) as m:
        assert count(m, "estimates", "box IS NOT NULL") == count(m, "estimates", "coverage IS NOT NULL") > 0
    assert 'class="box"' in page
    groups = list(ran.groups.values())
    duplicated = sum(1 for g in set(groups) if groups.count(g) > 1)
    assert f"Duplicate groups ({duplicated})" in page and duplicated > 0
    assert all(f"Machine verdict: {v}" in page for v in ("pass", "fail", "unsure"))
    # Groups flow side by side, each boxed, and every word of a caption is explained.
    assert page.count("<div class='group'>") == duplicated
    legend = page[page.index("How to read the verdicts") :]
    assert all(f"<dt>{term}</dt>" in legend for term in ("coverage", "object(s)", "score", "pass / fail / unsure"))


def test_the_pipeline_again_changes_nothing_and_trains_only_when_forced(ran: Ran) -> None:
    # It crawls nothing new, pushes and pulls nothing again (in Label Studio or the manifest), and
    # does not train the model it already has.
    again, rows = ran.again, ran.rows
    assert again.crawl.photos_stored == 0 and again.dedupe.checked == 0
    assert again.push.pushed == 0 and again.push.already == len(rows) and again.push.choices == 0
    assert len(connect().task_ids_by_key(again.push.project_id, "sha256")) == len(rows)
    # (it reads again only the answers changed in the minute before the last pull's newest)
    assert again.pull.decided == 0 and again.pull.unchanged <= len(rows) and again.pull.chosen == 0
    runs = sorted(ran.layout.runs_dir.iterdir())
    assert not again.evaluate.promoted and again.evaluate.gate["reason"].startswith("nothing new to train on")
    assert Path(again.evaluate.run_dir).resolve() == Path(ran.result.evaluate.run_dir).resolve()  # in production
    # Forced, it trains on the same photos, into a run of its own ...
    assert len(runs) == 2 and Path(ran.forced.run_dir).resolve() == runs[-1].resolve() and not ran.forced.promoted
    snapshot = json.loads((Path(ran.result.evaluate.run_dir) / "snapshot.json").read_text())
    retrained = json.loads((Path(ran.forced.run_dir) / "snapshot.json").read_text())
    assert retrained["snapshot_id"] == snapshot["snapshot_id"]
    # ... from the features the first run kept: no photo goes through a network again.
    history = torch.load(Path(ran.forced.run_dir) / "model.pt", weights_only=True)["members"]
    assert [h["history"]["embedded"] for h in history.values()] == [0, 0]


def test_predict_names_three_catalog_products_and_refuses_a_bomb(ran: Ran) -> None:
    # What `reviewlens predict` calls: three catalog products with their links, best first.
    finder = Finder.load(ran.layout, ran.layout.production_dir)
    assert finder.index is not None and len(finder.index)  # the pipeline indexed the promoted model
    photo = ran.shop_dir / "photos" / f"{next(iter(ran.truth))}.jpg"
    ((answer, image),) = list(answer_files(finder, [photo]))
    matches = answer.objects[0].matches
    assert image is not None and len(matches) == 3 and matches[0].score >= matches[1].score >= matches[2].score
    assert all(m.product.name in ran.products and m.product.url.endswith("/selling") for m in matches)
    # ... and refuses a photo claiming 400 megapixels before decoding it.
    bomb = ran.layout.data_dir / "bomb.png"
    bomb.write_bytes(bomb_png())
    ((refused, nothing),) = list(answer_files(finder, [bomb]))
    assert nothing is None and refused.objects == [] and "pixels" in refused.problem


def test_a_photo_lost_from_the_store_is_left_out_of_the_push_and_recorded_as_failed(ran: Ran) -> None:
    # Lost after dedupe: label push goes on without it, and records it as a failed photo for the
    # next crawl to fetch again. (Last in the module: it changes the shared run's store.)
    with open_manifest(ran.layout) as m:
        lost = run(m, "SELECT sha256, path FROM usable_photos LIMIT 1").fetchone()
    (ran.layout.store_dir / lost["path"]).unlink()
    pushed = push(ran.label, ran.layout, connect())
    assert pushed.pushed == 0
    with open_manifest(ran.layout) as m:
        assert run(m, "SELECT reason FROM failures").fetchall()[0][0] == "missing from the store"
        assert count(m, "usable_photos", "sha256 = ?", lost["sha256"]) == 0


def test_a_wrong_token_is_refused_with_a_clear_error(label_studio: LabelStudioServer) -> None:
    with pytest.raises(LabelStudioError, match="refused the token: set LABEL_STUDIO_API_KEY"):
        connect(label_studio.url, "0" * 40)


def test_a_dead_server_is_named(label_studio: LabelStudioServer) -> None:
    with pytest.raises(LabelStudioError, match=r"does not answer at http://127\.0\.0\.1:9"):
        connect("http://127.0.0.1:9", "0" * 40)
