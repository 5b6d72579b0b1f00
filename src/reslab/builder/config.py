"""ResBuilder's settings: one default configuration, used unchanged on every dataset.

The paper (Burghoff et al., arXiv 2308.08504) tuned its settings once on CIFAR-10 and kept them for every
other dataset; so does this one. Each default names its source: the paper and the authors' public code, or,
where one continuous PyTorch training run needs a different form, the reason it differs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..train.config import ConfigError

# YAML 1.1 reads 1e-3 (no dot) as a string; such a value is plainly a number.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ResBuilderConfigError(ConfigError):
    """A bad ``resbuilder`` setting; the message names the key (``resbuilder.cycles``) and the value."""


@dataclass(frozen=True)
class ResBuilderConfig:
    """The schedule, the penalties and the structural thresholds of ResBuilder.

    Schedule. The search phase (the first ``search_fraction`` of the run's epochs) is split into ``cycles``
    equal cycles; each cycle is ``insertions_per_cycle + 1`` equal segments. At the end of each segment blocks
    whose branch gain fell below ``delete_threshold`` are removed; between segments one block is inserted;
    at the end of each cycle channels below ``width_threshold`` are cut. The rest of the run is fine-tuning
    of the found architecture with no penalty and no structural change.
    """

    # Paper code: 7 MorphNet (width) steps, each after 3 layer-insertion steps (``number_morph_steps``,
    # ``number_layer_steps``). Fewer cycles are run when the search phase has fewer epochs than segments.
    cycles: int = 7
    insertions_per_cycle: int = 3
    # Ours: the paper trains every architecture for 20 epochs (28 trainings) and then retrains the final one;
    # one continuous run instead spends 3/4 of its epochs searching and 1/4 fine-tuning the result.
    search_fraction: float = 0.75
    # Ours: fine-tuning starts the learning-rate schedule again over its epochs. The paper retrains its final
    # architecture; continuing the run's schedule instead left fine-tuning at under 15 % of the base learning
    # rate (cosine), and the found networks 4 points below the same specs retrained (CIFAR-10 subset).
    finetune_restart: bool = True
    # Ours (the issue): a new block starts near the identity, its branch's last scale at 0.1, so the network's
    # function is barely disturbed; the paper initialises new layers afresh. Not at 0: a branch whose output
    # is zero passes no gradient to its convolutions, and on the CIFAR-10 subset no block inserted at 0 into
    # stage 2 or 3 ever grew past the layer LASSO; at 0.1 they learn from the first step.
    insert_gain: float = 0.1
    # Paper code: draw up to 10 insertion points to find an architecture not trained before.
    insert_attempts: int = 10
    # Layer LASSO strength: how far the penalty alone lowers a block's root-mean-square branch gain (its
    # final BN's gamma and beta, which start at 1 and 0) in one segment at the base learning rate, applied as
    # proximal steps (see ``penalties`` and ``ResBuilderHook.on_step_end``). The paper's 1e-8 is an L1 on raw
    # conv kernels under Adam, which moves each weight by about the learning rate per step whatever the
    # gradient; a per-step strength would make a 500-step CPU run and a 200,000-step GPU run differ 400-fold,
    # so ours is per segment. Set once on a CIFAR-10 subset (1,200 images, 30 epochs from ResNet-8): at 0.25
    # every inserted block died and the net shrank below ResNet-8; 0.02 to 0.1 all kept a few blocks.
    layer_lasso: float = 0.05
    # Paper code: a block goes when the mean absolute value of its weights is below 1e-3. Those were conv
    # kernels with Glorot initialisation (mean |w| about 0.07 for a 3x3x16x16 conv), so the threshold is about
    # 1.4 % of a fresh layer's scale; our gains start at 1, so the same relative threshold is 1e-2.
    delete_threshold: float = 1e-2
    # Paper code ("layer LASSO momentum"): no deletion after an insertion that raised validation accuracy by
    # more than 1.5 points, so a block that just helped is not judged before it has grown.
    skip_delete_gain: float = 0.015
    # Width group LASSO strength, in the same units: how far a channel of average FLOP cost moves toward zero
    # (the norm of its BN scale and shift and its conv rows) in one segment at the base learning rate; a
    # costlier channel moves further (MorphNet's FLOP weighting; its lambda is per raw FLOP, so it depends on
    # the input size, ours does not). Set once on the same CIFAR-10 subset: at 0.02 no channel was ever cut,
    # at 0.05 each cycle cut a few.
    width_lasso: float = 0.05
    # Paper code: MorphNet counts a channel alive when its BN scale exceeds 1e-2 (BN scales start at 1). Ours is
    # relative to the strongest channel of the group, since BN makes inner widths scale-free (``penalties``).
    width_threshold: float = 1e-2

    def __post_init__(self) -> None:
        _check(asdict(self), "resbuilder")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "resbuilder") -> ResBuilderConfig:
        """Settings from a config section; absent keys keep the defaults, unknown keys are errors."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ResBuilderConfigError(f"{where} must be a mapping of ResBuilder settings, got {d!r}")
        allowed = [f.name for f in fields(cls)]
        unknown = [k for k in d if k not in allowed]
        if unknown:
            raise ResBuilderConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: "
                                        f"{', '.join(allowed)}")
        values = {**asdict(cls()), **d}
        for key, value in d.items():
            if isinstance(_DEFAULTS[key], float) and isinstance(value, str) and _NUMBER.fullmatch(value):
                values[key] = float(value)
        _check(values, where)
        return cls(**{k: float(v) if isinstance(_DEFAULTS[k], float) else v for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_DEFAULTS = {f.name: f.default for f in fields(ResBuilderConfig)}


def _check(values: Mapping[str, Any], where: str) -> None:
    def fail(key: str, expected: str) -> ResBuilderConfigError:
        return ResBuilderConfigError(f"{where}.{key} must be {expected}, got {values[key]!r}")

    for key, default in _DEFAULTS.items():
        value = values[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise fail(key, "true or false")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(key, "a number")
        if isinstance(default, int) and not isinstance(value, int):
            raise fail(key, "an integer")
    if values["cycles"] < 1:
        raise fail("cycles", "an integer >= 1")
    if values["insertions_per_cycle"] < 0:
        raise fail("insertions_per_cycle", "an integer >= 0")
    if values["insert_attempts"] < 1:
        raise fail("insert_attempts", "an integer >= 1")
    if not 0.0 < values["search_fraction"] <= 1.0:
        raise fail("search_fraction", "in (0, 1]")
    for key in ("insert_gain", "layer_lasso", "delete_threshold", "skip_delete_gain", "width_lasso",
                "width_threshold"):
        if values[key] < 0:
            raise fail(key, "a number >= 0")
