"""The `reviewlens` command: every subcommand answers --help, and bad input gets a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reviewlens.cli import main

SUBCOMMANDS = [
    ["demo-shop"],
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
    ["demo"],
]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w))
def test_every_subcommand_has_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*words[:1], "--help"])
    assert done.value.code == 0
    assert "usage: reviewlens " + words[0] in capsys.readouterr().out


def test_installed_command_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "reviewlens.cli", "--help"], capture_output=True, text=True, check=True)
    assert "pipeline" in out.stdout and "predict" in out.stdout


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
