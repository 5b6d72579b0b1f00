"""ResBuilder's penalties: values against hand computation, gradients against finite differences, and the
dead-channel test that decides cuts."""

from __future__ import annotations

import math

import pytest
import torch
from builder_nets import INPUT, SPECS, images, outputs, randomised
from torch import nn
from torch.func import functional_call

import reslab
from reslab.builder import (
    WidthPenalty,
    block_strengths,
    branch_gain,
    layer_lasso,
    removable_blocks,
    shrink_blocks,
)
from reslab.builder.penalties import channel_costs, group_matrix
from reslab.edit import insert_block
from reslab.edit.channels import BLOCK_LAYOUTS


class Penalty(nn.Module):
    """``fn(model)`` as a module, so ``functional_call`` can swap the model's parameters for gradcheck."""

    def __init__(self, model: nn.Module, fn) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self) -> torch.Tensor:
        return self.fn(self.model)


def gradcheck(model: nn.Module, fn, names: list[str]) -> None:
    wrapper = Penalty(model, fn)
    inputs = tuple(dict(model.named_parameters())[n].detach().clone().requires_grad_() for n in names)

    def call(*values: torch.Tensor) -> torch.Tensor:
        return functional_call(wrapper, {f"model.{n}": v for n, v in zip(names, values, strict=True)}, ())

    # Fast mode compares random directional derivatives: a real check at a fraction of the Jacobian's cost.
    assert torch.autograd.gradcheck(call, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


# -- layer LASSO ------------------------------------------------------------------------------------------
def test_layer_lasso_value_is_the_block_group_norms() -> None:
    model = randomised(reslab.make_spec("resnet20"))
    blocks = removable_blocks(model)
    assert blocks == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]  # not the downsampling ones
    expected = 0.0
    for s, b in blocks:
        bn = model.stages()[s][b].bn2
        values = torch.cat([bn.weight, bn.bias]).tolist()
        expected += math.sqrt(len(values)) * math.sqrt(sum(v * v for v in values))
    assert layer_lasso(model).item() == pytest.approx(expected, rel=1e-5)
    strengths = block_strengths(model)
    bn = model.layer2[1].bn2
    assert strengths[(1, 1)] == pytest.approx(torch.cat([bn.weight, bn.bias]).abs().mean().item())


def test_layer_lasso_of_wide_blocks_uses_the_last_conv() -> None:
    model = randomised(SPECS["wide_basic"]())
    (block,) = [model.stages()[s][b] for s, b in removable_blocks(model)]
    torch.testing.assert_close(branch_gain(block), block.conv2.weight.reshape(-1))


@pytest.mark.parametrize("kind", ["basic", "wide_basic", "pyramid_basic"])
def test_layer_lasso_gradient(kind: str) -> None:
    model = randomised(SPECS[kind](), dtype=torch.float64)
    if not removable_blocks(model):
        model = insert_block(model, 1, 1, gain=0.7).model
    # The gains of every removable block, and a parameter the penalty must not touch (zero gradient).
    producers = {f"layer{s + 1}.{b}.{BLOCK_LAYOUTS[model.spec.stages[s][b].kind].out_producer}"
                 for s, b in removable_blocks(model)}
    names = [n for n, _ in model.named_parameters() if n.rpartition(".")[0] in producers] + ["fc.bias"]
    gradcheck(model, layer_lasso, names)


def test_layer_lasso_gradient_of_a_silent_block_is_zero_not_nan() -> None:
    model = insert_block(randomised(reslab.make_spec("resnet8")), 0, 1).model  # starts with zero gain
    layer_lasso(model).backward()
    assert torch.all(model.layer1[1].bn2.weight.grad == 0)
    assert torch.all(model.layer1[0].bn2.weight.grad != 0)


def _flat(model: nn.Module, names: list[str]) -> torch.Tensor:
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1) for n in names])


