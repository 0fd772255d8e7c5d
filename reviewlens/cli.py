"""The `reviewlens` command: one subcommand per stage, the pipeline, the services."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import ConfigError, ReviewlensError, quoted
from core.files import OverFileBudget, read_bounded
from core.layout import DEFAULT_DATA_DIR, Layout
from core.settings import CrawlConfig, DedupeConfig, LabelConfig, TrainConfig, from_mapping, json_depth
from reviewlens.labelstudio_server import LabelStudioServer, port_of

if TYPE_CHECKING:  # torch loads only for the commands that need it
    from search.answers import PhotoAnswer
    from search.finder import Finder

T = TypeVar("T")

# Prefect's ephemeral API gets 20 s to start by default; its first start in a new home migrates
# its database, which on a busy 2-core machine takes longer. Waiting is better than failing a run.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


# A settings file is a few kilobytes; these bound what a hostile or mistaken one costs to read.
CONFIG_MAX_BYTES = 1_000_000
CONFIG_MAX_DEPTH = 20


def _read_json(path: str) -> Any:
    try:
        values = json.loads(read_bounded(Path(path), CONFIG_MAX_BYTES))
    except OverFileBudget as exc:
        raise ConfigError(f"the config file {quoted(path)} {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {quoted(path)}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the config file {quoted(path)} is not JSON: {quoted(str(exc))}") from exc
    except RecursionError as exc:
        raise ConfigError(f"the config file {quoted(path)} is nested deeper than {CONFIG_MAX_DEPTH} levels") from exc
    if json_depth(values) > CONFIG_MAX_DEPTH:
        raise ConfigError(f"the config file {quoted(path)} is nested deeper than {CONFIG_MAX_DEPTH} levels")
    return values


def add_config_flags(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """--config FILE and a flag per field of settings class `cls`, each defaulting to the class's."""
    parser.add_argument("--config", help=f"JSON file of {cls.__name__} fields; flags given override it")
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, Mapping):
            parser.add_argument(flag, action="append", metavar="KEY=VALUE", help=f"{f.name} entry (repeat)")
        elif isinstance(default, bool):  # --flag / --no-flag: a value after it would always read as true
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=f"(default: {default})")
        elif isinstance(default, tuple):
            kind = type(default[0]) if default else str
            shown = " ".join(map(str, default))
            parser.add_argument(flag, nargs="+", type=kind, metavar=f.name.upper(), help=f"(default: {shown})")
        else:
            parser.add_argument(flag, type=type(default), help=f"(default: {default})")


def config_from_flags(args: argparse.Namespace, cls: type[T]) -> T:
    """Settings from --config, with the flags given on the line on top; unknown keys are rejected."""
    values = _read_json(args.config) if args.config else {}
    if not isinstance(values, dict):
        raise ConfigError(f"the config file {args.config} must hold a JSON object")
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        given = getattr(args, f.name)
        if given is None:
            continue
        if f.default_factory is not dataclasses.MISSING and isinstance(f.default_factory(), Mapping):
            pairs = [item.partition("=") for item in given]
            if bad := [k for k, sep, _ in pairs if not sep]:
                raise ConfigError(f"--{f.name.replace('_', '-')} takes KEY=VALUE, got '{bad[0]}'")
            given = {k: v for k, _, v in pairs}
        values[f.name] = given
    return from_mapping(cls, values)


def cmd_crawl(args: argparse.Namespace) -> None:
    from crawler.crawl import crawl

    if args.shop_url and not args.ranking_url:
        args.ranking_url = args.shop_url  # a shop whose ranking pages live on its own host
    print(crawl(config_from_flags(args, CrawlConfig), Layout(args.data_dir)))


def cmd_import(args: argparse.Namespace) -> None:
    from crawler.collection import import_collection
    from curation.dedupe.grouping import dedupe

    layout = Layout(args.data_dir)
    print(import_collection(args.source, layout, shop=args.shop))
    # Through dedupe at once: a photo imported twice, or crawled too, trains once.
    print(dedupe(DedupeConfig(), layout))


