"""Hooks: how ResBuilder, the depth analyses and user code plug into the training loop.

The engine calls each method of each hook in order; every method is optional. A hook gets the ``Trainer``
and may read anything it exposes (``model``, ``optimizer``, ``scheduler``, ``config``, ``device``, ``rank``,
``world_size``, ``is_main``, ``data``, ``epoch``, ``global_step``, ``run_dir``, ``criterion``, ``precision``,
``channels_last``) and use ``evaluate``, ``set_model`` and ``event``. ``loss`` sees every training batch and
the model's logits, and may add to or replace the loss (``reslab.deploy.distill`` does).

Under DDP every rank runs every hook; hooks must act the same on all ranks (decide from reduced metrics, which
the engine hands them) and only write files when ``trainer.is_main``.

``state_dict``/``load_state_dict`` must be JSON-able: they are saved in every checkpoint, so a resumed run
restores its hooks as well as the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:  # the engine imports this module, not the other way round
    from .engine import Trainer


class Hook:
    """Base class with no-op methods; override the ones you need."""

    def on_train_start(self, trainer: Trainer) -> None:
        """After the model, optimizer and data are ready (and a resumed state is loaded)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before the first step of ``epoch`` (0-based)."""

    def extra_loss(self, trainer: Trainer) -> Tensor | None:
        """A term added to the loss before backward (e.g. a LASSO penalty); computed in every step."""
        return None

    def loss(
        self, trainer: Trainer, inputs: Tensor, targets: Tensor, logits: Tensor, loss: Tensor
    ) -> Tensor | None:
        """The loss seam: the step's (augmented) batch, the model's logits and the loss so far (the criterion's,
        then what earlier hooks made of it). Return a new loss to use instead, or None to keep it.

        Hooks run in order, each seeing the previous one's result; a hook that changes the criterion's part
        should add its change (``loss + new - criterion``) so that terms from other hooks survive. The default
        adds ``extra_loss``.
        """
        extra = self.extra_loss(trainer)
        return None if extra is None else loss + extra

    def after_backward(self, trainer: Trainer) -> None:
        """Gradients are ready (unscaled) and the optimizer has not stepped: inspect or edit them."""

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        """After the optimizer and scheduler step; ``step`` is the global step count so far. The hook may replace
        the network here (``trainer.set_model``): the epoch's next step trains the new one."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """After evaluation; keys added to ``metrics`` are logged with the epoch."""

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """After the test evaluation; keys added to ``summary`` go into ``summary.json``."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (from a checkpoint)."""


def hook_states(hooks: Sequence[Hook]) -> list[dict[str, Any]]:
    return [{"hook": type(h).__name__, "state": h.state_dict()} for h in hooks]


def load_hook_states(hooks: Sequence[Hook], states: Sequence[dict[str, Any]], where: str) -> None:
    """Give each hook its saved state, matching by position and class name."""
    if len(states) != len(hooks):
        names = [s.get("hook") for s in states]
        raise ValueError(
            f"{where}: the checkpoint has state for {len(states)} hook(s) {names}, this run "
            f"has {len(hooks)} {[type(h).__name__ for h in hooks]} (same config sections?)"
        )
    for hook, saved in zip(hooks, states, strict=True):
        if saved.get("hook") != type(hook).__name__:
            raise ValueError(
                f"{where}: hook state for {saved.get('hook')!r} cannot restore {type(hook).__name__!r}"
            )
        hook.load_state_dict(saved.get("state", {}))


__all__ = ["Hook", "hook_states", "load_hook_states"]
