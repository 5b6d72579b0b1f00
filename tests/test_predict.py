"""The README's transfer-learning recipe, run as written (tiny settings appended), and ``reslab predict``: any
image size, grey or colour, folders searched recursively, a bad file reported in its own row."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.io import encode_jpeg, encode_png

from reslab import cli
from reslab.io import read_preprocess

README = Path(__file__).resolve().parents[1] / "README.md"
# Appended to the README's `reslab train`: a small network and images, two epochs, the unfreeze after one.
TINY = ["model.name=resnet18", "data.image_size=32", "train.epochs=2", "train.unfreeze_epoch=1",
        "train.batch_size=4", "train.progress=none", "output.tensorboard=false"]


def recipe_commands() -> list[list[str]]:
    """The `reslab` commands of the README's transfer-learning section, split as a shell would."""
    section = README.read_text().split("## Transfer learning", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)[1].replace("\\\n", " ")
    return [shlex.split(line) for line in block.splitlines() if line.startswith("reslab ")]


def image(colour: int, h: int, w: int, seed: int, channels: int = 3) -> torch.Tensor:
    """A noisy image dominated by one colour channel (the class), uint8 (C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 90, (channels, h, w), generator=g, dtype=torch.uint8)
    if channels == 3:
        x[colour] += 160
    return x


def write_photos(root: Path) -> None:
    for c, name in enumerate(["bluebird", "redfox"]):
        folder = root / "photos" / name
        folder.mkdir(parents=True)
        for i in range(10):
            picture = image(2 if c == 0 else 0, 40 + i, 48, seed=10 * c + i)
            (folder / f"{i}.png").write_bytes(encode_png(picture).numpy())
    new = root / "new_photos"
    (new / "garden" / "deep").mkdir(parents=True)
    (new / "red.png").write_bytes(encode_png(image(0, 64, 50, seed=99)).numpy())
    (new / "garden" / "deep" / "blue.jpg").write_bytes(encode_jpeg(image(2, 33, 90, seed=98)).numpy())
    (new / "garden" / "grey.png").write_bytes(encode_png(image(0, 20, 20, seed=97, channels=1)).numpy())
    (new / "garden" / "broken.png").write_bytes(b"\x89PNG this is not an image")
    (new / "notes.txt").write_text("not an image, not listed")


@pytest.mark.slow
def test_the_readme_recipe_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_photos(tmp_path)
    # The README downloads torchvision's weights; here an untrained torchvision ResNet-18 takes their place.
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet50.pth")
    train, predict = recipe_commands()
    assert train[:2] == ["reslab", "train"] and predict[:2] == ["reslab", "predict"]
    assert cli.main(train[1:] + [x for s in TINY for x in ("--set", s)]) == 0
    assert "init_from resnet50.pth: loaded 120 of 122 tensors; new classifier (1000 classes in the file, 2 here)" \
        in capsys.readouterr().out
    run = tmp_path / "runs" / "pets"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["state"].split(":")[0] for e in events if e["kind"] == "freeze"] == ["frozen until epoch 1",
                                                                                 "unfrozen at epoch 1"]
    record = read_preprocess(run / "model.safetensors")
    assert record["input_size"] == [3, 32, 32] and record["class_names"] == ["bluebird", "redfox"]
    assert record["resize"] == "shorter_side_center_crop" and len(record["mean"]) == 3

    assert cli.main(predict[1:]) == 0
    out = capsys.readouterr().out
    with open(tmp_path / "preds.csv") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["red.png", "broken.png", "grey.png", "blue.jpg"]
    broken, good = rows[1], [rows[0], *rows[2:]]
    assert broken["error"].startswith("cannot decode image") and broken["class_1"] == ""
    for row in good:
        assert row["error"] == "" and {row["class_1"], row["class_2"]} == {"bluebird", "redfox"}
        assert 1.0 >= float(row["prob_1"]) >= float(row["prob_2"]) >= 0.0
    assert "broken.png: error: cannot decode image" in out

    # reslab eval follows the model's record: other classes are refused, other image sizes are resized.
    for name, colour in (("bluebird", 2), ("redfox", 0), ("zebra", 1)):
        (tmp_path / "other" / name).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "other" / name / f"{i}.png").write_bytes(encode_png(image(colour, 64, 64, seed=i)).numpy())
    assert cli.main(["eval", str(run / "model.safetensors"), "--set", "data.data_dir=other"]) == 1
    assert "the model was trained on the classes bluebird, redfox; imagefolder has bluebird, redfox, zebra" \
        in capsys.readouterr().err
    shutil.rmtree(tmp_path / "other" / "zebra")
    assert cli.main(["eval", str(run / "model.safetensors"), "--set", "data.data_dir=other",
                     "--set", "data.image_size=null", "--out", "ev"]) == 0
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["images"] == 2  # the 20 % test part of 10


def test_predict_json_and_a_model_without_a_record(tmp_path, capsys):
    import reslab

    model = reslab.create_model("resnet8", num_classes=3, in_chans=1)
    reslab.save(model, tmp_path / "bare.safetensors")
    assert cli.main(["predict", str(tmp_path / "bare.safetensors"), str(tmp_path)]) == 1
    assert "no preprocessing record" in capsys.readouterr().err
    record = {"input_size": [1, 12, 12], "mean": [0.4], "std": [0.2], "class_names": ["a", "b", "c"]}
    reslab.save(model, tmp_path / "m.safetensors", preprocess=record)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x.png").write_bytes(encode_png(image(1, 30, 17, seed=1)).numpy())  # colour -> grey
    out = tmp_path / "p.json"
    assert cli.main(["predict", str(tmp_path / "m.safetensors"), str(tmp_path / "img"),
                     str(tmp_path / "missing.png"), "--topk", "3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows[0]["path"].endswith("x.png") and sorted(rows[0]["classes"]) == ["a", "b", "c"]
    assert abs(sum(rows[0]["probs"]) - 1.0) < 1e-4 and rows[0]["error"] is None
    assert rows[1]["path"].endswith("missing.png") and rows[1]["error"].startswith("cannot decode image")