def assert_is_proximal_step(model: nn.Module, step, penalty, names: list[str], amount: float) -> None:
    """``step(model, amount)`` gives y = argmin 1/2 ||y - x||^2 + amount * penalty(y) over the parameters
    ``names``: the objective at y is no larger than at any of many random points near it (it is convex)."""
    x = _flat(model, names)
    step(model, amount)
    y = _flat(model, names)
    params = dict(model.named_parameters())
    sizes = [params[n].numel() for n in names]

    def objective(v: torch.Tensor) -> float:
        with torch.no_grad():
            for n, part in zip(names, v.split(sizes), strict=True):
                params[n].copy_(part.view_as(params[n]))
            return (0.5 * (v - x).square().sum() + amount * penalty(model)).item()

    best = objective(y)
    gen = torch.Generator().manual_seed(0)
    for scale in (1e-1, 1e-2, 1e-3):
        for _ in range(20):
            assert objective(y + scale * torch.randn(y.shape, generator=gen, dtype=y.dtype)) >= best - 1e-9
    objective(y)  # leave the model at the step's result


@pytest.mark.parametrize("kind", ["basic", "wide_basic", "pyramid_bottleneck"])
def test_shrink_blocks_is_the_proximal_step_of_the_layer_lasso(kind: str) -> None:
    model = randomised(SPECS[kind](), dtype=torch.float64)
    if not removable_blocks(model):
        model = insert_block(model, 1, 1, gain=0.7).model
    blocks = removable_blocks(model)
    producers = {f"layer{s + 1}.{b}.{BLOCK_LAYOUTS[model.spec.stages[s][b].kind].out_producer}"
                 for s, b in blocks}
    names = [n for n, _ in model.named_parameters() if n.rpartition(".")[0] in producers]
    assert_is_proximal_step(model, lambda m, a: shrink_blocks(m, blocks, a),
                            lambda m: layer_lasso(m, blocks), names, amount=0.05)


def test_shrink_blocks_lowers_the_rms_gain_by_the_amount_and_zeroes_weak_blocks() -> None:
    model = randomised(reslab.make_spec("resnet20"))
    stages = model.stages()
    with torch.no_grad():
        stages[0][1].bn2.weight.mul_(0.01)
        stages[0][1].bn2.bias.mul_(0.01)
    before = {b: branch_gain(stages[b[0]][b[1]]).clone() for b in removable_blocks(model)}
    shrink_blocks(model, removable_blocks(model), 0.05)
    for (s, b), gain in before.items():
        after = branch_gain(stages[s][b])
        rms = gain.norm().item() / math.sqrt(gain.numel())
        if rms <= 0.05:
            assert torch.all(after == 0)  # exactly zero: the deletion test will find it
        else:
            assert after.norm().item() / math.sqrt(gain.numel()) == pytest.approx(rms - 0.05, rel=1e-5)
            torch.testing.assert_close(after / after.norm(), gain / gain.norm())  # direction kept
    assert block_strengths(model)[(0, 1)] == 0.0
    downsampling = model.layer2[0].bn2.weight.clone()
    shrink_blocks(model, removable_blocks(model), 0.05)
    torch.testing.assert_close(model.layer2[0].bn2.weight, downsampling)  # not removable: not shrunk


# -- width penalty --------------------------------------------------------------------------------------
def test_channel_costs_count_the_macs_each_channel_takes_part_in() -> None:
    model = randomised(reslab.make_spec("resnet8"))  # one block per stage, option A shortcuts
    layout = WidthPenalty(model, INPUT).layout
    costs = channel_costs(model, layout, INPUT)
    k = 9  # 3x3 kernels; 8x8 input -> 64, 16 and 4 output pixels per stage
    stem = (k * 64 * 3  # written by the stem conv (3 image channels)
            + k * 64 * 16 + k * 64 * 16  # read and written by the stage-1 block
            + k * 16 * 32 + k * 16 * 32  # read by stage 2's strided conv1, written by its conv2
            + k * 4 * 64 + k * 4 * 64  # the same in stage 3
            + 10)  # read by the classifier
    assert costs["stem"] == stem
    assert costs["layer1.0.w0"] == k * 64 * 16 * 2
    assert costs["layer2.0.out"] == k * 16 * 32 + k * 4 * 64 * 2 + 10
    assert costs["layer3.0.w0"] == k * 4 * 32 + k * 4 * 64


