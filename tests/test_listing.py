"""Listings read from a real Label Studio: every task once, at any count, and every answer under
its author, also one who signed up after the client first read the users."""

from __future__ import annotations

from pathlib import Path

from curation.labeling.client import PAGE, connect
from reviewlens.labelstudio_server import LabelStudioServer


def _store(document_root: Path) -> Path:
    """A folder Label Studio may serve (below its document root, never the root itself)."""
    store = document_root / "listing"
    store.mkdir(exist_ok=True)
    return store


VIEW = '<View><Text name="text" value="$text"/><Choices name="ok" toName="text"><Choice value="yes"/></Choices></View>'


def test_every_task_is_listed_once_when_the_last_page_is_full_or_short(
    label_studio: LabelStudioServer, document_root: Path
) -> None:
    client = connect()
    project = client.ensure_project("listing: pages", _store(document_root), VIEW)
    # Exactly one full page: Label Studio answers 404 for the page after it.
    client.import_tasks(project, [{"data": {"text": f"task {i}", "sha256": f"{i:064x}"}} for i in range(PAGE)])
    listed = client.tasks(project)
    assert len(listed) == PAGE
    assert len({t.id for t in listed}) == PAGE
    client.import_tasks(project, [{"data": {"text": "one more", "sha256": f"{PAGE:064x}"}}])
    assert len(client.tasks(project)) == PAGE + 1
    assert sorted(client.task_ids_by_key(project, "sha256")) == [f"{i:064x}" for i in range(PAGE + 1)]


def test_an_answer_is_named_after_a_person_who_signed_up_after_the_users_were_read(
    label_studio: LabelStudioServer, document_root: Path
) -> None:
    reader = connect()
    project = reader.ensure_project("listing: authors", _store(document_root), VIEW)
    reader.import_tasks(project, [{"data": {"text": f"task {i}", "sha256": f"{i:064x}"}} for i in range(2)])
    first, second = (t.id for t in reader.tasks(project))
    yes = [{"from_name": "ok", "to_name": "text", "type": "choices", "value": {"choices": ["yes"]}}]
    reader.annotate(first, yes)
    assert len(list(reader.answered(project))) == 1  # the reader has read the users now
    newcomer = "signed-up-later@reviewlens.test"
    connect(api_key=label_studio.person(newcomer).token).annotate(second, yes)
    authors = {t.task_id: t.answers[-1].annotator for t in reader.answered(project)}
    assert authors[second] == newcomer
    assert authors[first] != newcomer and not authors[first].startswith("user ")
