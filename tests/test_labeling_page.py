"""The labeling view as a person uses it: a real Label Studio page in headless Chromium.

An annotator signs up, opens a pre-annotated task of the rules project, sees the machine's box,
its findings in words and the product as sold beside the review photo, and accepts with one
keystroke (Ctrl+Enter); the next pull records the decision under the annotator's name. The data
manager has one tab per machine verdict. With the ML backend connected and Auto-Annotation on,
a box moved or drawn is measured against the rules while the person works on it.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core import queries as q
from core.boxes import parse_box
from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.photos import photo_path
from core.settings import LabelConfig
from curation.labeling.client import Completed, LabelStudioClient, connect
from curation.labeling.pull import pull
from curation.labeling.shapes import YOUR_BOX, box_coverage, box_of, boxes_in, image_ref
from curation.labeling.sync import connect_backend, push
from curation.labeling.sync import document_root as served_root
from curation.preannotate.estimates import photo_verdict
from reviewlens.labelstudio_server import Credentials, LabelStudioServer
from tests.conftest import with_locations
from tests.db import run
from tests.procs import ROOT, headless_chromium, ml_backend, needs_chromium

ARTIFACTS = Path(os.environ.get("REVIEWLENS_TEST_ARTIFACTS", ROOT / "test-artifacts"))
ANNOTATOR = "annotator-a@reviewlens.test"


@dataclass
class Pushed:
    layout: Layout
    label: LabelConfig
    client: LabelStudioClient
    project: int
    references: dict[str, str]  # product id: its $product_photo


@pytest.fixture(scope="module")
def pushed(
    label_studio: LabelStudioServer, deduped_state: Path, product_locations: list[Any], document_root: Path
) -> Pushed:
    layout = Layout(document_root / "labeling-page", database_url=None)
    shutil.copytree(deduped_state, layout.data_dir)
    with_locations(layout, product_locations)
    references = {}
    with open_manifest(layout) as m:
        # One photo of each product accepted before labeling (as an import's are): the view
        # shows it as the product beside each review photo.
        for r in run(m, "SELECT product_id, MIN(sha256) AS sha256, path FROM usable_photos GROUP BY 1"):
            run(m, q.ACCEPT_IMPORTED, (r["sha256"], utc_now(), "imported", utc_now()))
            path = photo_path(layout, r["sha256"], r["path"])
            references[r["product_id"]] = image_ref(path, served_root(layout))
    label = LabelConfig(project_title=f"page {layout.data_dir.name}", overlap=0.0)  # one person decides
    client = connect()
    summary = push(label, layout, client)
    return Pushed(layout, label, client, summary.project_id, references)


def test_the_data_manager_has_a_tab_per_verdict_holding_its_tasks(pushed: Pushed) -> None:
    p = pushed
    views = {v.data["title"]: int(v.id) for v in p.client.sdk.views.list(project=p.project)}  # type: ignore[index]
    with open_manifest(p.layout) as m:
        rows = run(
            m,
            "SELECT e.coverage_verdict, e.objects_verdict FROM labels l JOIN estimates e USING (sha256) "
            "WHERE l.project_id = ?",
            (p.project,),
        ).fetchall()
    expected = {v: sum(photo_verdict(*r) == v for r in rows) for v in ("unsure", "pass", "fail")}
    for verdict, n in expected.items():
        shown = p.client.tasks(p.project, view=views[f"Machine: {verdict}"])
        assert len(shown) == n and {t.data["machine_verdict"] for t in shown} <= {verdict}  # type: ignore[index]
    assert sum(expected.values()) == len(rows) > 0
    # Each task names the product as sold: the photo accepted for it.
    tasks = p.client.tasks(p.project)
    assert all(t.data["product_photo"] == p.references[t.data["product_id"]] for t in tasks)  # type: ignore[index]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    # The window of the laptop the labeling view was first tried on.
    driver = headless_chromium(tmp_path / "chromium", (1440, 857))
    yield driver
    driver.quit()


def boxed_tasks(p: Pushed, condition: str) -> list[Any]:
    """The project's tasks whose photo has a machine box, and `condition` on labels l and estimates e."""
    with open_manifest(p.layout) as m:
        return run(
            m,
            "SELECT l.sha256, l.task_id, e.box FROM labels l JOIN estimates e USING (sha256) "
            f"WHERE l.project_id = ? AND e.box IS NOT NULL AND {condition} ORDER BY l.task_id",
            (p.project,),
        ).fetchall()