def test_width_penalty_value_by_hand() -> None:
    model = randomised(reslab.make_spec("resnet8"))
    widths = WidthPenalty(model, INPUT)
    layout = widths.layout
    total = sum(layout.widths.values())
    mean = sum(widths.costs[g] * w for g, w in layout.widths.items()) / total
    expected = 0.0
    for group in layout.widths:
        rows = group_matrix(model, layout, group)
        expected += widths.costs[group] / mean * rows.norm(dim=1).sum().item()
    assert widths.penalty(model).item() == pytest.approx(expected, rel=1e-5)
    # The stage-1 stream is written by the stem BN (ReLU'd) and the block's last BN: gamma, relu(beta), gamma,
    # beta per channel.
    bn_stem, bn_out = model.bn1, model.layer1[0].bn2
    row = torch.stack([bn_stem.weight, bn_stem.bias.relu(), bn_out.weight, bn_out.bias], dim=1)
    # The stem group also runs through the later stages' zero-padded blocks (first 16 channels of each).
    later = [model.layer2[0].bn2, model.layer3[0].bn2]
    row = torch.cat([row] + [torch.stack([bn.weight[:16], bn.bias[:16]], dim=1) for bn in later], dim=1)
    torch.testing.assert_close(group_matrix(model, layout, "stem"), row)


@pytest.mark.parametrize("kind", ["basic_projection", "bottleneck", "wide_basic", "pyramid_bottleneck"])
def test_width_penalty_gradient(kind: str) -> None:
    model = randomised(SPECS[kind](), dtype=torch.float64)
    widths = WidthPenalty(model, INPUT)
    # Every parameter that enters some group; keep the conv-member nets' big weights out except a few.
    names = [n for n, p in model.named_parameters() if p.dim() == 1] + ["conv1.weight"]
    gradcheck(model, widths.penalty, names)


def test_width_penalty_pulls_harder_on_costlier_channels() -> None:
    model = randomised(reslab.make_spec("resnet8"))
    widths = WidthPenalty(model, INPUT)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
    widths.penalty(model).backward()
    # Stage-3 internal channels see 4 pixels but 32-64 channels; stage-1 ones 64 pixels and 16 channels.
    g1 = model.layer1[0].bn1.weight.grad.mean().item()
    g3 = model.layer3[0].bn1.weight.grad.mean().item()
    assert g1 / g3 == pytest.approx(widths.costs["layer1.0.w0"] / widths.costs["layer3.0.w0"], rel=1e-5)


# -- the dead-channel test ---------------------------------------------------------------------------------
def test_a_relu_bn_channel_is_dead_only_with_zero_scale_and_non_positive_shift() -> None:
    model = randomised(reslab.make_spec("resnet8"))
    widths = WidthPenalty(model, INPUT)
    bn = model.layer1[0].bn1  # internal width, followed by a ReLU
    with torch.no_grad():
        bn.weight[[0, 1, 2]] = 0.0
        bn.bias[[0, 1, 2]] = torch.tensor([-1.0, 0.0, 0.5])
    assert widths.keep(model, 0.0)["layer1.0.w0"] == list(range(2, 16))


def test_a_dead_stream_channel_is_kept_while_a_consumer_bn_re_biases_it() -> None:
    model = randomised(reslab.make_spec("pyramidnet14_a24"))  # pre-activation: block BNs read the stream
    widths = WidthPenalty(model, INPUT)
    layout = widths.layout
    modules = dict(model.named_modules())
    with torch.no_grad():
        for member in layout.members["stem"]:
            module = modules[member.module]
            if member.kind == "consumer":
                module.bias[member.offset] = 0.0
                module.running_mean[member.offset] = 0.0
            else:
                module.weight[member.offset] = module.bias[member.offset] = 0.0
    assert widths.keep(model, 0.0)["stem"] == list(range(1, 16))
    consumer = modules[next(m.module for m in layout.members["stem"] if m.kind == "consumer")]
    with torch.no_grad():
        consumer.running_mean[0] = 0.5  # in eval mode it would now emit -gamma * 0.5 / std
    assert "stem" not in widths.keep(model, 0.0)


