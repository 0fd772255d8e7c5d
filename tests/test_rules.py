"""The two rules applied to annotations, and Label Studio's failures turned into clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from label_studio_sdk import LabelStudio
from PIL import Image

from core.layout import Layout
from core.settings import LabelConfig
from curation.labeling.client import LabelStudioClient, LabelStudioError
from curation.labeling.machine_note import doubt, estimate_lines
from curation.labeling.report import VerdictAgreement
from curation.labeling.rule_tasks import machine_prediction
from curation.labeling.rules import MalformedAnswer, box_words, decide
from curation.labeling.shapes import (
    MACHINE_NOTE,
    NONE_OF_THESE,
    OBJECTS,
    PRODUCT_BOX,
    REJECT_REASON,
    REJECT_REASONS,
    SEVERAL,
    YOUR_BOX,
    box_region,
    chosen_product,
    objects_region,
    rules_view,
)
from curation.labeling.sync import push
from curation.preannotate.estimates import estimate, queue_score
from models.coco_detector import Detection, Detector
from reviewlens.labelstudio_server import LabelStudioServer
from tests.conftest import free_port


def _box(w: float, h: float) -> dict:
    return {
        "type": "rectanglelabels",
        "value": {"x": 0, "y": 0, "width": w, "height": h, "rectanglelabels": ["product"]},
    }


def _choice(value: str, control: str = OBJECTS) -> dict:
    return {"from_name": control, "type": "choices", "value": {"choices": [value]}}


def test_one_large_product_is_accepted() -> None:
    d = decide([_box(80, 70), _choice("one product")], cancelled=False, min_coverage=0.5)
    assert (d.decision, d.coverage, d.n_objects) == ("accept", 0.56, 1)


def test_small_product_is_rejected_with_its_coverage() -> None:
    d = decide([_box(50, 50), _choice("one product")], cancelled=False, min_coverage=0.5)
    assert d.decision == "reject" and "25%" in d.reason and d.coverage == 0.25


def test_several_products_by_choice_or_by_boxes() -> None:
    assert decide([_box(90, 90), _choice(SEVERAL)], False, 0.5).reason == "2 products in the photo"
    assert decide([_box(90, 90), _box(10, 10), _choice("one product")], False, 0.5).n_objects == 2


def test_a_reason_the_person_chose_rejects_whatever_the_box() -> None:
    chosen = _choice(REJECT_REASONS[0], REJECT_REASON)
    d = decide([_box(80, 70), _choice("one product"), chosen], False, 0.5)
    assert (d.decision, d.reason, d.coverage, d.box) == ("reject", f"annotator: {REJECT_REASONS[0]}", 0.56, None)
    # The reasons' choices are not read as the product count.
    assert decide([_box(80, 70), _choice("one product")], False, 0.5).decision == "accept"


def test_the_view_names_its_rules_and_keys_and_every_control_the_rules_read() -> None:
    view = rules_view(0.4)
    assert "at least 40% of the photo" in view and "Ctrl+Enter" in view
    for control in (PRODUCT_BOX, OBJECTS, REJECT_REASON, MACHINE_NOTE):
        assert f'name="{control}"' in view
    keys = [int(k) for k in re.findall(r'<Choice value="[^"]+" hotkey="(\d)"', view)]
    assert keys == list(range(1, 3 + len(REJECT_REASONS)))  # one key each, none shared


def test_the_machines_note_tells_its_doubt_or_its_record_with_people() -> None:
    unsure = estimate_lines(0.47, 2, "unsure", "unsure", 0.5)
    assert unsure[0] == "Machine: UNSURE, it doubts the box's coverage and the product count: you decide."
    assert "covers 47% (at least 50% asked)" in unsure[1] and "Products: 2, unsure" in unsure[1]
    record = VerdictAgreement("pass", decided=40, accepted=38)
    assert estimate_lines(0.8, 1, "pass", "pass", 0.5, record)[0] == (
        "Machine: PASS; people agreed with its PASS on 95% of 40 photos so far."
    )
    assert "no person has checked its FAIL" in estimate_lines(0.2, 1, "fail", "pass", 0.5)[0]
    assert doubt("pass", "unsure") == "the product count"


def test_a_box_being_drawn_is_told_what_the_rules_would_decide() -> None:
    assert box_words([], 0.5) == ["No box on the photo: draw one around the product (B, then drag)."]
    assert box_words([_box(90, 90), _box(10, 10)], 0.5)[0].startswith(
        "2 boxes on the photo: one product only, so it would be rejected."
    )
    # Just under the line reads under it, never "50%, under 50%"; a box past the frame counts inside it.
    assert box_words([_box(70, 71)], 0.5) == ["Your box covers 49% of the photo: under 50%, so it would be rejected."]
    assert box_words([_box(120, 50)], 0.5) == ["Your box covers 50% of the photo: at least 50%, so it passes."]
    # The words agree with the decision the same box gets once submitted.
    for w, h in ((70, 71), (71, 71), (40, 30), (100, 100)):
        said = box_words([_box(w, h)], 0.5)[0]
        assert ("passes" in said) == (decide([_box(w, h), _choice("one product")], False, 0.5).decision == "accept")


def test_the_machines_box_is_live_for_the_person_to_correct() -> None:
    detections = [Detection("chair", 0.9, (0.1, 0.2, 0.6, 1.0))]
    assert machine_prediction(detections, None, estimate(detections))["result"][0]["dynamic"] is True
    view = rules_view(0.5)
    assert 'smart="true"' in view and f'name="{YOUR_BOX}" toName="rules"' in view


def test_missing_box_and_skipped_task_are_rejected() -> None:
    assert decide([_choice("one product")], False, 0.5).reason == "no product box drawn"
    assert decide([], True, 0.5).reason == "skipped by the annotator"


def test_detections_become_a_pre_annotation_in_percent() -> None:
    detections = [Detection("chair", 0.9, (0.1, 0.2, 0.6, 1.0)), Detection("vase", 0.5, (0.0, 0.0, 0.1, 0.1))]
    pre = machine_prediction(detections, None, estimate(detections))
    box = pre["result"][0]["value"]
    assert (round(box["x"]), round(box["y"]), round(box["width"]), round(box["height"])) == (10, 20, 50, 80)
    assert pre["result"][0]["score"] == 0.9 and pre["result"][-1]["value"]["choices"] == [SEVERAL]
    assert machine_prediction([])["result"] == []


def test_the_prediction_score_orders_unsure_photos_first_least_confident_first() -> None:
    # The score Label Studio's uncertainty sampling orders by: unsure under 0.5, decided above.
    order = [("unsure", 0.1), ("unsure", 0.9), ("fail", 0.2), ("pass", 0.3), ("fail", 0.95)]
    scores = [queue_score(verdict, confidence) for verdict, confidence in order]
    assert scores == sorted(scores) and scores[1] < 0.5 < scores[2]
    sure_chair = estimate([Detection("chair", 0.9, (0.0, 0.0, 0.9, 0.9))])
    assert sure_chair.verdict == "pass"
    assert machine_prediction([], None, sure_chair)["score"] == queue_score("pass", 0.9) == 0.95


def test_estimates_decide_only_where_the_detector_is_sure() -> None:
    from curation.preannotate.estimates import estimate

    big = Detection("couch", 0.9, (0.05, 0.05, 0.95, 0.95))
    small = Detection("vase", 0.8, (0.4, 0.4, 0.6, 0.6))
    weak = Detection("chair", 0.35, (0.0, 0.0, 0.2, 0.2))
    assert estimate([big]).verdict == "pass"
    assert (estimate([small]).coverage_verdict, estimate([small]).verdict) == ("fail", "fail")
    assert estimate([big, small]).objects_verdict == "fail"
    assert estimate([big, weak]).objects_verdict == "unsure"
    assert estimate([weak]).verdict == "unsure" and estimate([]).verdict == "unsure"
    near_line = Detection("bed", 0.9, (0.0, 0.0, 0.7, 0.75))  # 52.5%: a person decides
    assert estimate([near_line]).coverage_verdict == "unsure"


def test_a_confident_object_across_the_line_from_the_colocalised_box_leaves_the_coverage_to_a_person() -> None:
    from curation.preannotate.colocalise import Location
    from curation.preannotate.estimates import estimate

    label = Location((0.4, 0.4, 0.6, 0.65), 1)  # a part the product's photos share
    big = Detection("bottle", 0.95, (0.1, 0.05, 0.9, 0.95))
    small = Detection("bottle", 0.95, (0.4, 0.4, 0.6, 0.65))
    assert estimate([big], located=label).coverage_verdict == "unsure"
    assert estimate([small], located=label).coverage_verdict == "fail"  # both see a small product
    assert estimate([], located=label).coverage_verdict == "fail"
    weak_big = Detection("bottle", 0.5, (0.1, 0.05, 0.9, 0.95))
    assert estimate([weak_big], located=label).coverage_verdict == "fail"  # a weak box is not believed
    whole = Location((0.1, 0.05, 0.9, 0.95), 1)
    assert estimate([big], located=whole).coverage_verdict == "pass"  # both see a large product
    assert estimate([], located=whole).coverage_verdict == "pass"
    # The other way round: the detector's only confident object is small, the co-localised box
    # large: that box may hold the product's surroundings, so a person looks.
    assert estimate([small], located=whole).coverage_verdict == "unsure"


def test_a_product_choice_reads_back_as_its_product_id() -> None:
    ids = {"Oak chair (100001)": "100001", "Oak chair, grey (100002)": "100002"}

    def answer(label: str) -> list[dict]:
        return [{"from_name": "product_id", "type": "choices", "value": {"choices": [label]}}]

    assert chosen_product(answer("Oak chair, grey (100002)"), ids) == "100002"
    assert chosen_product(answer(NONE_OF_THESE), ids) is None
    assert chosen_product([], ids) is None


def test_label_studio_gone_mid_push_is_a_clear_error(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = LabelStudioClient(dead, LabelStudio(base_url=dead, api_key="0" * 40, timeout=5))
    with pytest.raises(LabelStudioError, match=r"does not answer at http://127\.0\.0\.1:\d+ \(setting up a project"):
        push(LabelConfig(), Layout(tmp_path), client)
    with pytest.raises(LabelStudioError, match=r"\(creating tasks"):
        client.import_tasks(1, [{"data": {"sha256": "x"}}])
    with pytest.raises(LabelStudioError, match=r"\(reading answers"):
        list(client.completed(1))


def test_label_studio_is_found_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    binary = LabelStudioServer(tmp_path / "ls", tmp_path).binary
    assert binary.is_absolute() and binary.exists()


def test_the_detector_reads_every_format_the_store_keeps(tmp_path: Path) -> None:
    for fmt in ("JPEG", "PNG", "WEBP", "GIF"):
        photo = tmp_path / f"photo.{fmt.lower()}"
        Image.new("RGB", (200, 150), (200, 30, 30)).save(photo, fmt)
        assert Detector(min_score=0.3).detect_file(photo) == []  # a plain red frame holds no object


HOSTILE_ANSWERS = {
    "a coordinate that is no number": [{**box_region((0.1, 0.1, 0.9, 0.9), 1.0), "value": {
        "x": "abc", "y": 10, "width": 80, "height": 80, "rectanglelabels": [PRODUCT_BOX]}}],
    "an infinite width": [{**box_region((0.1, 0.1, 0.9, 0.9), 1.0), "value": {
        "x": 10, "y": 10, "width": float("inf"), "height": 80, "rectanglelabels": [PRODUCT_BOX]}}],
    "a choice missing": [{"type": "choices", "from_name": OBJECTS, "to_name": "image", "value": {"choices": []}}],
    "an unknown label": [objects_region(1) | {"value": {"choices": ["a dozen products"]}}],
    "a region that is no object": ["several products"],
    "no list at all": {"x": 1},
}  # fmt: skip


@pytest.mark.parametrize("result", HOSTILE_ANSWERS.values(), ids=HOSTILE_ANSWERS.keys())
def test_an_answer_the_rules_cannot_read_is_refused_by_name_and_measured_in_words(result: object) -> None:
    with pytest.raises(MalformedAnswer) as refused:
        decide(result, False, 0.5)  # type: ignore[arg-type]
    assert len(str(refused.value)) < 200
    # While it is drawn, the backend answers in words instead of failing.
    (said,) = box_words(result, 0.5)  # type: ignore[arg-type]
    assert said.startswith("The boxes cannot be measured")
