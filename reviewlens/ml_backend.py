"""`reviewlens ml-backend`: the model that serves, live in Label Studio's labeling view.

It speaks the protocol of HumanSignal's label-studio-ml-backend: GET /health, POST /setup (the
model version), POST /predict (one answer per task, in the order asked) and POST /webhook.
Label Studio calls /predict for a task opened without predictions, and for the open tasks a new
model is asked about (`LabelStudioClient.predict_again`). It posts every event of the project to
/webhook; an answer saved becomes the Prefect event "label-studio.annotation.saved", on which the
label-pull deployment pulls (prefect.yaml), so a decision reaches the manifest in seconds, not at
the next scheduled pull.

A /predict that carries the boxes on the photo as its context is Label Studio's interactive call,
made whenever a person draws, moves or resizes a box: it is answered at once, without the model,
with the box's share of the photo against the coverage rule (`rules.box_words`).

Each other answer holds the product's box and the object count as the machine estimated them when
the photo was pushed, and a note in words: the rule verdicts and the model's three likeliest
products with their scores, as `reviewlens predict` names them (`Finder.answer`, the index
included). The photo is read from the store by the hash in the task, never fetched over HTTP. The
model is the one that serves `predict` (production's, else the newest run's); a promotion or a
training replaces it on disk, and the next request answers with it under its version.

Every request must carry the login kept in DATA_DIR/services/ml-backend-login (HTTP basic auth):
`label connect-backend` gives it to Label Studio for its calls and for the webhook's header, so a
stranger on the machine can neither read answers nor queue label pulls. The doors of
core/doors.py stand in front: its own Host names, a bounded queue, header and body deadlines.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core import queries as q
from core.bodies import Refused, read_json
from core.boxes import parse_box
from core.doors import Queue, guarded, own_hosts, run
from core.kept_secret import kept_secret
from core.layout import Layout
from core.manifest import Manifest, open_manifest
from core.photos import OutsideStore, photo_path
from curation.labeling.machine_note import estimate_lines
from curation.labeling.report import VerdictAgreement, verdict_records
from curation.labeling.rules import box_words
from curation.labeling.shapes import box_region, note_region, objects_region, your_box_region
from curation.preannotate.estimates import photo_verdict, queue_score
from search.answers import answer_files
from search.finder import Finder
from search.indexing import index_folder, pretrained_file
from training.runs import serving_model

log = logging.getLogger(__name__)
NO_MODEL = "no-model-yet"  # the version of answers given before any model is promoted or index built
NO_MODEL_WORDS = "Model: none yet (promote one, or `reviewlens index` to search with the pretrained bodies)."
Stamp = tuple[str, int, int, int] | None  # a file's path, inode, change time and size; None: absent
# Label Studio's webhook actions that change a decision, and the Prefect event they become.
ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED"}
ANNOTATION_SAVED = "label-studio.annotation.saved"
# What one call may ask: Label Studio sends a task or a page of them, a push asks again 25
# at a time (curation/labeling/sync.py); each task's data is a few hundred bytes.
MAX_TASKS = 200
MAX_BODY = 2_000_000


class Serving:
    """The model that serves (training/runs.py: production's, else the newest run's) and its index,
    loaded again whenever a promotion, a training or an index run replaces their files. Before any
    training, the index built with the pretrained bodies answers: what `reviewlens predict` uses."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.index_file = index_folder(layout) / "index.json"
        self.finder: Finder | None = None
        # The files as loaded: a promotion renames a new folder into place, so its inode changes;
        # an index run writes its index.json last.
        self.loaded_from: tuple[Stamp, Stamp] | None = None
        self.lock = threading.Lock()

    @staticmethod
    def _stamp(path: Path) -> Stamp:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size

    def current(self) -> Finder | None:
        with self.lock:
            model = serving_model(self.layout)
            source = model / "model.pt" if model is not None else pretrained_file(self.layout)
            stamp = (self._stamp(source), self._stamp(self.index_file))
            if stamp == self.loaded_from:
                return self.finder
            if self.finder is not None and self.loaded_from is not None and stamp[0] == self.loaded_from[0]:
                self.finder = Finder.of(self.layout, self.finder.ensemble)  # only the index changed
            elif model is not None:
                self.finder = Finder.load(self.layout, model)
            else:
                self.finder = Finder.before_training(self.layout)
            self.loaded_from = stamp
            if self.finder is not None:
                index = self.finder.index
                log.info(
                    "model %s loaded from %s, %s",
                    self.finder.ensemble.version,
                    source,
                    f"its index of {len(index)} photos" if index is not None else "no index of it yet",
                )
            return self.finder

    def version(self) -> str:
        finder = self.current()
        return finder.ensemble.version if finder is not None else NO_MODEL

    def loaded_version(self) -> str:
        """The version of the model last loaded, without looking at the disk: for answers that use no model."""
        finder = self.finder
        return finder.ensemble.version if finder is not None else NO_MODEL


