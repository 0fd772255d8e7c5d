"""Label Studio's API behind one small client: projects, their tasks, and the annotations coming back.

The server's URL and token come from the environment (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY);
they are never written to code or logs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx

# The SDK's generated client: its LabelStudio subclass adds project exports through pandas, a
# second of imports on every pull an answer saved starts.
from label_studio_sdk.base_client import LabelStudioBase
from label_studio_sdk.core.api_error import ApiError

from core.errors import ReviewlensError
from core.kept_secret import basic_header, split_login

DEFAULT_URL = "http://127.0.0.1:8080"
# Tasks sent in one import request: large imports time out on a small server.
IMPORT_BATCH = 100
PAGE = 200  # tasks and projects a listing asks for at a time
# Tasks Label Studio asks the ML backend about in one request when a new model predicts again.
# The backend answers as `predict` does, each object of the photo searched: about 1.7 s a photo
# on 2 cores with three members, and Label Studio gives up on its ML backend after 100 s.
PREDICT_BATCH = 25


class LabelStudioError(ReviewlensError):
    """Label Studio could not be reached or refused the request; the message says what to do."""


@dataclass(frozen=True)
class Completed:
    task_id: int
    data: dict[str, Any]
    annotation_id: int
    result: list[dict[str, Any]]
    cancelled: bool
    annotator: str = ""  # the user who answered, by e-mail
    lead_time: float | None = None  # seconds spent on it, as Label Studio measured them


@dataclass(frozen=True)
class Answer:
    """One person's latest annotation of a task."""

    annotation_id: int
    annotator: str  # by e-mail
    result: list[dict[str, Any]]
    cancelled: bool
    lead_time: float | None
    updated_at: str


@dataclass(frozen=True)
class AnsweredTask:
    task_id: int
    data: dict[str, Any]
    overlap: int  # how many people the task asks for
    answers: list[Answer]  # one per annotator, the latest of theirs; oldest first
    updated_at: str = ""  # the task's last change (an answer saved or changed), Label Studio's clock


def connect(url: str | None = None, api_key: str | None = None) -> LabelStudioClient:
    """Returns a client for the server named by the arguments or the environment, checked to answer."""
    url = (url or os.environ.get("LABEL_STUDIO_URL") or DEFAULT_URL).rstrip("/")
    api_key = api_key or os.environ.get("LABEL_STUDIO_API_KEY")
    if not api_key:
        raise LabelStudioError(f"no token for Label Studio at {url}: set LABEL_STUDIO_API_KEY")
    client = LabelStudioClient(url, LabelStudioBase(base_url=url, api_key=api_key, timeout=120))
    client.check()
    return client


