"""The ``reslab`` command: train end to end, eval, models, errors, and the optional-section registry."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types

import pytest
import yaml

from reslab import cli
from reslab.schema import at_least, option
from reslab.train import Hook, plugins
from reslab.train import config as config_module

TINY = [
    "--set",
    "train.epochs=2",
    "--set",
    "train.batch_size=64",
    "--set",
    "data.train_per_class=30",
    "--set",
    "train.progress=plain",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny ``reslab train`` run shared by the tests that read its files."""
    out = tmp_path_factory.mktemp("runs")
    capture = pytest.MonkeyPatch()
    lines = []
    capture.setattr(sys, "stdout", types.SimpleNamespace(write=lines.append, flush=lambda: None, isatty=lambda: False))
    try:
        code = cli.main(["train", *TINY, "--out", str(out)])
    finally:
        capture.undo()
    return code, out / "digits_resnet8", "".join(lines)


def test_train_writes_every_run_file(trained_run):
    code, run, stdout = trained_run
    assert code == 0
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "events.jsonl",
        "last.safetensors",
        "best.safetensors",
        "model.safetensors",
        "summary.json",
        "report.md",
        "loss.png",
        "accuracy.png",
        "lr.png",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert f"report: {run / 'report.md'}" in stdout
    assert "epoch 1/2 step 1/4 epoch eta" in stdout  # plain progress lines when stdout is not a terminal

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1]
    for key in ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "images_per_s", "epoch_time_s", "time_s"):
        assert isinstance(metrics[-1][key], float), key
    summary = json.loads((run / "summary.json").read_text())
    for key in ("test_accuracy", "best_val_accuracy", "params", "macs", "epochs", "train_images_per_s", "wall_time_s"):
        assert summary[key] is not None, key
    assert summary["epochs"] == 2 and 0.2 < summary["test_accuracy"] <= 1.0
    assert summary["best_val_accuracy"] == max(m["val_acc"] for m in metrics)
    report = (run / "report.md").read_text()
    assert f"{100 * summary['test_accuracy']:.2f} %" in report and "![loss](loss.png)" in report
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    resolved = (run / "config.yaml").read_text()
    assert "epochs: 2" in resolved and "train_per_class: 30" in resolved


def test_tensorboard_holds_the_epoch_scalars(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run, _ = trained_run
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"train_loss", "val_acc", "lr"} <= set(events.Tags()["scalars"])
    # Epoch metrics sit at their epoch's last global step (4 steps per epoch here), beside the epoch (from 1).
    assert [s.step for s in events.Scalars("train_loss")] == [4, 8]
    assert [s.value for s in events.Scalars("epoch")] == [1, 2]


def test_train_again_without_resume_is_refused(trained_run, capsys):
    _, run, _ = trained_run
    assert cli.main(["train", *TINY, "--out", str(run.parent)]) == 1
    assert "already holds a run; resume it with --resume" in capsys.readouterr().err