def cmd_dedupe(args: argparse.Namespace) -> None:
    from curation.dedupe.grouping import dedupe

    print(dedupe(config_from_flags(args, DedupeConfig), Layout(args.data_dir)))


def cmd_contact_sheet(args: argparse.Namespace) -> None:
    from curation.dedupe.contact_sheet import write_contact_sheet

    print(write_contact_sheet(Layout(args.data_dir), args.out))


def cmd_label(args: argparse.Namespace) -> None:
    from curation.labeling.client import connect
    from curation.labeling.pull import pull
    from curation.labeling.sync import connect_backend, predict_again, push

    config = config_from_flags(args, LabelConfig)
    if args.action == "report":  # the manifest alone: no Label Studio needed
        from curation.labeling.report import labeling_report, write_report

        report = labeling_report(Layout(args.data_dir))
        print(report.markdown() + f"\nwritten to {write_report(Layout(args.data_dir), report)}")
        return
    client, layout = connect(), Layout(args.data_dir)
    if args.action == "connect-backend":
        version = connect_backend(config, layout, client, args.backend_url)
        print(f"ML backend {args.backend_url} connected to project '{config.project_title}' (model {version})")
    elif args.action == "predict-again":
        print(f"{predict_again(config, layout, client)} open tasks asked about again")
    else:
        print(push(config, layout, client) if args.action == "push" else pull(config, layout, client, args.full))


def cmd_ml_backend(args: argparse.Namespace) -> None:
    from reviewlens.ml_backend import serve_backend

    config = config_from_flags(args, LabelConfig)
    serve_backend(Layout(args.data_dir), config.min_coverage, args.host, args.port, args.allowed_host, args.queue)


def _add_door_flags(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=port, help=f"(default: {port})")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host header to answer besides the address listened on, e.g. the name a web server "
                   "in front forwards (repeatable)")  # fmt: skip
    p.add_argument("--queue", type=int, default=16, metavar="N",
                   help="requests that may wait while one is answered; more get 503 with Retry-After "
                   "(default: 16)")  # fmt: skip


def _label_studio(args: argparse.Namespace) -> LabelStudioServer:
    home = Path(args.home or Layout(args.data_dir).data_dir / "label-studio")
    port = args.port if args.port is not None else port_of(home)
    return LabelStudioServer(home, Path(args.document_root or args.data_dir), port=port)


def cmd_label_studio(args: argparse.Namespace) -> None:
    server = _label_studio(args)
    if args.action == "start":
        creds = server.start()
        print(
            f"Label Studio at {server.url}; login {creds.username} "
            f"(password and token in {server.home}/credentials.json)"
        )
    elif args.action == "stop":
        stopped = server.stop()
        print(f"stopped Label Studio at {server.url}" if stopped else f"Label Studio of {server.home} was not running")
    elif args.action == "add-user":
        if not args.email or not server.is_up():
            raise ReviewlensError("add-user needs an e-mail address and a running Label Studio (label-studio start)")
        known = args.email in server.people()
        person = server.person(args.email)
        if known:
            print(f"{person.username} is a user already: their login is in {server.home}/people.json")
        else:
            print(f"Label Studio at {server.url}: login {person.username}, password {person.password}")
            print(f"(their API token, and this login, are kept in {server.home}/people.json, readable by you alone)")
    else:
        print("up" if server.is_up() else "down")


def cmd_up(args: argparse.Namespace) -> None:
    from reviewlens.services import Services

    for line in Services.of(args.data_dir, args.label_studio_port, args.prefect_port).up():
        print(line)
    print(f"stop them all with: reviewlens down --data-dir {args.data_dir}")


def cmd_down(args: argparse.Namespace) -> None:
    from reviewlens.services import Services

    stopped, stale = Services.of(args.data_dir, args.label_studio_port, args.prefect_port).down()
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing of reviewlens up was running")
    for leftover in stale:
        print(leftover)