@dataclass(frozen=True)
class Verdicts:
    """The machine's estimate of one photo, as the push saved it."""

    coverage: float | None
    n_objects: int
    confidence: float
    coverage_verdict: str
    objects_verdict: str
    box: str | None

    @property
    def verdict(self) -> str:
        return photo_verdict(self.coverage_verdict, self.objects_verdict)

    def words(self, min_coverage: float, records: dict[str, VerdictAgreement]) -> list[str]:
        return estimate_lines(self.coverage, self.n_objects, self.coverage_verdict, self.objects_verdict,
                              min_coverage, records.get(self.verdict))  # fmt: skip


def model_words(finder: Finder | None, photos: list[Path], claimed: list[str]) -> list[list[str]]:
    """The three likeliest products for each photo in words, as `reviewlens predict` names them
    (its first object): one load of the models."""
    if finder is None:
        return [[NO_MODEL_WORDS] for _ in photos]
    version = finder.ensemble.version
    out = []
    for (answer, _), product in zip(answer_files(finder, photos, k=3), claimed, strict=True):
        if answer.problem:
            out.append([f"Model {version}: cannot read the photo ({answer.problem})."])
            continue
        best = answer.objects[0]
        ranked = ", ".join(f"{n}. {m.product.name} ({m.score:.2f})" for n, m in enumerate(best.matches, start=1))
        lines = [f"Model {version}: {ranked}" + ("" if best.sure else " - not sure.")]
        named = best.matches[0].product.name
        if best.sure and named != product:
            lines.append(f"The model takes it for {named}, not {product}: check which product it shows.")
        out.append(lines)
    return out


@dataclass(frozen=True)
class Found:
    """What the manifest knows of a task's photo: its file and the push's estimate (None when absent)."""

    path: Path | None
    estimate: Verdicts | None


def look_up(manifest: Manifest, layout: Layout, sha256: str) -> Found:
    row = manifest.row(q.ESTIMATE_OF, sha256)
    if row is not None:
        estimate = Verdicts(row["coverage"], row["n_objects"], row["confidence"], row["coverage_verdict"],
                            row["objects_verdict"], row["box"])  # fmt: skip
        return Found(photo_path(layout, sha256, row["path"]), estimate)
    known = manifest.row(q.PHOTO_FILE, sha256)
    if known is None:
        return Found(None, None)
    try:
        return Found(photo_path(layout, sha256, known["path"]), None)
    except OutsideStore as exc:  # a manifest edited by hand: that task gets no answer, the others do
        log.warning("%s", exc)
        return Found(None, None)


def answer(
    found: Found, said: list[str], min_coverage: float, version: str, records: dict[str, VerdictAgreement]
) -> dict[str, Any]:
    """One task's prediction in Label Studio's shape, from its photo's estimate and the model's words."""
    if found.path is None:
        return {"result": [note_region(["This photo is not in reviewlens' manifest."])], "score": 0.0,
                "model_version": version}  # fmt: skip
    result: list[dict[str, Any]] = []
    lines: list[str] = []
    estimate = found.estimate
    if estimate is not None:
        if estimate.box:
            result.append(box_region(parse_box(estimate.box), estimate.confidence, live=True))
            result.append(objects_region(estimate.n_objects))
        lines += estimate.words(min_coverage, records)
    result.append(note_region(lines + said))
    score = queue_score(estimate.verdict, estimate.confidence) if estimate else 0.0
    return {"result": result, "score": score, "model_version": version}


def measure_drawn(drawn: list[dict[str, Any]], min_coverage: float, version: str) -> dict[str, Any]:
    """The answer to an interactive call: the boxes on the photo as the rules see them, in words."""
    note = your_box_region(box_words(drawn, min_coverage))
    return {"results": [{"result": [note], "score": 1.0, "model_version": version}], "model_version": version}


