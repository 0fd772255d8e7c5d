"""The `reviewlens` command: every subcommand answers --help, and bad input gets a clear error."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from core.settings import CrawlConfig, TrainConfig
from demo.cli import main as demo_main
from reviewlens.cli import build_parser, config_from_flags, main

SUBCOMMANDS = [
    ["crawl"],
    ["dedupe"],
    ["label", "push"],
    ["label", "pull"],
    ["label-studio", "start"],
    ["contact-sheet"],
    ["train"],
    ["evaluate"],
    ["predict", "x.jpg"],
    ["pipeline"],
    ["index"],
    ["serve"],
]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w))
def test_every_subcommand_has_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*words[:1], "--help"])
    assert done.value.code == 0
    assert "usage: reviewlens " + words[0] in capsys.readouterr().out


@pytest.mark.parametrize("words", [["run"], ["shop"], ["stop"]], ids=lambda w: w[0])
def test_every_demo_subcommand_has_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        demo_main([*words, "--help"])
    assert done.value.code == 0
    assert "usage: reviewlens-demo " + words[0] in capsys.readouterr().out


def test_installed_commands_run() -> None:
    # The console scripts pip installed beside this interpreter, as a person types them.
    for name, words in (("reviewlens", ("pipeline", "predict")), ("reviewlens-demo", ("run", "stop"))):
        command = Path(sys.executable).parent / name
        assert command.is_file(), f"{command} is not installed (make env)"
        out = subprocess.run([str(command), "--help"], capture_output=True, text=True, check=True)
        assert out.stdout.startswith(f"usage: {name} ") and all(w in out.stdout for w in words)
    # The production command knows nothing of the demo.
    out = subprocess.run([str(Path(sys.executable).parent / "reviewlens"), "demo"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice: 'demo'" in out.stderr


def test_predict_without_a_model_or_with_a_bad_photo_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not a jpeg")
    assert main(["predict", str(photo), "--data-dir", str(tmp_path)]) == 1
    assert "run `reviewlens train` first" in capsys.readouterr().err


def test_unknown_config_keys_are_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "dedupe.json"
    config.write_text('{"max_distance": 8, "max_distanse": 9}')
    assert main(["dedupe", "--config", str(config), "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unknown DedupeConfig keys: max_distanse" in err and "valid keys: max_cross_distance, max_distance" in err


def test_train_takes_every_setting_from_a_file_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "train.json"
    config.write_text('{"epochs": 2, "label_smoothing": 0.2, "members": ["efficientnet_lite1"]}')
    words = ["train", "--config", str(config), "--epochs", "3", "--weights", "resnet50=/w/resnet50.pth"]
    settings = config_from_flags(build_parser().parse_args(words), TrainConfig)
    assert (settings.epochs, settings.label_smoothing, settings.members) == (3, 0.2, ("efficientnet_lite1",))
    assert settings.weights == {"resnet50": "/w/resnet50.pth"}
    help_text = subprocess.run(
        [sys.executable, "-m", "reviewlens.cli", "train", "--help"], capture_output=True, text=True, check=True
    ).stdout
    missing = [f.name for f in dataclasses.fields(TrainConfig) if "--" + f.name.replace("_", "-") not in help_text]
    assert missing == []


def test_a_yes_no_setting_is_a_pair_of_flags(tmp_path: Path) -> None:
    config = tmp_path / "crawl.json"
    config.write_text('{"catalog_photos": false, "top_n": 3}')
    from_file = config_from_flags(build_parser().parse_args(["crawl", "--config", str(config)]), CrawlConfig)
    assert (from_file.catalog_photos, from_file.top_n) == (False, 3)
    on = config_from_flags(
        build_parser().parse_args(["crawl", "--config", str(config), "--catalog-photos"]), CrawlConfig
    )
    assert on.catalog_photos is True
    off = config_from_flags(build_parser().parse_args(["crawl", "--no-catalog-photos"]), CrawlConfig)
    assert off.catalog_photos is False
    assert config_from_flags(build_parser().parse_args(["crawl"]), CrawlConfig).catalog_photos is True


def test_a_bad_value_is_a_user_error_and_a_bug_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "train.json"
    config.write_text('{"epochs": "many"}')
    assert main(["train", "--config", str(config), "--data-dir", str(tmp_path)]) == 1
    assert "bad TrainConfig values: epochs" in capsys.readouterr().err
    assert main(["train", "--members", "vit_h_14", "--data-dir", str(tmp_path)]) == 1
    assert "valid members: efficientnet_lite0" in capsys.readouterr().err

    def broken(*args: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr("training.train.train", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["train", "--data-dir", str(tmp_path)])


def test_a_reader_that_goes_away_stops_a_command_quietly() -> None:
    # `reviewlens predict FOLDER | head`: the command's answers go on after the reader has closed.
    script = (
        "import argparse, sys\n"
        "from reviewlens.cli import run\n"
        "def answers(args):\n"
        "    for i in range(10**6):\n"
        "        print('photo', i, 'answer')\n"
        "sys.exit(run(argparse.Namespace(func=answers, verbose=False, prog='reviewlens', command='predict')))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"photo 0 answer\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1 and err == ""  # no traceback, nor Python's "Exception ignored"


@pytest.mark.parametrize("stage", [["dedupe"], ["contact-sheet"], ["train"]], ids=lambda w: w[0])
def test_a_stage_after_the_crawl_refuses_a_folder_without_a_manifest(
    stage: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "dta"
    assert main([*stage, "--data-dir", str(typo)]) == 1
    assert f"no manifest at {typo / 'manifest.sqlite'}" in capsys.readouterr().err
    assert not typo.exists()


def test_a_damaged_manifest_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.sqlite").write_bytes(b"this is not a database " * 100)
    assert main(["dedupe", "--data-dir", str(tmp_path)]) == 1
    assert "cannot be read (file is not a database)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--epochs", "0"], "epochs: Input should be greater than or equal to 1"),
        (["--image-size", "16"], "image_size must be 0 (each member's own) or from 32 to 1024"),
        (["--mode", "fast"], "mode: Input should be 'auto', 'quick', 'top' or 'full'"),
        (["--budget-minutes", "-1"], "budget_minutes: Input should be greater than or equal to 0"),
        (["--lr", "nan"], "lr: Input should be a finite number"),
        (["--lr", "-1"], "lr: Input should be greater than 0"),
        (["--val-share", "0.6", "--test-share", "0.5"], "val_share + test_share must stay under 1"),
    ],
)
def test_train_refuses_numbers_out_of_range_before_any_work(
    flags: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *flags, "--data-dir", str(tmp_path)]) == 1
    assert named in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("made", "said"),
    [
        (lambda f: f.write_text(f'{{"categories": {_nested(200_000)}}}'), "nested deeper than 20 levels"),
        (lambda f: f.write_text(f'{{"categories": {_nested(25)}}}'), "nested deeper than 20 levels"),
        (lambda f: f.write_text(" " * 1_500_000 + "{}"), "holds 1,500,002 bytes: at most 1,000,000"),
        (lambda f: os.mkfifo(f), "is not a regular file"),  # read for ever, were it read
        (lambda f: f.write_text(json.dumps({"k" * 500_000: 1})), "(499,800 characters more)"),
        (lambda f: f.write_text(json.dumps({"shop_url": "u" * 500_000})), "characters more)"),
        (lambda f: f.write_bytes(b'{"top_n": "\xff\xfe"}'), "is not JSON"),
    ],
    ids=["200,000 deep", "25 deep", "1.5 MB", "a FIFO", "a 500 kB key", "a 500 kB value", "not UTF-8"],
)
def test_a_hostile_config_is_refused_before_it_is_read_whole_and_quoted_short(
    made: Callable[[Path], object], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "crawl.json"
    made(config)
    assert main(["crawl", "--config", str(config), "--data-dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert said in err and len(err) < 1_200 and "Traceback" not in err
    assert not (tmp_path / "data").exists()
