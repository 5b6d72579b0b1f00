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
from reslab.builder.schedule import (
    DELETE,
    INSERT,
    NARROW,
    Schedule,
    judgement_steps,
    run_epochs,
    signature,
    with_block,
)
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
    schedule = make_schedule(ResBuilderConfig(), epochs=84, steps_per_epoch=100, lr=0.1)  # a third searches
    assert (schedule.search_epochs, schedule.cycles, schedule.segments_per_cycle) == (28, 7, 4)
    assert schedule.ends == tuple(range(100, 2801, 100))  # segments counted in optimizer steps
    assert schedule.actions(0) == (INSERT,)  # nothing inserted yet, so nothing to delete
    assert schedule.actions(1) == schedule.actions(2) == (DELETE, INSERT)
    assert schedule.actions(3) == (DELETE, NARROW)  # a cycle ends with the width step
    assert schedule.actions(4) == (DELETE, INSERT)
    assert schedule.segment_ending_at(2800) == 27 and schedule.segment_ending_at(2801) is None
    assert schedule.last_search_epoch == 27  # the search ends with an epoch


def test_a_segment_lasts_as_long_as_the_layer_lasso_needs_to_judge_a_new_block() -> None:
    # A new block enters at gain 0.1; at lr 0.05 the proximal step takes 0.05 x 0.045 off its RMS gain per step.
    assert judgement_steps(ResBuilderConfig(), lr=0.05) == 45
    assert judgement_steps(ResBuilderConfig(layer_lasso=0.0), lr=0.05) == 1
    # The whole MNIST training set at batch 64 (845 steps per epoch), 12 epochs: 4 search epochs hold all
    # seven cycles, their segments ending inside epochs (epoch-long segments would have left one cycle).
    big = make_schedule(ResBuilderConfig(), epochs=12, steps_per_epoch=845, lr=0.05)
    assert (big.cycles, len(big.ends), big.ends[-1]) == (7, 28, 4 * 845)
    assert any(end % 845 for end in big.ends)
    # 1,080 images at batch 64 (17 steps per epoch), 45 epochs: 255 search steps hold one cycle of 45-step
    # segments, so it runs one, with segments as long as the search allows.
    small = make_schedule(ResBuilderConfig(), epochs=45, steps_per_epoch=17, lr=0.05)
    assert (small.cycles, small.ends) == (1, (63, 127, 191, 255))


def test_short_runs_get_fewer_cycles_and_too_short_ones_an_error() -> None:
    assert make_schedule(ResBuilderConfig(), epochs=60, steps_per_epoch=10, lr=0.1).cycles == 2  # 200 steps
    # 12 epochs search for exactly 4 (a third of 12 is 3.9999999999999996 in floating point)
    tiny = make_schedule(ResBuilderConfig(), epochs=12, steps_per_epoch=6, lr=0.1)
    assert (tiny.search_epochs, tiny.cycles, tiny.ends) == (4, 1, (6, 12, 18, 24))
    with pytest.raises(ResBuilderConfigError, match="train for at least 3 epochs"):
        make_schedule(ResBuilderConfig(), epochs=2, steps_per_epoch=6, lr=0.1)


def test_a_schedule_stored_in_epochs_moves_to_steps() -> None:
    """Checkpoints written before segments were counted in steps store epoch indices; a resumed run ends
    those segments with the last step of their epochs, as before."""
    old = Schedule(search_epochs=4, cycles=1, segments_per_cycle=4, ends=(0, 1, 2, 3))
    new = old.in_steps(17)
    assert (new.ends, new.steps_per_epoch, new.last_search_epoch) == ((17, 34, 51, 68), 17, 3)
    assert new.in_steps(5) == new


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
    assert make_schedule(ResBuilderConfig(), run_epochs(30, 1 / 3), 17, 0.05).search_epochs == 15


def test_reslab_build_runs_the_search_plus_the_default_epochs_unless_told(tmp_path: Path) -> None:
    assert build_config(None, ["data.name=digits"]).train.epochs == 15  # 5 of search, then the default 10
    assert build_config(None, ["data.name=digits", "resbuilder.search_fraction=0.5"]).train.epochs == 20
    assert build_config(None, ["data.name=digits", "train.epochs=7"]).train.epochs == 7
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {name: digits}\ntrain: {epochs: 9}\n")
    config = build_config(recipe, [])
    assert config.train.epochs == 9 and config.name == "digits_resbuilder" and "resbuilder" in config.plugins