def build_backend(layout: Layout, min_coverage: float, hosts: list[str], login: str, queue: int = 16) -> Starlette:
    serving = Serving(layout)
    waiting, telling = Queue(queue), Queue(queue)
    serving.current()  # loaded before the first request: Label Studio's health check waits seconds, not minutes
    answering = threading.Lock()  # one /predict at a time: the models are not shared between threads

    def predict_tasks(tasks: list[dict[str, Any]]) -> dict[str, Any]:
        with answering, open_manifest(layout) as manifest:
            finder = serving.current()
            version = finder.ensemble.version if finder is not None else NO_MODEL
            data = [t.get("data") or {} for t in tasks]
            found = [look_up(manifest, layout, str(d.get("sha256") or "")) for d in data]
            records = verdict_records(manifest)
            known = [(f.path, str(d.get("product") or "")) for f, d in zip(found, data, strict=True) if f.path]
            words = iter(model_words(finder, [path for path, _ in known], [product for _, product in known]))
            results = [answer(f, next(words) if f.path else [], min_coverage, version, records) for f in found]
        log.info("predicted %d tasks with model %s", len(tasks), version)
        return {"results": results, "model_version": version}

    async def health(_: Request) -> Response:
        version = await run_in_threadpool(serving.version)
        return JSONResponse({"status": "UP", "model_class": "reviewlens", "model_version": version})

    async def setup(_: Request) -> Response:
        return JSONResponse({"model_version": await run_in_threadpool(serving.version)})

    async def predict(request: Request) -> Response:
        try:
            async with waiting.place():
                tasks, context = predict_request(await read_json(request, MAX_BODY))
                if context is not None:
                    return JSONResponse(measure_drawn(context, min_coverage, serving.loaded_version()))
                return JSONResponse(await run_in_threadpool(predict_tasks, tasks))
        except Refused as refused:
            return refused.response()

    async def webhook(request: Request) -> Response:
        # Label Studio posts every event of the project here once a backend is connected.
        try:
            async with telling.place():
                event = await read_json(request, MAX_BODY)
                project = event.get("project") if isinstance(event, dict) else None
                project_id = project.get("id") if isinstance(project, dict) else None
                if not isinstance(event, dict) or not isinstance(project_id, int) or isinstance(project_id, bool):
                    return JSONResponse({"error": "expected Label Studio's webhook JSON"}, status_code=400)
                action = str(event.get("action") or "")
                if action in ANNOTATION_ACTIONS:
                    told = await run_in_threadpool(announce, action, project_id, event)
                    log.info("event %s of project %s: %s", action, project_id, told)
        except Refused as refused:
            return refused.response()
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/health", health),
        Route("/setup", setup, methods=["POST"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/webhook", webhook, methods=["POST"]),
    ]
    return guarded(routes, hosts, login)


def predict_request(body: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The tasks of a /predict call, and the boxes being drawn when it is an interactive one;
    raises Refused (400) for anything else Label Studio would not send."""
    if not isinstance(body, dict) or not isinstance(tasks := body.get("tasks"), list):
        raise Refused(400, "expected a JSON body with a list of tasks")
    if len(tasks) > MAX_TASKS:
        raise Refused(413, f"{len(tasks):,} tasks in one call; at most {MAX_TASKS} are answered at once")
    if not all(isinstance(t, dict) and isinstance(t.get("data") or {}, dict) for t in tasks):
        raise Refused(400, "each task must be an object whose data is an object")
    params = body.get("params") or {}
    context = params.get("context") if isinstance(params, dict) else None
    drawn = context.get("result") if isinstance(context, dict) else None
    return tasks, drawn if isinstance(drawn, list) else None


def announce(action: str, project: int, event: dict[str, Any]) -> str:
    """Tells the Prefect server (PREFECT_API_URL) that an answer was saved: the label-pull
    deployment's trigger pulls on it. Says what it did."""
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return "no Prefect server to tell (PREFECT_API_URL): the scheduled pull collects it"
    annotation = event.get("annotation") or {}
    emit_event(
        event=ANNOTATION_SAVED,
        resource={"prefect.resource.id": f"label-studio.project.{project}"},
        payload={"action": action, "task": event.get("task", {}).get("id"), "annotation": annotation.get("id")},
    )
    return f"{ANNOTATION_SAVED} sent to Prefect"


def use_prefect_login(layout: Layout) -> None:
    """The Prefect server `up` started over this data folder takes no call without its login:
    the backend reads it from DATA_DIR/services/prefect-auth when PREFECT_API_AUTH_STRING is unset."""
    kept = layout.prefect_login
    if os.environ.get("PREFECT_API_URL") and not os.environ.get("PREFECT_API_AUTH_STRING") and kept.is_file():
        os.environ["PREFECT_API_AUTH_STRING"] = kept.read_text().strip()


def serve_backend(
    layout: Layout, min_coverage: float, host: str, port: int, allowed_hosts: list[str], queue: int
) -> None:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    use_prefect_login(layout)
    login = kept_secret(layout.ml_backend_login)
    hosts = own_hosts(host, allowed_hosts)
    print(f"reviewlens ml-backend: http://{host}:{port}/ (data {layout.data_dir}; login in {layout.ml_backend_login}; "
          f"answers requests for {', '.join(hosts)}; {queue} may wait)", flush=True)  # fmt: skip
    run(build_backend(layout, min_coverage, hosts, login, queue), host, port)
