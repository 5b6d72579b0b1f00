"""The average path length (APL) of a partly linearised network, and linearisation curves compared at equal
APL, as Mehmeti-Göpel & Disselhoff (arXiv 2211.17180) compare channel-wise and layer-wise linearisation.

``graph_apl`` is the paper's normalised APL: the expected number of nonlinear units met by a path from the
input to the output drawn by walking backwards through the unit-level graph, taking each summand of a sum
with equal probability and, where a layer mixes channels (convolution, linear layer), each input channel with
equal probability. It is computed per channel on a traced graph: a nonlinear unit adds 1 to its channel, a
sum averages its summands channel by channel, a mixing layer gives every output channel the mean over its
input channels. A zero channel that a shortcut pads in carries no path, so where it meets a branch's channel
the path takes the branch.

A linearisation study gives, per mode and seed, points (APL, accuracy): the network at several counts of
nonlinear units. The two modes reach different APLs at equal unit counts, so each curve is read as accuracy
against APL, interpolated linearly between its points (never extrapolated), on an APL grid that every curve
covers; the two modes are then compared seed by seed at each grid point (``reslab.analysis.paired``).
The APL itself is ``LinearizableNet.average_path_length``.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata

from .errors import AnalysisError
from .paired import Paired, paired

# Per channel: the expected nonlinear units on a path reaching it, and whether any path from the input does.
_State = tuple[torch.Tensor, torch.Tensor]


def _channels(node: fx.Node) -> int:
    shape = node.meta["tensor_meta"].shape
    return int(shape[1]) if len(shape) > 1 else 1


def _mean_over_live(state: _State) -> _State | None:
    depth, live = state
    return None if not live.any() else (depth[live].mean().reshape(1), torch.ones(1, dtype=torch.bool))


def _spread(state: _State | None, channels: int) -> _State:
    """One value for every channel (a dead state stays dead)."""
    if state is None:
        return torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.bool)
    depth, live = state
    return depth.expand(channels).clone(), live.expand(channels).clone()


_MIXING_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _mix(node: fx.Node, root: nn.Module, state: _State) -> _State | None:
    """A convolution or linear layer: each output channel averages the live input channels of its group."""
    if node.op == "call_module" and isinstance(root.get_submodule(node.target), _MIXING_MODULES):
        groups = getattr(root.get_submodule(node.target), "groups", 1)
    elif node.op == "call_function" and node.target in (F.linear, F.conv1d, F.conv2d, F.conv3d):
        groups = int(node.kwargs.get("groups", node.args[6] if len(node.args) > 6 else 1))
    else:
        return None
    out, depth, live = _channels(node), *state
    parts = [_spread(_mean_over_live((d, a)), out // groups)
             for d, a in zip(depth.chunk(groups), live.chunk(groups), strict=True)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _pad_channels(node: fx.Node, state: _State) -> _State | None:
    """``F.pad`` that adds zero channels (a zero-padded shortcut): the new channels carry no path."""
    pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
    if node.target is not F.pad or len(node.meta["tensor_meta"].shape) != 4 or len(pad or ()) < 6:
        return None
    added = _channels(node) - len(state[0])
    front = pad[4] if isinstance(pad[4], int) else 0
    if added < 0 or not 0 <= front <= added:
        return None
    depth, live = state
    zeros = torch.zeros(added - front, dtype=torch.float64)
    return (torch.cat([torch.zeros(front, dtype=torch.float64), depth, zeros]),
            torch.cat([torch.zeros(front, dtype=torch.bool), live, zeros.bool()]))


def _slice_channels(node: fx.Node, state: _State) -> _State | None:
    if node.target is not operator.getitem or not isinstance(node.args[1], tuple) or len(node.args[1]) < 2:
        return None
    index = node.args[1][1]
    return (state[0][index], state[1][index]) if isinstance(index, slice) else None


def _combine(states: Sequence[_State]) -> _State:
    """A sum (or any op of several inputs): each channel averages the inputs that carry a path to it."""
    depth = torch.stack([d for d, _ in states])
    live = torch.stack([a for _, a in states])
    count = live.sum(0)
    mean = (depth * live).sum(0) / count.clamp(min=1)
    return mean, count > 0


def graph_apl(graph_module: fx.GraphModule, nonlinear: Mapping[str, torch.Tensor]) -> float:
    """The normalised APL of a traced network whose shapes ``ShapeProp`` recorded. ``nonlinear`` maps the
    target of every nonlinear unit's call to its per-channel nonlinearity (1 bends, 0 is linear; one entry
    stands for the whole layer)."""
    state: dict[fx.Node, _State] = {}
    for node in graph_module.graph.nodes:
        if node.op == "output":
            (result,) = [a for a in node.all_input_nodes if a in state]
            reached = _mean_over_live(state[result])
            return 0.0 if reached is None else float(reached[0])
        if not isinstance(node.meta.get("tensor_meta"), TensorMetadata):
            continue
        channels = _channels(node)
        if node.op == "placeholder":
            state[node] = _spread((torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.bool)), channels)
            continue
        # A one-channel input broadcast against a wider one reaches every channel.
        inputs = [_spread(state[a], channels) if len(state[a][0]) == 1 and channels > 1 else state[a]
                  for a in node.all_input_nodes if a in state]
        if not inputs:
            continue  # a constant: no path from the input reaches it
        if node.op == "call_module" and node.target in nonlinear:
            depth, live = inputs[0]
            state[node] = depth + nonlinear[node.target].double().expand(channels), live
            continue
        if len(inputs) > 1:
            if node.target is torch.cat and (node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)) == 1:
                state[node] = torch.cat([d for d, _ in inputs]), torch.cat([a for _, a in inputs])
            elif all(len(d) == channels for d, _ in inputs):
                state[node] = _combine(inputs)
            else:  # inputs of different widths: each one's mean, then their average
                means = [m for m in map(_mean_over_live, inputs) if m is not None]
                state[node] = _spread(_combine(means) if means else None, channels)
            continue
        new = _mix(node, graph_module, inputs[0]) or _pad_channels(node, inputs[0]) or \
            _slice_channels(node, inputs[0])
        if new is None:
            # Anything else acts channel by channel when it keeps the count; otherwise treat it as mixing.
            new = inputs[0] if len(inputs[0][0]) == channels else _spread(_mean_over_live(inputs[0]), channels)
        state[node] = new
    raise AnalysisError("the traced graph has no output node")

Curve = Sequence[tuple[float, float]]  # (apl, accuracy) points, in any order


def accuracy_at(curve: Curve, apl: float) -> float:
    """The curve's accuracy at ``apl``, linear between neighbouring points; nan outside the curve's range.

    Points at the same APL are averaged first (several unit counts can share one APL, e.g. all 0)."""
    if not curve:
        raise AnalysisError("accuracy_at: the curve has no points")
    by_apl: dict[float, list[float]] = {}
    for x, y in curve:
        by_apl.setdefault(float(x), []).append(float(y))
    xs = sorted(by_apl)
    ys = [sum(by_apl[x]) / len(by_apl[x]) for x in xs]
    if not xs[0] <= apl <= xs[-1]:
        return math.nan
    i = bisect.bisect_left(xs, apl)
    if xs[i] == apl:
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (apl - x0) / (x1 - x0)


def common_grid(curves: Sequence[Curve], points: int) -> list[float]:
    """``points`` evenly spaced APLs inside the range that every curve covers ([] when they do not overlap)."""
    if points < 1:
        raise AnalysisError(f"common_grid: points must be >= 1, got {points}")
    low = max(min(x for x, _ in c) for c in curves)
    high = min(max(x for x, _ in c) for c in curves)
    if low > high:
        return []
    if points == 1 or low == high:
        return [(low + high) / 2]
    return [low + (high - low) * i / (points - 1) for i in range(points)]


@dataclass(frozen=True)
class EqualAplPoint:
    apl: float
    a: tuple[float, ...]  # per-seed accuracy of the first mode at this APL
    b: tuple[float, ...]
    diff: Paired  # a - b, seed by seed


def compare_at_equal_apl(a: Sequence[Curve], b: Sequence[Curve], points: int = 5) -> list[EqualAplPoint]:
    """Curves ``a`` and ``b`` (one per seed, in the same seed order) compared on their common APL grid."""
    if len(a) != len(b) or not a:
        raise AnalysisError(f"compare_at_equal_apl: need one curve per seed on both sides, got {len(a)} and "
                            f"{len(b)}")
    out = []
    for apl in common_grid([*a, *b], points):
        acc_a = tuple(accuracy_at(c, apl) for c in a)
        acc_b = tuple(accuracy_at(c, apl) for c in b)
        out.append(EqualAplPoint(apl, acc_a, acc_b, paired(acc_a, acc_b)))
    return out
