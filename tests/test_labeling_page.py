"""The labeling view as a person uses it: a real Label Studio page in headless Chromium.

An annotator signs up, opens a pre-annotated task of the rules project, sees the machine's box,
its findings in words and the product as sold beside the review photo, and accepts with one
keystroke (Ctrl+Enter); the next pull records the decision under the annotator's name. The data
manager has one tab per machine verdict.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import queries as q
from core.boxes import parse_box
from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.photos import photo_path
from core.settings import DedupeConfig, LabelConfig
from crawler.crawl import crawl
from curation.dedupe.grouping import dedupe
from curation.labeling.client import LabelStudioClient, connect
from curation.labeling.pull import pull
from curation.labeling.shapes import image_ref
from curation.labeling.sync import document_root as served_root
from curation.labeling.sync import push
from curation.preannotate.estimates import photo_verdict
from reviewlens.demoshop.server import DemoShop
from reviewlens.labelstudio_server import LabelStudioServer
from tests.conftest import crawl_config
from tests.db import run
from tests.procs import ROOT, headless_chromium, needs_chromium

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
def pushed(label_studio: LabelStudioServer, shop_dir: Path, document_root: Path) -> Pushed:
    layout = Layout(document_root / "labeling-page")
    with DemoShop(shop_dir) as shop:
        crawl(crawl_config(shop), layout)
    dedupe(DedupeConfig(), layout)
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


@needs_chromium
def test_an_annotator_accepts_a_pre_annotated_photo_with_one_keystroke(
    pushed: Pushed, label_studio: LabelStudioServer, browser: object
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    p = pushed
    with open_manifest(p.layout) as m:
        # A photo whose machine box holds one product covering most of it: accepted as pre-annotated.
        task = run(
            m,
            "SELECT l.sha256, l.task_id, e.box FROM labels l JOIN estimates e USING (sha256) "
            "WHERE l.project_id = ? AND e.n_objects = 1 AND e.box IS NOT NULL AND e.coverage >= 0.6 "
            "ORDER BY l.task_id LIMIT 1",
            (p.project,),
        ).fetchone()
    assert task is not None
    person = label_studio.person(ANNOTATOR)

    browser.get(f"{label_studio.url}/user/login/")
    browser.find_element(By.NAME, "email").send_keys(person.username)
    browser.find_element(By.NAME, "password").send_keys(person.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 60).until(lambda b: "/user/login" not in b.current_url)
    browser.get(f"{label_studio.url}/projects/{p.project}/data?task={task['task_id']}")
    page = (By.TAG_NAME, "body")
    WebDriverWait(browser, 120).until(seen.text_to_be_present_in_element(page, "Machine: "))
    # The machine's box is on the photo as a region, the rules and their keys are in the view,
    # and both photos (the review's and the product as sold) have loaded.
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".lsf-tree__node_type_rectangleregion"))
    text = browser.find_element(*page).text
    assert "Rules: the box you draw decides" in text and "Ctrl+Enter" in text
    assert "The product as sold" in text

    def loaded_photos(b: WebDriver) -> int:
        shown = b.find_elements(By.CSS_SELECTOR, "img[src^='blob:']")
        return sum(bool(b.execute_script("return arguments[0].naturalWidth", img)) for img in shown)

    WebDriverWait(browser, 60).until(lambda b: loaded_photos(b) >= 2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "labeling-page.png"))

    ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    deadline = time.monotonic() + 60
    while not (done := [c for c in p.client.completed(p.project) if c.task_id == task["task_id"]]):
        assert time.monotonic() < deadline, "the keystroke saved no annotation"
        time.sleep(1)
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
