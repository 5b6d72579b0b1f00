"""Mechanics of the depth studies on small untrained networks (random batch-norm statistics make every branch
matter, so a lesion or a routing that did nothing would show)."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import reslab
from reslab.analysis import (
    LeakyUnit,
    LinearizableNet,
    LinearizeConfig,
    LinearizeResult,
    branch_norms,
    gradient_by_path_length,
    lesion_pool,
    lesion_study,
    lesioned,
    linearization_study,
    output_by_path_length,
    path_length_counts,
    path_length_distribution,
    remove_blocks,
)
from reslab.analysis.effective_depth import path_contributions
from reslab.analysis.paths import RoutedBackward
from reslab.analysis.routing import original_combine, override_combine, run_trunk
from reslab.layers.shortcuts import ZeroPadShortcut


def randomised(name: str, seed: int = 0, **kwargs) -> reslab.ResNet:
    """A zoo model in eval mode with random BN statistics and affine parameters."""
    torch.manual_seed(seed)
    model = reslab.create_model(name, num_classes=kwargs.pop("num_classes", 5), **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return model.eval()


def images(n: int = 3, size: int = 8, chans: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, chans, size, size, generator=torch.Generator().manual_seed(seed))


# -- lesion ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet14", "plain_resnet14", "wrn16_1", "resnet14_b"])
def test_lesioning_a_block_equals_removing_it_from_the_spec(name):
    model = randomised(name)
    x = images()
    with torch.no_grad():
        intact = model(x)
        pool = lesion_pool(model.spec)
        assert pool, "these models have shape-preserving blocks"
        for chosen in [[pool[0]], [pool[-1]], pool[:2]]:
            with lesioned(model, chosen):
                masked = model(x)
            edited = remove_blocks(model, chosen).eval()
            assert edited.spec.num_blocks == model.spec.num_blocks - len(chosen)
            torch.testing.assert_close(masked, edited(x), rtol=1e-5, atol=1e-5)
            assert not torch.allclose(masked, intact, atol=1e-3), "the lesion changed nothing"
        # The mask is gone after the with-block.
        torch.testing.assert_close(model(x), intact, rtol=0, atol=0)


def test_lesioning_a_downsampling_block_keeps_only_its_shortcut():
    model = randomised("resnet14")  # block (1, 0): stride 2, 16 -> 32 channels, zero-padded shortcut
    block = model.layer2[0]
    x = torch.relu(images(chans=16))
    with torch.no_grad(), lesioned(model, [(1, 0)]):
        out = block(x)
    expected = torch.relu(ZeroPadShortcut(16, 32, 2, "subsample")(x))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"block \(1, 0\) of resnet14 cannot be removed from the spec"):
        remove_blocks(model, [(1, 0)])


def test_plain_blocks_that_change_shape_cannot_be_lesioned():
    model = randomised("plain_resnet14")
    with pytest.raises(ValueError, match=r"block \(1, 0\) of plain_resnet14 is plain and changes the shape"):
        with lesioned(model, [(1, 0)]):
            pass
    with pytest.raises(ValueError, match=r"block \(5, 0\) does not exist"):
        with lesioned(model, [(5, 0)]):
            pass


def test_lesion_study_scores_every_block_and_restores_the_model():
    model = randomised("resnet14", num_classes=3)
    plain = randomised("plain_resnet14", num_classes=3)
    x, y = images(6), torch.tensor([0, 1, 2, 0, 1, 2])
    batches = [(x, y)]
    before = model(x)
    result = lesion_study(model, batches, ks=[1, 2, 4], samples=3, seed=0)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert [s.position for s in result.single] == [(s, b) for s, b, _ in model.spec.blocks()]
    assert all(s.accuracy is not None for s in result.single)
    assert result.pool == [(0, 0), (0, 1), (1, 1), (2, 1)]
    assert len(result.random[1]) == 3 and len(result.random[4]) == 1  # C(4, 4) = 1: enumerated, not sampled
    plain_result = lesion_study(plain, batches, ks=[1], samples=2)
    kinds = {s.position: s.kind for s in plain_result.single}
    assert kinds[(1, 0)] is None and kinds[(0, 0)] == "bypass"
    assert [s.accuracy is None for s in plain_result.single] == [k is None for k in kinds.values()]
    with pytest.raises(ValueError, match="k=5 is outside 1..4"):
        lesion_study(model, batches, ks=[5])
    assert len(lesion_pool(reslab.model_spec("pyramidnet20_a48"), "lesionable")) == 9


# -- paths -------------------------------------------------------------------------------------------------
def test_path_length_distribution_of_n_residual_blocks_is_binomial():
    spec = reslab.model_spec("resnet20")  # 9 blocks, 2 of them downsampling (their shortcut counts as a skip)
    assert path_length_counts(spec) == [math.comb(9, k) for k in range(10)]
    assert path_length_distribution(spec) == pytest.approx([math.comb(9, k) / 2**9 for k in range(10)])
    assert path_length_counts(spec.plain()) == [0] * 9 + [1]
    # One plain block among residual ones shifts the binomial by one.
    first = spec.stages[0][1]
    mixed = spec.replace_block(0, 1, replace(first, shortcut="none"))
    assert path_length_counts(mixed) == [0] + [math.comb(8, k) for k in range(9)]
    assert sum(path_length_counts(reslab.model_spec("resnet1202"))) == 2**600


def test_routed_gradients_over_all_paths_sum_to_the_full_gradient():
    model = randomised("resnet14_b")  # 6 blocks: 64 routings, including projection shortcuts
    x, y = images(2), torch.tensor([1, 3])
    router = RoutedBackward(model, x, y)
    routings = [set(chosen) for k in range(7) for chosen in itertools.combinations(range(6), k)]
    total = sum(router.gradient(chosen) for chosen in routings)
    x0 = model.forward_stem(x).detach().requires_grad_(True)
    (full,) = torch.autograd.grad(F.cross_entropy(run_trunk(model, x0), y, reduction="sum"), x0)
    torch.testing.assert_close(total, full, rtol=1e-4, atol=1e-6)
    # Routing matters: the all-shortcut path and the all-branch path carry different gradients.
    assert not torch.allclose(router.gradient(set()), router.gradient(set(range(6))))


def test_gradient_by_path_length_reports_every_length():
    model = randomised("resnet14")
    result = gradient_by_path_length(model, images(2), torch.tensor([0, 1]), samples=2)
    assert result.lengths == list(range(7)) and result.counts == [math.comb(6, k) for k in range(7)]
    assert all(m > 0 for m in result.mean_magnitude)
    assert sum(result.total_magnitude) == pytest.approx(1.0)
    plain = gradient_by_path_length(randomised("plain_resnet14"), images(2), torch.tensor([0, 1]))
    assert plain.lengths == [6] and plain.counts == [1] and plain.total_magnitude == [1.0]


# -- effective depth ---------------------------------------------------------------------------------------
def _routed_jvp(model: reslab.ResNet, x0: torch.Tensor, branches: set[int]) -> torch.Tensor:
    """J x0 restricted to one routing: tangents flow only through the chosen branches and other shortcuts."""
    blocks = model.blocks()

    def route(i: int):
        def combine(block, branch_fn, skip):
            def branch():
                out, t = fwAD.unpack_dual(branch_fn())
                return fwAD.make_dual(out, t if i in branches else torch.zeros_like(t))

            if skip is not None and i in branches:
                skip = fwAD.make_dual(fwAD.unpack_dual(skip).primal, torch.zeros_like(skip))
            return original_combine(block, branch, skip)

        return combine

    with fwAD.dual_level(), override_combine({blk: route(i) for i, blk in enumerate(blocks)}):
        return fwAD.unpack_dual(run_trunk(model, fwAD.make_dual(x0, x0))).tangent


@pytest.mark.parametrize("name", ["resnet8", "wrn10_1"])
def test_output_split_over_path_lengths_is_exact(name):
    model = randomised(name)
    with torch.no_grad():
        x0 = model.forward_stem(images(2))
        parts = path_contributions(model, x0)  # (4, 2, 5) for 3 blocks
        assert parts.shape == (4, 2, 5)
        for k in range(4):
            expected = sum(_routed_jvp(model, x0, set(c)) for c in itertools.combinations(range(3), k))
            torch.testing.assert_close(parts[k], expected, rtol=1e-4, atol=1e-5)
    _, full = torch.func.jvp(lambda z: run_trunk(model, z), (x0,), (x0,))
    torch.testing.assert_close(parts.sum(0), full, rtol=1e-4, atol=1e-5)


def test_output_by_path_length_summary():
    result = output_by_path_length(randomised("resnet14"), images(2))
    assert result.lengths == list(range(7))
    assert sum(result.share) == pytest.approx(1.0)
    assert result.explained[-1] == pytest.approx(1.0, abs=1e-5)
    assert 0 < result.mean_length < 6
    plain = output_by_path_length(randomised("plain_resnet14"), images(2))
    assert plain.share[-1] == pytest.approx(1.0) and plain.depth_explaining(0.9) == 6


def test_branch_norms_relative_to_the_shortcut():
    model = randomised("resnet14")
    model.layer1[1].zero_init_()
    model.layer1[1].bn2.bias.data.zero_()
    norms = branch_norms(model, images(2))
    assert [n.position for n in norms] == [(s, b) for s, b, _ in model.spec.blocks()]
    assert norms[1].ratio == 0.0 and norms[1].branch == 0.0
    assert all(n.ratio > 0 for i, n in enumerate(norms) if i != 1)
    assert all(math.isnan(n.ratio) for n in branch_norms(randomised("plain_resnet14"), images(2)))


# -- linearisation -----------------------------------------------------------------------------------------
def test_a_fully_linearised_channel_passes_its_input_through_exactly():
    unit = LeakyUnit(3, per_channel=True)
    unit.linear[1] = True
    x = torch.randn(4, 3, 5, 5)
    out = unit(x)
    assert torch.equal(out[:, 1], x[:, 1])
    assert torch.equal(out[:, 0], torch.relu(x[:, 0])) and torch.equal(out[:, 2], torch.relu(x[:, 2]))
    with torch.no_grad():
        unit.slope[0] = 0.25
    assert torch.equal(unit(x)[:, 0], F.leaky_relu(x[:, 0], 0.25))
    out.sum().backward()
    assert unit.slope.grad[1] == 0, "a fixed linear channel takes no gradient"


@pytest.mark.parametrize("name, sites", [("resnet14", 13), ("plain_resnet14", 13), ("wrn10_1", 7),
                                         ("pyramidnet29_a48_bottleneck", 19), ("resnet50", 49)])
def test_linearizable_net_starts_as_the_trained_network(name, sites):
    model = randomised(name)
    x = images(2, size=32 if name == "resnet50" else 8)
    net = LinearizableNet(model, "channel", x)
    assert len(net.sites) == sites
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-6, atol=1e-6)
    assert net.remaining_units() == net.total_units and net.penalty().item() == net.total_units


def test_fully_linearised_network_is_affine():
    model = randomised("resnet8")
    net = LinearizableNet(model, "channel", images())
    assert net.linearize_to(0) == 0 and net.penalty().item() == 0
    a, b = images(seed=2), images(seed=3)
    with torch.no_grad():
        zero = torch.zeros_like(a)
        torch.testing.assert_close(net(a + b) + net(zero), net(a) + net(b), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(model(a + b) + model(zero), model(a) + model(b), atol=1e-3)


def test_linearize_to_picks_the_slopes_closest_to_linear():
    model = randomised("resnet8")
    channel = LinearizableNet(model, "channel", images())
    units = [u for _, u in channel.units()]
    with torch.no_grad():
        units[2].slope[:5] = 0.9
        units[4].slope[:3] = 0.95
    assert channel.linearize_to(channel.total_units - 8) == channel.total_units - 8
    assert units[2].linear[:5].all() and units[4].linear[:3].all()
    assert int(sum(u.linear.sum() for u in units)) == 8
    layer = LinearizableNet(model, "layer", images())
    widths = [s.channels for s in layer.sites]  # 16, 16, 16, 32, 32, 64, 64
    with torch.no_grad():
        [u for _, u in layer.units()][5].slope.fill_(0.5)
    remaining = layer.linearize_to(layer.total_units - 85)
    # The 64-wide layer goes first (closest to linear); then one 16-wide layer fits, and nothing else does
    # without going below the target.
    assert remaining == layer.total_units - 64 - 16
    assert [w for (_, u), w in zip(layer.units(), widths, strict=True) if u.linear.all()] == [16, 64]


def test_average_path_length():
    resnet = LinearizableNet(randomised("resnet14"), "layer", images())
    # stem ReLU (1) + 6 blocks x (branch ReLU on one of two summands (1/2) + ReLU after the sum (1)), and in
    # the two widening blocks the zero-padded half of the channels is reached through the branch only (+1/4)
    assert resnet.average_path_length() == pytest.approx(10.5)
    assert LinearizableNet(randomised("plain_resnet14"), "layer", images()).average_path_length() == 13.0
    # Pre-activation: the first BN-ReLU sits before the split, on both routes, only where a projection
    # shortcut takes the pre-activated input (blocks 2 and 3 here), plus the head's BN-ReLU.
    assert LinearizableNet(randomised("wrn10_1"), "layer", images()).average_path_length() == 5.0
    units = dict((site.name, unit) for site, unit in resnet.units())
    units["layer1.0.act1"].linear.fill_(True)  # a branch layer: -1/2
    units["layer1.0.act2"].linear.fill_(True)  # after the sum: -1
    assert resnet.average_path_length() == pytest.approx(9.0)
    channel = LinearizableNet(randomised("resnet14"), "channel", images())
    half = dict((site.name, unit) for site, unit in channel.units())["layer2.1.act1"]
    half.linear[: half.channels // 2] = True  # half the channels of a branch layer: -1/4
    assert channel.average_path_length() == pytest.approx(10.25)


def digits_batches(count: int, batch: int, offset: int = 0):
    data = load_digits()
    x = torch.tensor(data.images[offset:offset + count], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target[offset:offset + count])
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, count, batch)]


def test_linearization_study_compares_modes_at_equal_nonlinear_units():
    torch.manual_seed(0)
    model = reslab.create_model("resnet8", num_classes=10, in_chans=1)
    train, test = digits_batches(256, 64), digits_batches(128, 128, offset=1500)
    config = LinearizeConfig(penalty_epochs=1, finetune_epochs=1, penalty=1e-3)
    result = linearization_study(model, train, test, [0.5, 0.0], config, seed=0)
    assert result.total_units == 240 and result.baseline_apl == 6.0
    by = {(p.mode, p.target_fraction): p for p in result.points}
    assert set(by) == {(m, f) for m in ("layer", "channel") for f in (0.5, 0.0)}
    for f in (0.5, 0.0):
        assert by[("layer", f)].remaining_units == by[("channel", f)].remaining_units
    assert by[("layer", 0.5)].remaining_units >= 120 and by[("channel", 0.0)].apl == 0.0
    assert all(0.0 <= p.accuracy <= 1.0 for p in result.points)
    layer_sites = by[("layer", 0.5)].sites.values()
    assert set(layer_sites) <= {0.0, 1.0}, "layer mode linearises whole layers"
    # The accuracy right after each penalty phase (the recovery check) is kept and survives the JSON form.
    assert set(result.penalised_accuracy) == {"layer", "channel"}
    assert all(0.0 < a <= 1.0 for a in result.penalised_accuracy.values())
    assert LinearizeResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    with pytest.raises(ValueError, match="mode must be one of"):
        LinearizableNet(model, "neuron", train[0][0])


def test_depth_history_survives_a_checkpoint_round_trip():
    from reslab.analysis import EffectiveDepthHook, measure_depth

    hook = EffectiveDepthHook(probe_images=2)
    hook.history = [measure_depth(randomised("plain_resnet8"), images(2), 0),
                    measure_depth(randomised("resnet8"), images(2), 1)]
    state = json.loads(json.dumps(hook.state_dict(), allow_nan=False))  # strict JSON: plain ratios are null
    restored = EffectiveDepthHook()
    restored.load_state_dict(state)
    assert json.loads(json.dumps([s.to_dict() for s in restored.history])) == state["history"]
    assert math.isnan(restored.history[0].blocks[0].ratio) and restored.history[1].blocks[0].ratio > 0