def cmd_train(args: argparse.Namespace) -> None:
    config = config_from_flags(args, TrainConfig)  # a bad flag is refused before torch loads (seconds)
    from training.train import NothingNew, train

    try:
        print(train(config, Layout(args.data_dir)))
    except NothingNew as unchanged:  # an answer, not a failure: the model in production stays
        print(unchanged)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from training.evaluate import evaluate, promote
    from training.runs import latest_run

    layout = Layout(args.data_dir)
    run_dir = Path(args.run) if args.run else latest_run(layout)
    report = evaluate(run_dir, layout)
    print(report.table)
    print(f"gate: {report.gate['reason']}")
    print(f"report: {run_dir / 'report.md'} (per product, the study beside it, confusion.png)")
    if args.promote and report.gate["promote"]:
        print(f"promoted to {promote(run_dir, layout)}")


def _model_asked(layout: Layout, model: str | None) -> Path | None:
    """The model asked for, else the one that serves (training/runs.py); None before any training."""
    from training.runs import serving_model

    return Path(model) if model else serving_model(layout)


def cmd_index(args: argparse.Namespace) -> None:
    from search.indexing import update_index, update_pretrained_index
    from training.bundle import Ensemble

    layout = Layout(args.data_dir)
    model = _model_asked(layout, args.model)
    # With no model yet, the members' pretrained bodies embed the photos.
    ensemble = Ensemble.load(model) if model is not None else None
    if ensemble is None:
        config = from_mapping(TrainConfig, {"members": args.members} if args.members else {})
        summary = update_pretrained_index(layout, config, rebuild=args.rebuild, approximate_from=args.approximate_from)
    else:
        summary = update_index(layout, ensemble, rebuild=args.rebuild, approximate_from=args.approximate_from)
    kind = "approximate (IVF)" if summary.approximate else "exact"
    made_by = (
        f"the pretrained bodies ({summary.model_version}; no model trained yet, so every answer is not sure)"
        if ensemble is None
        else f"model {summary.model_version}"
    )
    print(
        f"index of {made_by}: {summary.photos} photos of {summary.products} products "
        f"({summary.views} of them cut to a person's box, {summary.catalog} the shop's catalog photos), "
        f"{summary.added} added in {summary.seconds:.1f} s; {kind} search"
        + (f"; {summary.left_out} left out (file missing or changed)" if summary.left_out else "")
    )


def _finder(layout: Layout, model: str | None) -> Finder:
    """The Finder of the model asked for, else of the one that serves; before any training, that
    of the index built with the pretrained bodies."""
    from search.finder import Finder
    from training.runs import NoTrainedModel

    path = _model_asked(layout, model)
    if path is not None:
        return Finder.load(layout, path)
    if (before := Finder.before_training(layout)) is not None:
        return before
    raise NoTrainedModel(
        f"no trained run under {layout.runs_dir}: run `reviewlens train` first, "
        "or `reviewlens index` to search with the pretrained bodies"
    )


def cmd_predict(args: argparse.Namespace) -> None:
    from search.answers import answer_files, as_json, photos_in
    from search.picture import draw_objects
    from training.data import UnreadablePhoto
    from training.progress import Bar

    layout = Layout(args.data_dir)
    finder = _finder(layout, args.model)
    photos = photos_in(Path(args.photo))
    ensemble, index = finder.ensemble, finder.index
    if not args.json:
        print(
            f"model {ensemble.version} ({ensemble.mode} mode); "
            + (f"index of {len(index)} photos; " if index is not None else "no index (run `reviewlens index`); ")
            + f"not sure below {finder.threshold:.2f}",
            flush=True,
        )
    answers = []
    # Each answer is printed as it comes (a folder takes seconds a photo); a bar on the terminal
    # counts them when JSON, printed whole at the end, is what stdout carries.
    with Bar(len(photos), "photos answered", shown=args.json and len(photos) > 1) as bar:
        for answer, image in answer_files(finder, photos, k=args.top):
            answers.append(answer)
            bar.update(1)
            if args.picture and image is not None:
                out = Path(args.picture)
                draw_objects(
                    image, answer.objects, out / f"{answer.photo.stem}.png" if len(photos) > 1 or out.is_dir() else out
                )
            if not args.json:
                print_answer(answer)
    problems = [a.problem for a in answers if a.problem]
    if len(problems) == len(answers):  # nothing to answer: the reason is the error
        raise UnreadablePhoto(
            problems[0] if len(problems) == 1 else f"none of the {len(problems)} photos could be read"
        )
    if args.json:
        print(json.dumps([as_json(a) for a in answers], indent=1, ensure_ascii=False))