def test_eval_reports_accuracy_per_class_and_confusion(trained_run, capsys):
    _, run, _ = trained_run
    out = run / "eval_final"
    assert cli.main(["eval", str(run / "model.safetensors"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "eval.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    # The final model on the same test split gives the accuracy the run reported.
    assert result["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert result["images"] == summary["test_images"]
    assert len(result["per_class_accuracy"]) == 10 and sum(map(sum, result["confusion_matrix"])) == result["images"]
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert f"accuracy {100 * result['accuracy']:.2f} %" in printed

    assert cli.main(["eval", str(run / "best.safetensors"), "--split", "val"]) == 0
    assert (run / "eval_digits_val" / "eval.json").is_file()


def test_eval_refuses_data_the_model_does_not_fit(tmp_path, capsys):
    import reslab
    import reslab.io

    reslab.io.save(reslab.create_model("resnet8", num_classes=5, in_chans=3), tmp_path / "rgb.safetensors")
    assert cli.main(["eval", str(tmp_path / "rgb.safetensors"), "--data", "digits"]) == 1
    assert (
        "holds a model for 3-channel images and 5 classes, but digits has 1 channel(s) and 10 classes"
        in capsys.readouterr().err
    )


def test_eval_of_a_missing_file_is_one_clear_error(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path / "nope.safetensors")]) == 1
    assert "nope.safetensors: no such file" in capsys.readouterr().err


def test_models_lists_the_zoo_with_costs(capsys, monkeypatch):
    import reslab.profile

    # Listing builds nothing; each family shows its own input and classes.
    monkeypatch.setattr(reslab.profile, "profile", lambda *a: pytest.fail("profiled without --profile"))
    assert cli.main(["models"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:-1]}
    assert len(rows) == 66 and rows["resnet50"] == ["3x224x224", "1000"] and rows["wrn28_10"] == ["3x32x32", "10"]
    monkeypatch.undo()
    # --profile measures each at its natural size: resnet50 is torchvision's 25.56 M parameters, 4.09 G MACs.
    assert cli.main(["models", "resnet50", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "3x224x224" in out and "25.56 M" in out and "4.09 G" in out
    assert cli.main(["models", "resnet2*", "--profile", "--input-size", "1,28,28", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "269.43 k" in out and "1x28x28" in out
    assert cli.main(["models", "nothing*"]) == 1
    with pytest.raises(SystemExit):
        cli.main(["models", "--input-size", "3,32"])


def test_config_errors_exit_with_one_line(capsys, tmp_path):
    assert cli.main(["train", "--set", "optim.lr=-1", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "reslab train: error: --set: optim.lr: must be > 0.0; got -1.0"
    assert cli.main(["train", "--config", str(tmp_path / "none.yaml")]) == 1
    assert "none.yaml: cannot read the config" in capsys.readouterr().err


def test_print_and_help_config(capsys):
    assert cli.main(["train", "--set", "train.epochs=3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["epochs"] == 3 and "resbuilder" not in printed  # a plug-in section only when given
    assert cli.main(["train", "--set", "resbuilder.cycles=3", "--set", "analysis.every=2", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["resbuilder"]["cycles"] == 3 and printed["resbuilder"]["layer_lasso"] == 0.045  # defaults
    assert printed["analysis"] == {"track_depth": True, "probe_images": 32, "every": 2}
    assert cli.main(["train", "--help-config"]) == 0
    listing = capsys.readouterr().out
    assert "  precision: auto  # auto: bf16 where" in listing
    for section, key in [("resbuilder", "  layer_lasso: 0.045  # layer LASSO"), ("analysis", "  probe_images: 32  #"),
                         ("distill", "  temperature: 4.0  #")]:
        assert f"\n{section}:" in listing and key in listing.split(f"\n{section}:")[1]


@pytest.mark.parametrize(("override", "message"), [
    ("resbuilder.layer_lass=1", "resbuilder.layer_lass: unknown key (allowed: cycles, "),
    ("analysis.probe_images=many", "analysis.probe_images: expected an integer, got str 'many'"),
])
def test_a_bad_plugin_key_is_one_clear_error(override, message, capsys):
    assert cli.main(["train", "--print-config", "--set", override]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"reslab train: error: --set: {message}")
    assert captured.err.count("\n") == 1


@dataclasses.dataclass
class PluginSettings:
    value: int = option(0, at_least(0), "what the hook logs")


class CountingHook(Hook):
    def __init__(self, settings):
        self.settings, self.epochs = settings, 0

    def on_epoch_end(self, trainer, epoch, metrics):
        self.epochs += 1
        metrics["plugin_value"] = self.settings.value


def test_plugin_sections_are_declared_by_their_package(tmp_path, monkeypatch):
    made = []
    plugin = types.ModuleType("fake_plugin")

    def make_hook(settings, config):
        made.append(CountingHook(settings))
        return made[-1]

    plugin.SECTION, plugin.make_hook = PluginSettings, make_hook
    monkeypatch.setitem(sys.modules, "fake_plugin", plugin)
    monkeypatch.setitem(plugins.PLUGIN_SECTIONS, "plugin", "fake_plugin")
    config_path = tmp_path / "c.yaml"
    config_path.write_text(
        "plugin: {value: 7}\ntrain: {epochs: 1, batch_size: 64, progress: none}\n"
        "data: {train_per_class: 30}\noutput: {tensorboard: false}\n"
    )
    assert cli.main(["train", "--config", str(config_path), "--out", str(tmp_path)]) == 0
    assert made[0].epochs == 1
    metrics = json.loads((tmp_path / "digits_resnet8" / "metrics.jsonl").read_text())
    assert metrics["plugin_value"] == 7
    with pytest.raises(config_module.ConfigError, match=r"plugin\.value: must be >= 0; got -1"):
        config_module.load_config(config_path, ["plugin.value=-1"])

    monkeypatch.setitem(plugins.PLUGIN_SECTIONS, "broken", "no_such_reslab_module")
    config_path.write_text("broken: {}\n")
    with pytest.raises(config_module.ConfigError, match="broken: this section needs no_such_reslab_module"):
        config_module.load_config(config_path)


def test_resume_a_run_folder_to_extend_it(tmp_path, capsys):
    settings = ["--set", "train.batch_size=64", "--set", "data.train_per_class=30", "--set", "train.progress=none"]
    assert cli.main(["train", *settings, "--set", "train.epochs=1", "--out", str(tmp_path)]) == 0
    run = tmp_path / "digits_resnet8"
    # The run's own config.yaml is the base; only keys such as train.epochs may change.
    assert cli.main(["train", "--resume", str(run), "--set", "train.epochs=2"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2
    assert cli.main(["train", "--resume", str(run), "--set", "optim.lr=0.5"]) == 1
    assert "--resume: optim.lr is 0.5 but the run" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "nothing")]) == 1
    assert "no config.yaml there" in capsys.readouterr().err


def test_help_and_parsers_do_not_import_torch():
    # `reslab --help` answers at once: the commands import torch when they run, not when the parser is built.
    code = (
        "import sys, contextlib, io\n"
        "from reslab import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    cli.main(['--help'])\n"
        "assert 'train' in out.getvalue()\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'numpy', 'matplotlib') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_lazy_package_attributes_are_the_exported_objects():
    import reslab
    import reslab.build  # the submodule of the same name must not replace the function

    assert callable(reslab.build) and reslab.build.__module__ == "reslab.build"
    assert reslab.create_model("resnet8", num_classes=3).spec.num_classes == 3
    with pytest.raises(AttributeError, match="no_such_name"):
        reslab.no_such_name  # noqa: B018