class LabelStudioClient:
    """Every call turns the SDK's transport and API failures into a LabelStudioError that says what to do."""

    def __init__(self, url: str, sdk: LabelStudioBase) -> None:
        self.url = url
        self.sdk = sdk
        self._user_emails: dict[int, str] | None = None

    @contextmanager
    def _asking(self, what: str) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as exc:
            raise LabelStudioError(
                f"Label Studio does not answer at {self.url} ({what}: {type(exc).__name__}): start it "
                "(reviewlens label-studio start) or set LABEL_STUDIO_URL, then run again; what was "
                "recorded is kept"
            ) from exc
        except ApiError as exc:
            # A 403 is also Label Studio refusing an address it will not call (its SSRF guard).
            if exc.status_code == 401 or (exc.status_code == 403 and "network address" not in str(exc.body)):
                raise LabelStudioError(
                    f"Label Studio at {self.url} refused the token: set LABEL_STUDIO_API_KEY"
                ) from exc
            raise LabelStudioError(
                f"Label Studio at {self.url} answered {exc.status_code} ({what}): {exc.body}"
            ) from exc

    def check(self) -> None:
        with self._asking("listing projects"):
            self.sdk.projects.list(page_size=1)

    def project_id(self, title: str) -> int | None:
        """The id of the project titled `title`, None when there is none."""
        with self._asking("finding a project"):
            return self._project_titled(title)

    def _project_titled(self, title: str) -> int | None:
        projects: Any = self.sdk.projects.list(title=title, page_size=PAGE)
        found = [p for p in _every(projects, PAGE) if p.title == title]
        return int(found[0].id) if found else None

    def ensure_project(self, title: str, store_dir: Path, label_config: str) -> int:
        """Returns the id of the project titled `title`, creating it and its local-files storage."""
        with self._asking("setting up a project"):
            found = self._project_titled(title)
            if found is not None:
                project_id = found
                # A project made by an older reviewlens gets the current view; its controls only grow.
                if self.sdk.projects.get(id=project_id).label_config != label_config:
                    self.sdk.projects.update(id=project_id, label_config=label_config)
            else:
                project = self.sdk.projects.create(title=title, label_config=label_config, show_skip_button=True)
                project_id = int(project.id)
            store = str(Path(store_dir).resolve())
            storages = self.sdk.import_storage.local.list(project=project_id)
            if not any(s.path == store for s in storages):
                # Photos are served from the store through this storage, never uploaded; Label Studio
                # must run with LOCAL_FILES_SERVING_ENABLED and a document root above the store.
                try:
                    self.sdk.import_storage.local.create(
                        project=project_id, path=store, title="reviewlens store", use_blob_urls=True
                    )
                except ApiError as exc:
                    raise LabelStudioError(
                        f"Label Studio refused the local-files storage {store}: start it with "
                        f"LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT above that path ({exc.body})"
                    ) from exc
            return project_id

    def ensure_tabs(self, project_id: int, tabs: list[dict[str, Any]]) -> None:
        """Adds the data manager tabs the project lacks, by title; a tab a person changed is kept."""
        with self._asking("setting up the data manager's tabs"):
            titles = {(v.data or {}).get("title") for v in self.sdk.views.list(project=project_id)}
            for tab in tabs:
                if tab["title"] not in titles:
                    self.sdk.views.create(project=project_id, data=tab)

    def task_ids_by_key(self, project_id: int, key: str) -> dict[str, int]:
        """Returns {task.data[key]: task id} for the project's tasks."""
        with self._asking("listing tasks"):
            out: dict[str, int] = {}
            for task in self._listing(project_id, page_size=500):
                if task.data and key in task.data:
                    out[str(task.data[key])] = int(task.id)
            return out

    def tasks(self, project_id: int, **listing: Any) -> list[Any]:
        """Every task of the project, as the SDK's tasks.list gives them (`listing`: its filters,
        such as fields="all" or a data manager view)."""
        with self._asking("listing tasks"):
            return list(self._listing(project_id, **listing))

    def _listing(self, project_id: int, page_size: int = PAGE, **listing: Any) -> Iterator[Any]:
        pager: Any = self.sdk.tasks.list(project=project_id, page_size=page_size, **listing)
        return _every(pager, page_size)

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> None:
        """Creates tasks (with their predictions), a hundred a request."""
        with self._asking("creating tasks"):
            for start in range(0, len(tasks), IMPORT_BATCH):
                batch = tasks[start : start + IMPORT_BATCH]
                self.sdk.projects.import_tasks(id=project_id, request=batch, return_task_ids=True)

    def _users(self) -> dict[int, str]:
        """{user id: e-mail} of the server's users, read once per client (pulls read answers of
        several projects)."""
        if self._user_emails is None:
            self._user_emails = {int(u.id): str(u.email or u.username or u.id) for u in self.sdk.users.list()}
        return self._user_emails

    def answered(self, project_id: int, changed_after: str | None = None) -> Iterator[AnsweredTask]:
        """Yields each annotated task with every annotator's latest answer; with `changed_after` (a
        time in Label Studio's clock, ISO 8601), only the tasks changed after it."""
        query = None
        if changed_after:
            # The one form Label Studio's filter reads.
            value = datetime.fromisoformat(changed_after).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            since = {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime", "value": value}
            query = json.dumps({"filters": {"conjunction": "and", "items": [since]}})
        with self._asking("reading answers"):
            users = self._users()
            for task in self._listing(project_id, fields="all", only_annotated=True, query=query):
                latest: dict[str, Answer] = {}
                annotations = sorted((_as_dict(a) for a in task.annotations or []), key=_when)
                authors = [_author(a) for a in annotations]
                if any(author is not None and author not in users for author in authors):
                    self._user_emails = None  # a person who signed up since the users were read
                    users = self._users()
                for a, author in zip(annotations, authors, strict=True):
                    who = _user(author, users)
                    latest[who] = Answer(int(a["id"]), who, list(a.get("result") or []), bool(a.get("was_cancelled")),
                                         a.get("lead_time"), str(a.get("updated_at") or ""))  # fmt: skip
                if latest:
                    answers = sorted(latest.values(), key=lambda a: (a.updated_at, a.annotation_id))
                    changed = _utc_text(getattr(task, "updated_at", None))
                    yield AnsweredTask(int(task.id), dict(task.data or {}), int(task.overlap or 1), answers, changed)

    def completed(self, project_id: int) -> Iterator[Completed]:
        """Yields each annotated task with its latest annotation."""
        for task in self.answered(project_id):
            last = task.answers[-1]
            yield Completed(task.task_id, task.data, last.annotation_id, last.result, last.cancelled,
                            last.annotator, last.lead_time)  # fmt: skip

    def short_of_answers(self, project_id: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yields (task id, task data) of tasks answered by fewer people than their overlap asks."""
        with self._asking("listing tasks that ask for another answer"):
            for task in self._listing(project_id, fields="all"):
                if 0 < len(task.annotations or []) < int(task.overlap or 1):
                    yield int(task.id), dict(task.data or {})

    def set_overlap(self, project_id: int, share: float) -> None:
        """Asks two annotators for `share` of the project's tasks (Label Studio picks which)."""
        with self._asking("setting the overlap"):
            wanted = (2, round(100 * share)) if share > 0 else (1, 100)
            project = self.sdk.projects.get(id=project_id)
            if (project.maximum_annotations, project.overlap_cohort_percentage) != wanted:
                self.sdk.projects.update(
                    id=project_id, maximum_annotations=wanted[0], overlap_cohort_percentage=wanted[1]
                )

    def unannotated(self, project_id: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yields (task id, task data) of tasks nobody has answered yet."""
        with self._asking("listing open tasks"):
            for task in self._listing(project_id, fields="all"):
                if not task.annotations:
                    yield int(task.id), dict(task.data or {})

    def annotate(
        self, task_id: int, result: list[dict[str, Any]], cancelled: bool = False, lead_time: float = 1.0
    ) -> int:
        """Submits an annotation as the annotator's browser does; returns its id."""
        with self._asking("submitting an answer"):
            ann = self.sdk.annotations.create(id=task_id, result=result, was_cancelled=cancelled, lead_time=lead_time)
            return int(ann.id)

    def connect_backend(self, project_id: int, url: str, title: str, login: str) -> str:
        """Connects the ML backend at `url` to the project (once; Label Studio then asks its /health
        and /setup, and adds a webhook to its /webhook) for its answers on tasks and on boxes as they
        are drawn; returns the model version it reported. Label Studio sends `login` ('user:secret')
        with each call and each webhook post: the backend answers nothing without it."""
        user, secret = split_login(login)
        auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": user, "basic_auth_pass": secret}
        with self._asking("connecting the ML backend"):
            backends = [b for b in self.sdk.ml.list(project=project_id) if b.url.rstrip("/") == url.rstrip("/")]
            # Interactive: the labeling view sends it each box drawn, moved or resized, and shows
            # its answer (the box's share of the photo) while the person works.
            if not backends:
                backends = [self.sdk.ml.create(project=project_id, url=url, title=title, is_interactive=True, **auth)]
            else:
                # Connected before it answered boxes as they are drawn, or before it asked a login,
                # or with a login since made again. Label Studio checks the backend's /health and
                # /setup again on any change, and those need its URL and project: both go along.
                self.sdk.ml.update(id=backends[0].id, url=url, project=project_id, is_interactive=True, **auth)
            self._sign_webhook(project_id, url.rstrip("/") + "/webhook", login)
            backend = backends[0]
            # Reading it makes Label Studio ask the backend again: a backend that was down when
            # first connected reports its state and version now.
            backend = self.sdk.ml.get(id=backend.id)
            if backend.state != "CO":
                raise LabelStudioError(
                    f"Label Studio cannot reach the ML backend at {url} (state {backend.state}: "
                    f"{backend.error_message or 'no answer'}): start it (reviewlens ml-backend), and start "
                    "Label Studio with ML_BLOCK_LOCAL_IP=false when both run on one machine"
                )
            # Predictions shown to annotators, and asked for when a task without them is opened.
            self.sdk.projects.update(id=project_id, show_collab_predictions=True)
            return str(backend.model_version or "")

    def _sign_webhook(self, project_id: int, url: str, login: str) -> None:
        """Label Studio adds the backend's webhook itself, without headers: it is given the login."""
        header = {"Authorization": basic_header(login)}
        for hook in self.sdk.webhooks.list(project=str(project_id)):
            if hook.url == url and hook.headers != header:
                self.sdk.webhooks.update(id=int(hook.id), url=url, headers=header)

    def predict_again(self, project_id: int, task_ids: list[int]) -> int:
        """Asks the connected ML backend for its answers on `task_ids`, PREDICT_BATCH a request;
        Label Studio skips tasks that already hold a prediction of the backend's current version.
        Returns how many tasks were asked about."""
        with self._asking("asking the ML backend again"):
            backends = list(self.sdk.ml.list(project=project_id))
            if not backends:
                return 0
            for start in range(0, len(task_ids), PREDICT_BATCH):
                batch = task_ids[start : start + PREDICT_BATCH]
                self.sdk.actions.create(
                    id="retrieve_tasks_predictions",
                    project=project_id,
                    selected_items={"all": False, "included": batch},
                )
            version = str(self.sdk.ml.get(id=backends[0].id).model_version or "")
            if task_ids and version:
                # The labeling view shows the predictions of the project's model version: the new
                # model's, now that they exist.
                self.sdk.projects.update(id=project_id, model_version=version)
            return len(task_ids)

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        """The task's predictions as Label Studio keeps them."""
        with self._asking("reading predictions"):
            return [p.model_dump() for p in self.sdk.predictions.list(task=task_id)]

    def open_task(self, task_id: int) -> dict[str, Any]:
        """The task as the labeling view opens it (Label Studio asks the ML backend for a task without predictions)."""
        with self._asking("opening a task"):
            return self.sdk.tasks.get(id=str(task_id)).model_dump()

    def task_data(self, task_id: int) -> dict[str, Any]:
        with self._asking("reading a task"):
            return dict(self.sdk.tasks.get(id=str(task_id)).data or {})

    def project_url(self, project_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data"


def _utc_text(when: Any) -> str:
    """A time Label Studio gives (a datetime, or text ending in Z or an offset) as UTC ISO 8601,
    one form for every task so that the texts compare as the times do; "" when absent."""
    if not when:
        return ""
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return str(when.astimezone(UTC).isoformat(timespec="microseconds"))


def _as_dict(annotation: Any) -> dict[str, Any]:
    return annotation if isinstance(annotation, dict) else cast(dict[str, Any], annotation.model_dump())


def _when(annotation: dict[str, Any]) -> tuple[str, int]:
    return str(annotation.get("updated_at") or ""), int(annotation["id"])


def _author(annotation: dict[str, Any]) -> int | None:
    """An annotation's author's id; Label Studio gives the id, or the user itself when expanded."""
    completed_by = annotation.get("completed_by")
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("id")
    return None if completed_by is None else int(completed_by)


def _user(author: int | None, users: dict[int, str]) -> str:
    """An annotation's author by e-mail."""
    if author is None:
        return ""
    return users.get(author, f"user {author}")


def _every(pager: Any, page_size: int) -> Iterator[Any]:
    """A listing's items, page by page, stopping at a short page: the SDK's own iteration asks
    for one more, empty page each time (a tenth of a second per listing, on every pull). Label
    Studio answers 404 for the page after a full last one."""
    try:
        for page in pager.iter_pages():
            items = page.items or []
            yield from items
            if len(items) < page_size:
                return
    except ApiError as exc:
        if exc.status_code != 404:
            raise
