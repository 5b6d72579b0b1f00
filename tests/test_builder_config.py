"""ResBuilder's settings (one default configuration, clear errors) and its schedule."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import reslab
from reslab.builder import (
    ResBuilderConfig,
    ResBuilderConfigError,
    choose_insertion,
    insertion_points,
    make_schedule,
)
from reslab.builder.cli import build_config
from reslab.builder.schedule import DELETE, INSERT, NARROW, run_epochs, signature, with_block
from reslab.train.config import Config, ConfigError


def test_defaults_come_from_the_paper() -> None:
    cfg = Config.from_dict({"resbuilder": {}}).plugins["resbuilder"]
    assert cfg == ResBuilderConfig()
    assert (cfg.cycles, cfg.insertions_per_cycle, cfg.insert_attempts) == (7, 3, 10)
    assert (cfg.delete_threshold, cfg.skip_delete_gain, cfg.width_threshold) == (1e-2, 0.015, 1e-2)


def test_overrides_are_typed() -> None:
    cfg = Config.from_dict({"resbuilder": {"cycles": 2, "layer_lasso": "1e-3", "width_lasso": 0}}).plugins["resbuilder"]
    assert (cfg.cycles, cfg.layer_lasso, cfg.width_lasso) == (2, 1e-3, 0.0)
    assert isinstance(cfg.width_lasso, float)


@pytest.mark.parametrize(("section", "message"), [
    ({"cycle": 2}, r"resbuilder\.cycle: unknown key \(allowed: cycles, "),
    ({"cycles": 2.5}, r"resbuilder\.cycles: expected an integer, got float 2\.5"),
    ({"cycles": 0}, r"resbuilder\.cycles: must be >= 1; got 0"),
    ({"insert_gain": True}, r"resbuilder\.insert_gain: expected a number, got bool True"),
    ({"layer_lasso": "lots"}, r"resbuilder\.layer_lasso: expected a number, got str 'lots'"),
    ({"finetune_restart": "yes"}, r"resbuilder\.finetune_restart: expected true or false, got str 'yes'"),
    ({"expand_widths": 1}, r"resbuilder\.expand_widths: expected true or false, got int 1"),
    ({"insert_width": 0}, r"resbuilder\.insert_width: must be in \(0\.0, 1\.0\]; got 0\.0"),
    ({"finetune_reinit": -0.1}, r"resbuilder\.finetune_reinit: must be in \[0\.0, 1\.0\]; got -0\.1"),
    ({"search_fraction": 1.5}, r"resbuilder\.search_fraction: must be in \(0\.0, 1\.0\]; got 1\.5"),
    ({"delete_threshold": -1}, r"resbuilder\.delete_threshold: must be >= 0\.0; got -1\.0"),
    ({"layer_lasso_loss_power": -0.3}, r"resbuilder\.layer_lasso_loss_power: must be >= 0\.0; got -0\.3"),
    ([1, 2], r"resbuilder: must be a mapping of settings"),
])
def test_bad_settings_name_the_key(section, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{message}"):
        Config.from_dict({"resbuilder": section})


# -- schedule -------------------------------------------------------------------------------------------
def test_default_schedule_has_the_papers_seven_cycles_when_the_run_is_long_enough() -> None:
    schedule = make_schedule(ResBuilderConfig(), epochs=84)  # a third of the epochs search
    assert (schedule.search_epochs, schedule.cycles, schedule.segments_per_cycle) == (28, 7, 4)
    assert len(schedule.ends) == 28 and schedule.ends[-1] == 27
    assert all(a < b for a, b in zip(schedule.ends, schedule.ends[1:], strict=False))
    assert schedule.actions(0) == (INSERT,)  # nothing inserted yet, so nothing to delete
    assert schedule.actions(1) == schedule.actions(2) == (DELETE, INSERT)
    assert schedule.actions(3) == (DELETE, NARROW)  # a cycle ends with the width step
    assert schedule.actions(4) == (DELETE, INSERT)
    assert schedule.segment_ending_at(27) == 27 and schedule.segment_ending_at(28) is None


def test_short_runs_get_fewer_cycles_and_too_short_ones_an_error() -> None:
    schedule = make_schedule(ResBuilderConfig(), epochs=21)  # 7 search epochs hold one 4-segment cycle
    assert (schedule.cycles, schedule.ends) == (1, (0, 2, 4, 6))
    assert make_schedule(ResBuilderConfig(), epochs=60).cycles == 5  # 20 search epochs: 5 cycles
    # 12 epochs search for exactly 4 (a third of 12 is 3.9999999999999996 in floating point)
    assert make_schedule(ResBuilderConfig(), epochs=12).search_epochs == 4
    with pytest.raises(ResBuilderConfigError, match="train for at least 12 epochs"):
        make_schedule(ResBuilderConfig(), epochs=11)


# -- insertion strategy -----------------------------------------------------------------------------------
def test_insertion_points_sit_between_blocks_of_the_stage() -> None:
    spec = reslab.make_spec("resnet20")
    assert insertion_points(spec, 0) == [0, 1, 2, 3]  # stage 1 starts with an identity block
    assert insertion_points(spec, 1) == [1, 2, 3]  # not before the downsampling block


def test_insertion_avoids_architectures_already_trained() -> None:
    spec = reslab.make_spec("resnet8")
    options = {s: signature(with_block(spec, s, insertion_points(spec, s)[-1])) for s in range(3)}
    seen = {options[0], options[1]}
    for seed in range(5):
        stage, index = choose_insertion(spec, random.Random(seed), attempts=40, seen=seen)
        assert (stage, index) == (2, 1)
    # With one attempt the first draw stands, seen or not.
    draws = {choose_insertion(spec, random.Random(seed), attempts=1, seen=seen)[0] for seed in range(30)}
    assert draws == {0, 1, 2}


# -- run length ---------------------------------------------------------------------------------------------
def test_a_run_gives_the_found_network_the_epochs_of_a_fixed_one() -> None:
    assert run_epochs(30, 1 / 3) == 45 and run_epochs(10, 1 / 3) == 15  # a third searches, 30 (10) train it
    assert run_epochs(30, 0.5) == 60
    assert run_epochs(30, 1.0) == 30  # all search: the searched network is the result
    assert make_schedule(ResBuilderConfig(), run_epochs(30, 1 / 3)).search_epochs == 15


def test_reslab_build_runs_the_search_plus_the_default_epochs_unless_told(tmp_path: Path) -> None:
    assert build_config(None, ["data.name=digits"]).train.epochs == 15  # 5 of search, then the default 10
    assert build_config(None, ["data.name=digits", "resbuilder.search_fraction=0.5"]).train.epochs == 20
    assert build_config(None, ["data.name=digits", "train.epochs=7"]).train.epochs == 7
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {name: digits}\ntrain: {epochs: 9}\n")
    config = build_config(recipe, [])
    assert config.train.epochs == 9 and config.name == "digits_resbuilder" and "resbuilder" in config.plugins
