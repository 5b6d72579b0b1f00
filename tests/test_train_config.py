"""The training config: defaults, one clear error per bad key/type/value, --set overrides, plug-in sections."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reslab.builder import ResBuilderConfig
from reslab.train.config import (
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    parse_override,
)


def test_defaults_are_the_digits_quick_start():
    config = load_config()
    assert config.data.name == "digits"
    assert config.model.name == "resnet8"
    assert config.run_name == "digits_resnet8"
    assert str(config.run_dir) == "runs/digits_resnet8"
    assert config.plugins == {}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"optim": {"lrr": 0.1}}, "optim.lrr: unknown key (allowed: name, lr, momentum"),
        ({"trian": {}}, "trian: unknown section (allowed: name, seed, data, model"),
        ({"data": {"augment": {"hflipp": True}}}, "data.augment.hflipp: unknown key (allowed: crop_padding, "),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected an integer, got str 'ten'"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected an integer, got float 2.5"),
        ({"train": {"compile": "yes"}}, "train.compile: expected true or false, got str 'yes'"),
        ({"optim": {"lr": "fast"}}, "optim.lr: expected a number, got str 'fast'"),
        ({"optim": {"lr": 0}}, "optim.lr: must be > 0.0; got 0.0"),
        ({"train": {"precision": "fp8"}}, "train.precision: must be one of auto, fp32, bf16, fp16; got 'fp8'"),
        ({"schedule": {"name": "linear"}}, "schedule.name: must be one of constant, step, multistep, cosine"),
        ({"schedule": {"milestones": [60, 30]}}, "schedule.milestones: must be increasing positive epochs"),
        ({"schedule": {"name": "multistep"}}, "schedule.milestones: the multistep schedule needs"),
        ({"schedule": {"milestones": ["a"]}}, "schedule.milestones[0]: expected an integer"),
        ({"model": {"name": "rezznet8"}}, "model.name: unknown model 'rezznet8'"),
        ({"model": {"name": "resnet9"}}, "model.name: CIFAR ResNet depth must be 6n+2"),
        ({"model": {"name": "resnet8", "spec": "x.json"}}, "model: give exactly one of model.name"),
        ({"model": {"final_survival": 0}}, "model.final_survival: must be in (0.0, 1.0]; got 0.0"),
        ({"optim": {"betas": [0.9]}}, "optim.betas: must be two numbers in [0, 1)"),
        ({"train": {"precision": "fp16", "device": "cpu"}}, "train.precision: fp16 (AMP with a gradient scaler)"),
        ({"data": {"name": "imagenet"}}, "data.name: must be one of digits"),
        ({"data": {"augment": {"cutout": -1}}}, "data.augment.cutout: must be >= 0; got -1"),
        ({"name": "a/b"}, "name: must be a folder name"),
        ({"resbuilder": [1, 2]}, "resbuilder: must be a mapping"),
        ({"train": 3}, "train: must be a mapping of settings, got int 3"),
    ],
)
def test_bad_config_gives_one_error_naming_the_key(raw, expected):
    with pytest.raises(ConfigError) as info:
        Config.from_dict(raw)
    assert expected in str(info.value)


def test_error_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: -1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: optim\.lr: must be > 0"):
        load_config(path)
    path.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the config"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_file_values_and_float_spellings(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "name: exp1\nseed: 3\noptim: {name: adamw, lr: 1e-3, weight_decay: 0.05}\n"
        "schedule: {name: multistep, milestones: [2, 4], warmup_epochs: 0.5}\n"
        "train: {epochs: 6, grad_clip: 1, channels_last: false}\n"
        "data: {name: digits, augment: {crop_padding: 1}}\n"
    )
    config = load_config(path)
    assert config.run_name == "exp1" and config.seed == 3
    assert config.optim.lr == pytest.approx(1e-3) and isinstance(config.optim.lr, float)  # YAML reads 1e-3 as str
    assert config.train.grad_clip == 1.0 and isinstance(config.train.grad_clip, float)
    assert config.schedule.milestones == [2, 4]
    assert config.train.channels_last is False
    assert config.data.augment.crop_padding == 1


def test_parse_override_reads_yaml_scalars_and_lists():
    assert parse_override("optim.lr=0.05") == (["optim", "lr"], 0.05)
    assert parse_override("schedule.milestones=[30, 60]") == (["schedule", "milestones"], [30, 60])
    assert parse_override("train.compile=true") == (["train", "compile"], True)
    assert parse_override("train.grad_clip=null") == (["train", "grad_clip"], None)
    assert parse_override("name=my run") == (["name"], "my run")
    assert parse_override("data.data_dir=") == (["data", "data_dir"], None)
    for bad in ("optim.lr", "=3", "optim..lr=1"):
        with pytest.raises(ConfigError, match="--set"):
            parse_override(bad)


def test_overrides_are_validated_like_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train: {epochs: 5}\n")
    config = load_config(path, ["train.epochs=7", "optim.lr=1e-2", "data.augment.hflip=true"])
    assert config.train.epochs == 7 and config.optim.lr == 0.01 and config.data.augment.hflip
    with pytest.raises(ConfigError, match=r"run\.yaml with --set: train\.epohcs: unknown key"):
        load_config(path, ["train.epohcs=3"])
    with pytest.raises(ConfigError, match=r"train\.epochs: expected an integer, got str 'many'"):
        load_config(path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"--set train\.epochs\.x: train\.epochs is a value, not a section"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


def test_plugin_sections_are_typed_checked_and_round_trip():
    """The packages above the engine declare their sections; the loader checks them like its own."""
    raw = {"resbuilder": {"cycles": 2, "layer_lasso": "1e-3"}, "analysis": {}, "train": {"epochs": 3}}
    config = Config.from_dict(raw)
    assert config.plugins["resbuilder"] == ResBuilderConfig(cycles=2, layer_lasso=1e-3)
    assert config.plugins["analysis"].probe_images == 32 and "distill" not in config.plugins
    again = Config.from_dict(yaml.safe_load(config.to_yaml()))
    assert again == config
    assert again.to_dict()["resbuilder"]["width_lasso"] == 0.03  # defaults filled in
    bad = {
        "resbuilder.layer_lass=1": r"resbuilder\.layer_lass: unknown key \(allowed: cycles, ",
        "resbuilder.cycles=2.5": r"resbuilder\.cycles: expected an integer, got float 2\.5",
        "resbuilder.insert_width=0": r"resbuilder\.insert_width: must be in \(0\.0, 1\.0\]; got 0\.0",
        "analysis.every=often": r"analysis\.every: expected an integer, got str 'often'",
        "analysis.track_depth=1": r"analysis\.track_depth: expected true or false, got int 1",
        "distill.tau=2": r"distill\.tau: unknown key",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=rf"^--set: {message}"):
            load_config(None, [override])
    with pytest.raises(ConfigError, match=r"^x\.yaml: resbuilder: must be a mapping of settings, got list"):
        Config.from_dict({"resbuilder": [1, 2]}, where="x.yaml")


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_the_default_config_is_configs_digits_yaml():
    from_file = load_config(CONFIGS / "digits.yaml")
    assert from_file == load_config().replace(name="digits_resnet8")


@pytest.mark.parametrize(
    ("name", "run_name", "model"),
    [
        ("digits.yaml", "digits_resnet8", "resnet8"),
        ("mnist_resnet.yaml", "mnist_resnet20", "resnet20"),
        ("cifar10_resnet20.yaml", "cifar10_resnet20", "resnet20"),
        ("cifar10_resnet20_fast.yaml", "cifar10_resnet20_fast", "resnet20"),
    ],
)
def test_recipes_are_valid(name, run_name, model):
    config = load_config(CONFIGS / name)
    assert (config.run_name, config.model.name) == (run_name, model)


def test_the_cifar10_recipe_carries_he_et_al_s_settings_and_reads_the_offline_folder():
    """64k iterations at batch 128 on 50k images = 164 epochs; lr 0.1 divided by 10 at 32k and 48k iterations
    (epochs 82 and 123); weight decay 1e-4 on every weight; no validation split; the shared image folder."""
    config = load_config(CONFIGS / "cifar10_resnet20.yaml")
    assert (config.train.epochs, config.train.batch_size, config.optim.lr) == (164, 128, 0.1)
    assert (config.schedule.name, config.schedule.milestones, config.schedule.gamma) == ("multistep", [82, 123], 0.1)
    assert (config.optim.weight_decay, config.optim.no_decay_bn_bias, config.optim.nesterov) == (1e-4, False, False)
    assert config.data.val_fraction == 0 and not config.data.download
    assert (config.data.name, config.data.data_dir) == ("imagefolder", "data/cifar10-jpg")  # make cifar10


def test_set_model_spec_replaces_the_default_name(tmp_path):
    import reslab
    from reslab.train.config import load_config

    path = tmp_path / "found.json"
    reslab.model_spec("resnet14").save(path)
    config = load_config(None, [f"model.spec={path}"])
    assert config.model.name is None and config.model.spec == str(path)
    with pytest.raises(ConfigError, match="give exactly one of model.name"):
        load_config(None, [f"model.spec={path}", "model.name=resnet8"])