def print_answer(answer: PhotoAnswer) -> None:
    if answer.problem:
        print(f"{answer.photo}:\n  cannot read it: {answer.problem}", flush=True)
        return
    lines = [f"{answer.photo}: {len(answer.objects)} object{'s' if len(answer.objects) != 1 else ''}"]
    for n, found in enumerate(answer.objects, start=1):
        box = ", ".join(f"{v:.2f}" for v in found.box)
        lines.append(f" object {n} at ({box})" + ("" if found.sure else "  not sure; the likeliest:"))
        for rank, match in enumerate(found.matches, start=1):
            lines.append(f"  {rank}. {match.product.name}  {match.product.url}  {share(match.score)}")
    print("\n".join(lines), flush=True)


def share(score: float) -> str:
    """A probability as a shopper reads it: 54.0%, and '<0.1%' rather than a row of zeros."""
    return f"{score:.1%}" if score >= 0.001 else "<0.1%"


def cmd_serve(args: argparse.Namespace) -> None:
    from search.serve import serve

    layout = Layout(args.data_dir)
    serve(layout, _finder(layout, args.model), args.host, args.port, args.allowed_host, args.queue)


PIPELINE_SETTINGS: dict[str, type[Any]] = {
    "crawl": CrawlConfig,
    "dedupe": DedupeConfig,
    "label": LabelConfig,
    "train": TrainConfig,
}


def cmd_pipeline(args: argparse.Namespace) -> None:
    from flows.pipeline import pipeline_flow

    settings = _read_json(args.config) if args.config else {}
    if unknown := sorted(set(settings) - set(PIPELINE_SETTINGS)):
        raise ConfigError(f"unknown pipeline settings: {', '.join(unknown)}; valid: {', '.join(PIPELINE_SETTINGS)}")
    configs: dict[str, Any] = {
        stage: from_mapping(cls, settings.get(stage, {})) for stage, cls in PIPELINE_SETTINGS.items()
    }
    result = pipeline_flow(data_dir=str(args.data_dir), **configs)
    print(result.evaluate.table)


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="store, manifest and runs (default: %(default)s)"
    )


