"""Partial linearisation after training (Mehmeti-Göpel & Disselhoff, "Nonlinear Advantage", arXiv 2211.17180;
Mehmeti-Göpel & Wand, "ResNets Are Deeper Than You Think", arXiv 2506.14386).

Every ReLU of a trained network becomes a leaky unit ``f(x) = x if x >= 0 else a * x`` with a learnable
slope ``a`` in [0, 1]: ``a = 0`` is the ReLU it replaces, ``a = 1`` is the identity. A sparsity penalty
pushes slopes towards 1, then a chosen number of units is made exactly linear and the rest of the network is
fine-tuned. Two granularities, compared at equal numbers of remaining nonlinear units (channels):

* ``channel``: one slope per channel. A linear channel passes its input through, so paths through it skip
  that nonlinearity: the network becomes *variable-depth*, like a ResNet.
* ``layer``: one slope per activation layer. A layer is linear or not as a whole, so every path sees the same
  nonlinearities: the network stays *fixed-depth*, only shallower.

The ReLUs are found by tracing the network with ``torch.fx`` (module ReLUs and functional ``torch.relu`` calls
alike, each call site its own unit even when a block reuses one ``nn.ReLU``), so any network reslab builds is
covered without knowing its block code. The same traced graph gives the *average path length* (APL) of the
2022 paper in its normalised form: the expected number of nonlinear units met by a path from input to output
drawn by walking backwards and choosing, at every sum, each summand with probability 1/2 and, inside a layer,
each channel with equal probability (``reslab.analysis.apl.graph_apl``, which also keeps paths out of the
zero channels a shortcut pads in).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..build import ResNet
from ..layers.blocks import ResidualBlock
from .apl import graph_apl
from .errors import AnalysisError
from .evaluate import Batch, accuracy

MODES = ("channel", "layer")


class LeakyUnit(nn.Module):
    """A ReLU with a learnable negative slope in [0, 1] per channel (``per_channel``) or per layer.

    ``linear`` marks slopes fixed at exactly 1 by ``LinearizableNet.linearize_to``: those units pass their
    input through bit for bit and take no gradient.
    """

    def __init__(self, channels: int, per_channel: bool) -> None:
        super().__init__()
        self.channels = channels
        self.slope = nn.Parameter(torch.zeros(channels if per_channel else 1))
        self.register_buffer("linear", torch.zeros(self.slope.shape, dtype=torch.bool))

    def effective_slope(self) -> torch.Tensor:
        return torch.where(self.linear, torch.ones_like(self.slope), self.slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.effective_slope())

    @torch.no_grad()
    def project_(self) -> None:
        """Keep slopes in [0, 1] after an optimiser step (past 1 it would be a different nonlinearity)."""
        self.slope.clamp_(0.0, 1.0)

    def nonlinear_mask(self) -> torch.Tensor:
        """Which slopes still bend (below 1), one entry per slope."""
        return self.effective_slope() < 1.0

    def nonlinear_channels(self) -> int:
        return self.channels // self.slope.numel() * int(self.nonlinear_mask().sum().item())

    def extra_repr(self) -> str:
        return f"channels={self.channels}, slopes={self.slope.numel()}"


@dataclass(frozen=True)
class Site:
    """One ReLU call of the original network, now a ``LeakyUnit`` named ``module`` in the traced graph."""

    name: str  # e.g. "layer2.0.act1" (first activation of that block), "stem.act1", "head.act1"
    module: str
    channels: int


_RELU_FUNCTIONS = {torch.relu, torch.relu_, F.relu}


def _is_relu(node: fx.Node, root: nn.Module) -> bool:
    if node.op == "call_module":
        return isinstance(root.get_submodule(node.target), nn.ReLU)
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _owner_block(node: fx.Node) -> str | None:
    """The innermost residual block whose forward made this call (from fx's record of the module stack)."""
    owner = None
    for entry in (node.meta.get("nn_module_stack") or {}).values():
        path, cls = entry
        if isinstance(cls, type) and issubclass(cls, ResidualBlock):
            owner = path
    return owner


class LinearizableNet(nn.Module):
    """A copy of a reslab network with every ReLU replaced by a ``LeakyUnit`` of the given granularity.

    With all slopes at 0 it computes exactly what the original network computes. The network is traced in eval
    mode, so drop-path regularisers are fixed to their inference form (the branch scaled by its survival
    probability) for fine-tuning; batch norm and dropout still follow ``train()``/``eval()``.
    """

    def __init__(self, model: ResNet, mode: str, example: torch.Tensor) -> None:
        super().__init__()
        if mode not in MODES:
            raise AnalysisError(f"linearisation mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.spec = model.spec
        was_training = model.training
        model = copy.deepcopy(model).eval()  # the caller's network is left as it was
        reference = next(model.parameters())
        graph_module = fx.symbolic_trace(model)
        ShapeProp(graph_module).propagate(example[:1].to(reference.device, reference.dtype))
        sites: list[Site] = []
        counts: dict[str, int] = {}
        seen_block = False
        for node in list(graph_module.graph.nodes):
            owner = _owner_block(node)
            seen_block = seen_block or owner is not None
            if not _is_relu(node, graph_module):
                continue
            where = owner or ("head" if seen_block else "stem")
            counts[where] = counts.get(where, 0) + 1
            channels = node.meta["tensor_meta"].shape[1]
            target = f"leaky_{len(sites)}"
            unit = LeakyUnit(channels, per_channel=mode == "channel").to(reference.device, reference.dtype)
            graph_module.add_submodule(target, unit)
            with graph_module.graph.inserting_after(node):
                replacement = graph_module.graph.call_module(target, (node.args[0],))
            replacement.meta = dict(node.meta)
            node.replace_all_uses_with(replacement)
            graph_module.graph.erase_node(node)
            sites.append(Site(f"{where}.act{counts[where]}", target, channels))
        graph_module.graph.lint()
        graph_module.recompile()
        graph_module.delete_all_unused_submodules()
        self.net = graph_module
        self.sites = sites
        self.total_units = sum(s.channels for s in sites)
        self.train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # -- units and slopes ---------------------------------------------------------------------------------
    def units(self) -> Iterator[tuple[Site, LeakyUnit]]:
        for site in self.sites:
            yield site, self.net.get_submodule(site.module)

    def slope_parameters(self) -> list[nn.Parameter]:
        return [unit.slope for _, unit in self.units()]

    def weight_parameters(self) -> list[nn.Parameter]:
        slopes = {id(p) for p in self.slope_parameters()}
        return [p for p in self.parameters() if id(p) not in slopes]

    def project_(self) -> None:
        for _, unit in self.units():
            unit.project_()

    def remaining_units(self) -> int:
        """Nonlinear channels left (a layer-mode slope counts for all the channels of its layer)."""
        return sum(unit.nonlinear_channels() for _, unit in self.units())

    def remaining_fraction(self) -> float:
        return self.remaining_units() / self.total_units

    def penalty(self) -> torch.Tensor:
        """Sparsity penalty: every channel pays ``1 - a`` (so the two modes price a channel alike)."""
        terms = []
        for _, unit in self.units():
            channels_per_slope = unit.channels // unit.slope.numel()
            terms.append(channels_per_slope * (1.0 - unit.effective_slope()).sum())
        return torch.stack(terms).sum()

    @torch.no_grad()
    def linearize_to(self, target: int) -> int:
        """Fix slopes at exactly 1, the ones closest to 1 first, until ``target`` nonlinear channels remain
        (layer mode: whole layers, never going below ``target``). Returns the number that remain."""
        if not 0 <= target <= self.total_units:
            raise AnalysisError(f"linearize_to: target {target} is outside 0..{self.total_units} units")
        remaining = self.remaining_units()
        candidates = []  # (slope, unit, index, channels)
        for _, unit in self.units():
            open_slopes = (~unit.linear).nonzero().flatten().tolist()
            per = unit.channels // unit.slope.numel()
            candidates += [(unit.slope[i].item(), unit, i, per) for i in open_slopes]
        # Stable sort: among equal slopes the earlier layer is linearised first.
        for _, unit, index, channels in sorted(candidates, key=lambda c: -c[0]):
            if remaining <= target:
                break
            if remaining - channels < target:
                continue  # a whole layer too many; a smaller layer further down may still fit
            bent = bool(unit.nonlinear_mask()[index])
            unit.linear[index] = True
            remaining -= channels if bent else 0
        return self.remaining_units()

    # -- depth -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def average_path_length(self) -> float:
        """The normalised average path length (``reslab.analysis.apl.graph_apl``)."""
        return graph_apl(self.net, {site.module: unit.nonlinear_mask().float() for site, unit in self.units()})

    def site_fractions(self) -> dict[str, float]:
        """Fraction of nonlinear channels left at every site (where the nonlinear core sits)."""
        return {site.name: unit.nonlinear_channels() / unit.channels for site, unit in self.units()}


# -- the protocol --------------------------------------------------------------------------------------------
@dataclass
class LinearizeConfig:
    """The post-training linearisation recipe (defaults sized for small CPU runs)."""

    penalty_epochs: int = 2  # epochs of training under the sparsity penalty
    finetune_epochs: int = 1  # epochs after fixing the chosen units at exactly linear
    penalty: float = 1e-3  # lambda: the cost of one fully nonlinear channel
    lr: float = 0.01  # SGD (momentum 0.9) for the network's weights
    weight_decay: float = 5e-4  # weights only; slopes are not decayed (decay would pull them to ReLU)
    slope_lr: float = 0.02  # Adam for the slopes: each moves at a similar pace whatever its gradient's scale

    def __post_init__(self) -> None:
        for name in ("penalty_epochs", "finetune_epochs"):
            if getattr(self, name) < 0:
                raise AnalysisError(f"LinearizeConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("penalty", "lr", "weight_decay", "slope_lr"):
            if getattr(self, name) < 0 or not math.isfinite(getattr(self, name)):
                raise AnalysisError(f"LinearizeConfig.{name} must be a finite number >= 0, "
                                    f"got {getattr(self, name)}")


def train_epochs(net: LinearizableNet, batches: Sequence[Batch], epochs: int, config: LinearizeConfig,
                 penalty: float, generator: torch.Generator, train_slopes: bool = True) -> None:
    """Train the weights (and the slopes, unless ``train_slopes`` is off) with cross-entropy plus ``penalty``
    times the sparsity penalty."""
    if epochs == 0:
        return
    device = next(net.parameters()).device
    weights = torch.optim.SGD(net.weight_parameters(), lr=config.lr, momentum=0.9,
                              weight_decay=config.weight_decay)
    slopes = torch.optim.Adam(net.slope_parameters(), lr=config.slope_lr) if train_slopes else None
    net.train()
    for _ in range(epochs):
        for i in torch.randperm(len(batches), generator=generator).tolist():
            images, labels = batches[i]
            loss = F.cross_entropy(net(images.to(device)), labels.to(device))
            if penalty > 0:
                loss = loss + penalty * net.penalty()
            net.zero_grad(set_to_none=True)
            loss.backward()
            weights.step()
            if slopes is not None:
                slopes.step()
                net.project_()
    net.eval()


@dataclass
class LinearizePoint:
    mode: str
    target_fraction: float
    remaining_units: int
    remaining_fraction: float
    accuracy: float
    apl: float
    sites: dict[str, float] = field(default_factory=dict)


@dataclass
class LinearizeResult:
    model: str
    total_units: int
    baseline_accuracy: float
    baseline_apl: float
    points: list[LinearizePoint]
    # Test accuracy right after each mode's penalty phase, before any unit is fixed: how much of the fully
    # nonlinear network's accuracy the penalised (partly linear) network keeps.
    penalised_accuracy: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearizeResult:
        return cls(d["model"], d["total_units"], d["baseline_accuracy"], d["baseline_apl"],
                   [LinearizePoint(**p) for p in d["points"]], dict(d.get("penalised_accuracy", {})))


def linearization_study(model: ResNet, train: Sequence[Batch], test: Sequence[Batch],
                        fractions: Sequence[float], config: LinearizeConfig | None = None,
                        seed: int = 0) -> LinearizeResult:
    """Accuracy and APL against the fraction of nonlinear units kept, channel-wise vs layer-wise.

    For each mode the penalty phase runs once from the trained model; then for every fraction a copy has its
    most nearly linear units fixed at exactly 1 and is fine-tuned. Layer mode goes first, and the channel mode
    is linearised down to the count layer mode reached (whole layers rarely hit a target exactly); it can end
    with fewer, so both counts are reported.
    """
    config = config or LinearizeConfig()
    for f in fractions:
        if not 0.0 <= f <= 1.0:
            raise AnalysisError(f"linearisation fractions must be in [0, 1], got {f}")
    example = train[0][0]
    generator = torch.Generator().manual_seed(seed)
    reference = LinearizableNet(model, "channel", example)
    result = LinearizeResult(model.spec.name, reference.total_units, accuracy(model, test),
                             reference.average_path_length(), [])
    penalised = {}
    for mode in ("layer", "channel"):
        net = LinearizableNet(model, mode, example)
        train_epochs(net, train, config.penalty_epochs, config, config.penalty, generator)
        penalised[mode] = net
        result.penalised_accuracy[mode] = accuracy(net, test)
    for fraction in sorted(set(fractions), reverse=True):
        target = round(fraction * reference.total_units)
        for mode in ("layer", "channel"):
            net = copy.deepcopy(penalised[mode])
            target = net.linearize_to(target)  # channel mode then matches what layer mode reached
            # Slopes stay where they are while fine-tuning, so the count of nonlinear units stays matched.
            train_epochs(net, train, config.finetune_epochs, config, 0.0, generator, train_slopes=False)
            result.points.append(LinearizePoint(
                mode, fraction, net.remaining_units(), net.remaining_fraction(), accuracy(net, test),
                net.average_path_length(), net.site_fractions()))
    return result
