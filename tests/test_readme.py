"""Every ``reslab ...`` command line in the README's code blocks runs as written, in order, on tiny settings
appended to it (one epoch on a few images per class), so the README cannot drift from the CLI.

``runs/<name>`` stands for the run the first command made and ``photos/`` is a small folder of digit images
written by the test; ``torchrun`` lines are left to tests/test_train_distributed.py and
tests/test_train_multinode.py (they start several processes). Lines in ``EXEMPT`` need what a test cannot
have here; each says why and which test covers the command instead.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from reslab import cli
from reslab.zoo import model_spec

README = Path(__file__).parents[1] / "README.md"
REPO = README.parent
SHARED_DATA = REPO.parent / "shared" / "data"

SMALL = ["train.epochs=1", "data.train_per_class=10", "data.test_per_class=10", "train.progress=none",
         "output.tensorboard=false", "train.batch_size=32"]
STUDIES = ["--seeds", "0", "--images", "40", "--batch-size", "40", "--samples", "2", "--path-images", "4",
           "--path-samples", "2", "--train-images", "60", "--penalty-epochs", "1", "--finetune-epochs", "1"]


EXEMPT = {
    "--set name=pets": "fine-tunes torchvision's downloaded ImageNet weights on the user's photos "
    "(tests/test_init_from.py covers init_from, freezing and the new head offline)",
    "runs/pets/": "predicts with the pets run above (reslab predict itself runs here on runs/<name>)",
}


def readme_commands() -> list[str]:
    """The README's ``reslab`` lines, continuation lines joined, exempt ones left out."""
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", README.read_text(), re.S)
    lines = [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith("reslab ") and not any(key in line for key in EXEMPT)]


def tiny(argv: list[str]) -> list[str]:
    """The README's arguments with settings that make the command take seconds."""
    sets = [a for kv in SMALL for a in ("--set", kv)]
    if argv[0] == "train" and "--resume" in argv:
        return [*argv, "--set", "train.epochs=2", "--set", "train.progress=none"]  # one more epoch
    if argv[0] == "build":  # the shortest ResBuilder search: one insertion, 2 of 6 epochs
        return [*argv, *sets, "--set", "train.epochs=6", "--set", "resbuilder.insertions_per_cycle=1"]
    if argv[0] == "train" and "--help-config" not in argv:
        return [*argv, *sets]
    if argv[:2] == ["analyze", "compare"]:
        return [*argv, *STUDIES, *sets]
    return argv


def test_readme_shows_the_main_commands():
    commands = readme_commands()
    for start in ("reslab train", "reslab eval", "reslab models", "reslab build", "reslab analyze compare"):
        assert any(c.startswith(start) for c in commands), start


def test_every_readme_command_runs_as_written(tmp_path, monkeypatch, capsys):
    if not (SHARED_DATA / "MNIST").is_dir():
        pytest.skip(f"the README's MNIST command needs {SHARED_DATA}/MNIST")
    # A fresh checkout's view: configs/ beside the working folder, ../shared/data next to it.
    work = tmp_path / "reslab"
    work.mkdir()
    (work / "configs").symlink_to(REPO / "configs")
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent)
    (work / "found.json").write_text(model_spec("resnet8").with_classes(10).to_json())
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(3):
        (work / "photos").mkdir(exist_ok=True)
        Image.fromarray((digits.images[i] * 16).astype("uint8")).save(work / "photos" / f"{i}.png")
    monkeypatch.chdir(work)
    ran = []
    for line in readme_commands():
        argv = shlex.split(line.replace("<name>", "digits_resnet8"), comments=True)[1:]
        code = cli.main(tiny(argv))
        assert code == 0, f"README command failed: {line}\n{capsys.readouterr().err}"
        ran.append(argv[0])
    assert ran.count("train") >= 5 and {"eval", "models", "build", "analyze"} <= set(ran)


def test_make_demo_runs_again(tmp_path, monkeypatch):
    # The demo target's own command, run twice in the same folder (tiny settings): the second replaces the first.
    recipe = re.search(r"^demo:.*\n\t(.+)$", (REPO / "Makefile").read_text(), re.M)[1]
    argv = shlex.split(recipe)[1:]
    assert argv[0] == "train"
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert cli.main(tiny(argv)) == 0
    assert (tmp_path / "runs" / "digits_resnet8" / "summary.json").is_file()
    assert len((tmp_path / "runs" / "digits_resnet8" / "metrics.jsonl").read_text().splitlines()) == 1