def command_parser(prog: str, description: str | None) -> tuple[argparse.ArgumentParser, Any]:
    """A command's parser with -v and its subcommands' place; `run` names the command in errors."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.set_defaults(prog=prog)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser, parser.add_subparsers(dest="command", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("reviewlens", __doc__)

    p = sub.add_parser("crawl", help="crawl the shop's best sellers and their review photos")
    add_data_dir(p)
    add_config_flags(p, CrawlConfig)
    p.set_defaults(func=cmd_crawl)

    p = sub.add_parser("import", help="an existing collection in: a folder of product folders, or a CSV")
    p.add_argument(
        "source", type=Path, help="folder with one sub-folder per product, or a CSV of path,product[,name,url]"
    )
    add_data_dir(p)
    p.add_argument("--shop", default="import", help="the shop its products are recorded under (default: %(default)s)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("dedupe", help="validate, hash and group near-duplicate photos")
    add_data_dir(p)
    add_config_flags(p, DedupeConfig)
    p.set_defaults(func=cmd_dedupe)

    p = sub.add_parser("contact-sheet", help="an HTML page of the duplicate groups and rule verdicts")
    add_data_dir(p)
    p.add_argument("--out", type=Path, help="the page's path (default: DATA_DIR/reports/contact-sheet.html)")
    p.set_defaults(func=cmd_contact_sheet)

    p = sub.add_parser(
        "label",
        help="push tasks to Label Studio, pull decisions back, connect the ML backend, ask it about the open "
        "tasks, or report the funnel, the machine's agreement with people and each annotator's work",
    )
    p.add_argument("action", choices=["push", "pull", "connect-backend", "predict-again", "report"])
    p.add_argument(
        "--backend-url", default="http://127.0.0.1:9090", help="connect-backend: where `reviewlens ml-backend` answers"
    )
    p.add_argument(
        "--full", action="store_true", help="pull: read every answered task, not only those changed since the last pull"
    )
    add_data_dir(p)
    add_config_flags(p, LabelConfig)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("ml-backend", help="the model in production for Label Studio's labeling view (its ML backend)")
    add_data_dir(p)
    add_config_flags(p, LabelConfig)
    _add_door_flags(p, 9090)
    p.set_defaults(func=cmd_ml_backend)

    p = sub.add_parser(
        "label-studio", help="start, stop or check the local Label Studio server, or add an annotator to it"
    )
    p.add_argument("action", choices=["start", "stop", "status", "add-user"])
    p.add_argument("email", nargs="?", help="add-user: the new annotator's e-mail address, their login")
    add_data_dir(p)
    p.add_argument("--home", type=Path, help="Label Studio's own data (default: DATA_DIR/label-studio)")
    p.add_argument("--document-root", type=Path, help="folder it may serve photos from (default: DATA_DIR)")
    p.add_argument("--port", type=int, help="default: the port it was last started on, else 8080")
    p.set_defaults(func=cmd_label_studio)

    for name, func, text in (
        ("up", cmd_up, "start Label Studio, a Prefect server, its work pool and worker, and every deployment"),
        ("down", cmd_down, "stop exactly what `reviewlens up` started"),
    ):
        p = sub.add_parser(name, help=text)
        add_data_dir(p)
        p.add_argument("--label-studio-port", type=int, default=8080)
        p.add_argument("--prefect-port", type=int, default=4200)
        p.set_defaults(func=func)

    p = sub.add_parser("train", help="train the ensemble on the accepted photos")
    add_data_dir(p)
    add_config_flags(p, TrainConfig)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="a run on its test photos: report.md, confusion.png, the promotion gate")
    p.add_argument("run", nargs="?", help="run folder (default: the newest)")
    add_data_dir(p)
    p.add_argument("--promote", action="store_true", help="promote the run if it passes the gate")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("index", help="embed every usable photo of every product for search (no retrain)")
    add_data_dir(p)
    p.add_argument("--model", help="run folder or model.pt (default: production, else the newest run)")
    p.add_argument("--rebuild", action="store_true", help="embed every photo again")
    p.add_argument(
        "--approximate-from", type=int, default=100_000, help="photos from which search is approximate (IVF)"
    )
    p.add_argument(
        "--members",
        nargs="+",
        help="with no trained model: the members whose pretrained bodies embed the photos (default: training's)",
    )
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("predict", help="each object in a photo (or each photo of a folder) and its likeliest products")
    p.add_argument("photo", help="a photo, or a folder of photos (answered with one load of the models)")
    p.add_argument("--top", type=int, default=3, help="products listed per object (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the answers as JSON")
    p.add_argument("--picture", help="PNG with each box and its best product (a folder for several photos)")
    add_data_dir(p)
    p.add_argument("--model", help="run folder or model.pt (default: production, else the newest run)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("serve", help="a local web page: drop a photo, see its products")
    add_data_dir(p)
    p.add_argument("--model", help="run folder or model.pt (default: production, else the newest run)")
    _add_door_flags(p, 8900)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("pipeline", help="run the whole pipeline as a Prefect flow")
    add_data_dir(p)
    p.add_argument(
        "--config", help="JSON file: {crawl: {...}, dedupe: {...}, label: {...}, train: {...}, demo_shop_dir: ...}"
    )
    p.set_defaults(func=cmd_pipeline)

    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Runs a parsed command: a ReviewlensError is one line on stderr and exit status 1."""
    # Prefect's ephemeral server would report usage to a host this machine may not reach.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Training's epoch lines are shown without -v: minutes of silence read as a hang.
    logging.getLogger("training.progress").setLevel(logging.INFO)
    try:
        args.func(args)
    except ReviewlensError as exc:  # what the user can fix; anything else is a bug and keeps its traceback
        print(f"{args.prog} {args.command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`reviewlens predict FOLDER | head`): stop quietly, as a Unix tool
        # does. Python's own flush at exit would raise again, so stdout goes to /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
