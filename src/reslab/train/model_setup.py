"""The network a run starts from: the spec its config describes, fitted to the data, and its first weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..io import read_spec
from ..spec import NetSpec
from ..zoo import make_spec
from .checkpoint import read_weights, transfer_weights, weights_classes
from .config import Config, ConfigError, ModelConfig


def make_spec_from_config(config: Config, num_classes: int, in_chans: int) -> NetSpec:
    """The spec ``config.model`` describes, fitted to the data's classes and channels."""
    m = config.model
    if m.name is not None:
        return make_spec(
            m.name,
            num_classes=num_classes,
            in_chans=in_chans,
            shortcut=m.shortcut,
            drop_path=m.drop_path,
            final_survival=m.final_survival,
            dropout=m.dropout,
        )
    try:
        spec = read_spec(m.spec)
    except (ValueError, OSError) as err:
        raise ConfigError(f"model.spec: {err}") from None
    if spec.num_classes != num_classes:
        spec = spec.with_classes(num_classes)
    if spec.in_chans != in_chans:
        spec = spec.with_in_chans(in_chans)
    if m.shortcut is not None:
        spec = spec.with_shortcut(m.shortcut)
    if m.drop_path is not None:
        spec = spec.with_drop_path(m.drop_path, m.final_survival)
    if m.dropout is not None:
        spec = spec.with_dropout(m.dropout)
    return spec


def init_weights(model: nn.Module, m: ModelConfig, class_names: Sequence[Any], *, verbose: bool) -> dict | None:
    """Zero-init the residual branches and/or load ``model.init_from``; returns the ``init_from`` event's
    fields (None when nothing was loaded)."""
    if m.zero_init_residual:
        model.zero_init_residual()
    if m.init_from is None:
        return None
    classes = weights_classes(m.init_from)  # other classes, even as many: a new classifier
    new_head = classes is not None and classes != [str(c) for c in class_names]
    done = transfer_weights(model, read_weights(m.init_from), m.init_from, strict=m.init_strict, new_head=new_head)
    if verbose:
        print(done.describe(), flush=True)
    return {"path": str(m.init_from), "loaded": len(done.loaded), "skipped": done.kept,
            "head_replaced": done.head_replaced}


__all__ = ["init_weights", "make_spec_from_config"]