def submit(browser: object, p: Pushed, task_id: int) -> list[Completed]:
    """Ctrl+Enter in the labeling view, and the answer it saved, once Label Studio holds it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    deadline = time.monotonic() + 60
    while not (done := [c for c in p.client.completed(p.project) if c.task_id == task_id]):
        assert time.monotonic() < deadline, "the keystroke saved no annotation"
        time.sleep(1)
    return done


def open_task(browser: object, label_studio: LabelStudioServer, email: str, project: int, task_id: int) -> Credentials:
    """Signs `email` in and opens the task in the labeling view, once its machine box is on the
    photo and both photos (the review's and the product as sold) have loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    person = label_studio.person(email)

    def login_form(b: WebDriver) -> bool:
        # A server busy with other work may answer the first load with an error page: load it again.
        if b.find_elements(By.NAME, "email"):
            return True
        b.get(f"{label_studio.url}/user/login/")
        return False

    WebDriverWait(browser, 120, poll_frequency=5).until(login_form)
    browser.find_element(By.NAME, "email").send_keys(person.username)
    browser.find_element(By.NAME, "password").send_keys(person.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 60).until(lambda b: "/user/login" not in b.current_url)
    browser.get(f"{label_studio.url}/projects/{project}/data?task={task_id}")
    WebDriverWait(browser, 120).until(seen.text_to_be_present_in_element((By.TAG_NAME, "body"), "Machine: "))
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".lsf-tree__node_type_rectangleregion"))

    def loaded_photos(b: WebDriver) -> int:
        shown = b.find_elements(By.CSS_SELECTOR, "img[src^='blob:']")
        return sum(bool(b.execute_script("return arguments[0].naturalWidth", img)) for img in shown)

    WebDriverWait(browser, 60).until(lambda b: loaded_photos(b) >= 2)
    return person


@needs_chromium
def test_an_annotator_accepts_a_pre_annotated_photo_with_one_keystroke(
    pushed: Pushed, label_studio: LabelStudioServer, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    p = pushed
    # A photo whose machine box holds one product covering most of it: accepted as pre-annotated.
    task = boxed_tasks(p, "e.n_objects = 1 AND e.coverage >= 0.6")[0]
    person = open_task(browser, label_studio, ANNOTATOR, p.project, task["task_id"])
    page = (By.TAG_NAME, "body")
    text = browser.find_element(*page).text
    assert "Rules: the box you draw decides" in text and "Ctrl+Enter" in text
    assert "The product as sold" in text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "labeling-page.png"))

    done = submit(browser, p, task["task_id"])
    assert done[0].annotator == person.username

    summary = pull(p.label, p.layout, p.client)
    assert summary.decided == 1 and summary.accepted == 1
    with open_manifest(p.layout) as m:
        row = m.row(q.LABEL_ANNOTATION, task["sha256"])
        label = run(m, "SELECT * FROM labels WHERE sha256 = ?", (task["sha256"],)).fetchone()
    assert row["annotation_id"] == done[0].annotation_id
    assert (label["decision"], label["annotator"]) == ("accept", person.username)
    # The person kept the machine's box: it is the box recorded.
    kept, machine = parse_box(label["box"]), parse_box(task["box"])
    assert max(abs(a - b) for a, b in zip(kept, machine, strict=True)) < 0.01
    assert (ARTIFACTS / "labeling-page.png").stat().st_size > 20_000