def test_a_group_keeps_its_strongest_channel_when_all_are_dead() -> None:
    model = randomised(reslab.make_spec("resnet8"))
    widths = WidthPenalty(model, INPUT)
    with torch.no_grad():
        model.layer2[0].bn1.weight.zero_()
        model.layer2[0].bn1.bias.fill_(-1.0)
        model.layer2[0].bn1.weight[7] = 5e-3
    assert widths.keep(model, 1e-2)["layer2.0.w0"] == [7]
    with torch.no_grad():
        model.layer2[0].bn1.weight[7] = 0.0
    assert len(widths.keep(model, 1e-2)["layer2.0.w0"]) == 1  # all dead: one channel stays


def test_the_width_threshold_is_relative_to_the_groups_strongest_channel() -> None:
    """An inner width is followed by conv and BN, so a common scale of its BN is meaningless: shrinking the
    whole group changes neither the output nor which channels are cut."""
    model, x = randomised(reslab.make_spec("resnet8")), images()
    widths = WidthPenalty(model, INPUT)
    bn = model.layer1[0].bn1
    with torch.no_grad():
        bn.weight[3] = bn.weight.max() * 5e-3  # weak relative to the group, and a ReLU'd shift of 0
        bn.bias[3] = -0.1
    before = outputs(model, x, train=True)
    assert widths.keep(model, 1e-2)["layer1.0.w0"] == [c for c in range(16) if c != 3]
    with torch.no_grad():  # (BN's epsilon breaks the invariance once the variance nears it)
        bn.weight.mul_(0.2)
        bn.bias.mul_(0.2)
    torch.testing.assert_close(outputs(model, x, train=True), before, atol=1e-3, rtol=1e-3)
    assert widths.keep(model, 1e-2)["layer1.0.w0"] == [c for c in range(16) if c != 3]


@pytest.mark.parametrize("kind", ["basic", "basic_projection", "bottleneck", "wide_basic", "pyramid_basic"])
def test_width_shrink_is_the_proximal_step_of_the_width_penalty(kind: str) -> None:
    model = randomised(SPECS[kind](), dtype=torch.float64)
    widths = WidthPenalty(model, INPUT)
    layout = widths.layout
    names = sorted({f"{m.module}.{'bias' if m.kind == 'consumer' else 'weight'}" for g in layout.widths
                    for m in layout.members[g]}
                   | {f"{m.module}.bias" for g in layout.widths for m in layout.members[g] if m.kind != "conv"})
    assert_is_proximal_step(model, widths.shrink, widths.penalty, names, amount=0.02)


def test_width_shrink_zeroes_weak_channels_so_they_are_cut() -> None:
    model = randomised(reslab.make_spec("resnet8"))
    widths = WidthPenalty(model, INPUT)
    bn = model.layer1[0].bn1  # an internal width, followed by a ReLU
    with torch.no_grad():
        bn.weight[[2, 5]] = 1e-3
        bn.bias[2], bn.bias[5] = -0.3, 1e-3
    weight = widths.weights["layer1.0.w0"]
    widths.shrink(model, 0.01 / weight)  # moves each row of this group by 0.01 in norm
    assert bn.weight[2] == 0 and bn.weight[5] == 0 and bn.bias[5] == 0
    assert bn.bias[2].item() == pytest.approx(-0.3)  # a silent shift is no part of the penalty: left alone
    assert widths.keep(model, 0.0)["layer1.0.w0"] == [c for c in range(16) if c not in (2, 5)]
