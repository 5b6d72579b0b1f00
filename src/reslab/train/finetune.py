"""Fine-tuning: freezing parts of a network (``train.freeze``) until an epoch (``train.unfreeze_epoch``).

Frozen parameters get ``requires_grad=False``; they stay in the optimizer, which skips parameters without a
gradient (no update, no weight decay, no momentum), so unfreezing needs no new optimizer and the schedule
and the optimizer state carry on. Frozen batch-norm layers are kept in eval mode while the rest trains, so
their running statistics do not move. Whether a layer is frozen is a function of the epoch alone, so a run
resumed from a checkpoint freezes exactly what the uninterrupted run froze.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..build import CLASSIFIER

# ``stem`` in train.freeze stands for the layers before the first stage (reslab names them as torchvision).
STEM_MODULES = ("conv1", "bn1", "relu", "maxpool")
# Modules that belong to the head rather than the backbone.
HEAD_MODULES = (CLASSIFIER, "head_drop", "avgpool")


def frozen_prefixes(model: nn.Module, freeze: str | Sequence[str]) -> list[str]:
    """The module names ``train.freeze`` stands for in ``model``: ``none``, ``backbone`` (everything but the
    classifier) or a list of module-name prefixes (``stem``, ``layer1``, ``layer2.0``, ...)."""
    children = [name for name, _ in model.named_children()]
    if freeze == "none":
        return []
    if freeze == "backbone":
        return [name for name in children if name not in HEAD_MODULES]
    if isinstance(freeze, str):
        raise ValueError(f"train.freeze: must be none, backbone or a list of module names, got {freeze!r}")
    names = [n for n, _ in model.named_modules()]
    out: list[str] = []
    for prefix in freeze:
        expanded = list(STEM_MODULES) if prefix == "stem" else [prefix]
        if not any(_within(name, p) for p in expanded for name in names if name):
            raise ValueError(
                f"train.freeze: {prefix!r} names no module of {model.spec.name} "
                f"(top-level modules: stem, {', '.join(n for n in children if n not in STEM_MODULES)})"
            )
        out += [p for p in expanded if p in names]
    return out


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


class FineTune:
    """Applies ``train.freeze`` / ``train.unfreeze_epoch`` to a model at the start of every training epoch."""

    def __init__(self, freeze: str | Sequence[str], unfreeze_epoch: int | None) -> None:
        self.freeze = freeze
        self.unfreeze_epoch = unfreeze_epoch
        self._applied: tuple[int, bool] | None = None  # (id of the model, frozen) last applied

    @property
    def active(self) -> bool:
        return self.freeze != "none" and self.freeze != []

    def frozen_at(self, epoch: int) -> bool:
        return self.active and (self.unfreeze_epoch is None or epoch < self.unfreeze_epoch)

    def check(self, model: nn.Module) -> None:
        """Raise ``ValueError`` naming ``train.freeze`` when it names no module of ``model``."""
        frozen_prefixes(model, self.freeze)

    def apply(self, model: nn.Module, epoch: int) -> str | None:
        """Freeze or unfreeze ``model`` for ``epoch`` and put frozen batch norms in eval mode (call it after
        ``model.train()``). Returns a line describing a change of state, else ``None``."""
        if not self.active:
            return None
        frozen = self.frozen_at(epoch)
        prefixes = frozen_prefixes(model, self.freeze)
        count = 0
        for name, module in model.named_modules():
            if not any(_within(name, p) for p in prefixes):
                continue
            for param in module.parameters(recurse=False):
                param.requires_grad_(not frozen)
                count += param.numel()
            if frozen and isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        total = sum(p.numel() for p in model.parameters())
        state, before = (id(model), frozen), self._applied
        self._applied = state
        if state == before or (before is None and not frozen):  # no change (a resumed run past the unfreeze)
            return None
        if frozen:
            return (f"frozen until epoch {self.unfreeze_epoch}: " if self.unfreeze_epoch else "frozen: ") + (
                f"{', '.join(prefixes)} ({count:,} of {total:,} parameters; batch norms there in eval mode)"
            )
        return f"unfrozen at epoch {epoch}: {', '.join(prefixes)} ({count:,} parameters) train from now on"


__all__ = ["FineTune", "frozen_prefixes"]