@needs_chromium
def test_a_box_shows_its_share_of_the_photo_while_it_is_drawn(
    pushed: Pushed, label_studio: LabelStudioServer, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    p = pushed
    # A photo whose machine box leaves a fifth of the photo free on its left or right, to draw
    # a second box in.
    rows = boxed_tasks(p, "l.decision IS NULL")
    task = next(r for r in rows if (b := parse_box(r["box"]))[0] >= 0.25 or b[2] <= 0.75)
    machine = parse_box(task["box"])
    with ml_backend(p.layout.data_dir, tmp_path / "backend.log") as url:
        connect_backend(p.label, p.layout, p.client, url)
        person = open_task(browser, label_studio, "annotator-b@reviewlens.test", p.project, task["task_id"])

        def photo_at(fx: float, fy: float) -> tuple[int, int]:
            """Where a point of the review photo (in fractions of it) is in the window."""
            rect = browser.execute_script(
                "const shown = [...document.querySelectorAll(\"img[src^='blob:']\")]"
                ".map(i => i.getBoundingClientRect()).sort((a, b) => b.width * b.height - a.width * a.height);"
                "return {x: shown[0].left, y: shown[0].top, w: shown[0].width, h: shown[0].height};"
            )
            return round(rect["x"] + fx * rect["w"]), round(rect["y"] + fy * rect["h"])

        def drag(start: tuple[int, int], end: tuple[int, int]) -> None:
            pointer = ActionBuilder(browser)
            pointer.pointer_action.move_to_location(*start).pointer_down()
            for step in range(1, 6):
                x = start[0] + (end[0] - start[0]) * step // 5
                y = start[1] + (end[1] - start[1]) * step // 5
                pointer.pointer_action.move_to_location(x, y)
            pointer.pointer_action.pointer_up()
            pointer.perform()

        def note_saying(words: str) -> str:
            WebDriverWait(browser, 30).until(lambda b: words in b.find_element(By.TAG_NAME, "body").text)
            text = browser.find_element(By.TAG_NAME, "body").text
            return next(line for line in text.splitlines() if words in line)

        # The person turns Auto-Annotation on (Label Studio keeps it on for them), then moves the
        # machine's box a little toward the middle: the note measures it.
        browser.find_element(By.CSS_SELECTOR, "[data-testid=bottombar-auto-annotation-toggle]").click()
        centre = ((machine[0] + machine[2]) / 2, (machine[1] + machine[3]) / 2)
        toward = (0.02 if centre[0] < 0.5 else -0.02, 0.02 if centre[1] < 0.5 else -0.02)
        drag(photo_at(*centre), photo_at(centre[0] + toward[0], centre[1] + toward[1]))
        moved = note_saying("Your box covers ")
        # Then draws a second box where the photo is free: two boxes, so the count rule rejects it.
        ActionChains(browser).send_keys(Keys.ESCAPE).perform()
        WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".lsf-tool_smart"))
        browser.find_element(By.CSS_SELECTOR, ".lsf-tool_smart").click()
        ActionChains(browser).send_keys("b").perform()
        left, right = (0.03, 0.2) if machine[0] >= 0.25 else (0.8, 0.97)
        drag(photo_at(left, 0.3), photo_at(right, 0.7))
        note_saying("2 boxes on the photo")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "labeling-live-coverage.png"))

        done = submit(browser, p, task["task_id"])
    assert done[0].annotator == person.username
    boxes = boxes_in(done[0].result)
    assert len(boxes) == 2
    # The number shown for the moved box is the coverage of the box saved: the rules' own measure.
    kept = min(boxes, key=lambda v: sum(abs(a - b) for a, b in zip(box_of(v) or machine, machine, strict=True)))
    assert abs((box_of(kept) or machine)[0] - machine[0]) > 0.01  # the machine's box, moved
    assert abs((box_of(kept) or machine)[0] - machine[0]) > 0.01  # the machine's box, moved
    shown = int(re.search(r"Your box covers (\d+)%", moved).group(1))  # type: ignore[union-attr]
    assert shown == math.floor(100 * box_coverage(kept))
    assert any(r["from_name"] == YOUR_BOX and "2 boxes" in r["value"]["text"][0] for r in done[0].result)
    summary = pull(p.label, p.layout, p.client)
    assert summary.decided == 1 and summary.rejected == 1
    with open_manifest(p.layout) as m:
        label = run(m, "SELECT decision, reason FROM labels WHERE sha256 = ?", (task["sha256"],)).fetchone()
    assert (label["decision"], label["reason"]) == ("reject", "2 products in the photo")
