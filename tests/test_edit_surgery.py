"""Structural edits (reslab.edit) on every block kind: exactness, spec/weight consistency."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from builder_nets import INPUT, SPECS, bottleneck_spec, images, outputs, randomised
from torch import nn

import reslab
from reslab.builder import WidthPenalty, removable_blocks
from reslab.edit import (
    SurgeryError,
    carry_weights,
    channel_layout,
    compose,
    copies_for,
    cut_channels,
    delete_block,
    delete_blocks,
    expanded_widths,
    insert_block,
    new_block_spec,
    set_branch_gain,
    take,
    why_not_deletable,
    widen_channels,
)
from reslab.edit.channels import BLOCK_LAYOUTS
from reslab.io import load, save
from reslab.layers.blocks import IN, INTERNAL, OUT

KINDS = list(SPECS)
TOL = dict(atol=1e-5, rtol=1e-5)


def assert_carried(old: nn.Module, edit) -> None:
    """Every tensor the map says was carried equals the old tensor cut by the map's index."""
    old_state, new_state = old.state_dict(), edit.model.state_dict()
    assert set(edit.weights) == set(new_state)
    for key, carry in edit.weights.items():
        if carry is not None:
            torch.testing.assert_close(new_state[key], take(old_state[carry.source], carry.index))


def assert_spec_exact(model: reslab.ResNet) -> None:
    """``model.spec`` rebuilds a module that takes the model's state dict strictly."""
    twin = reslab.build(reslab.NetSpec.from_json(model.spec.to_json()))
    twin.load_state_dict(model.state_dict(), strict=True)


def silence_block(model: reslab.ResNet, stage: int, index: int) -> None:
    set_branch_gain(model.stages()[stage][index], 0.0)


def with_removable_block(model: reslab.ResNet) -> tuple[reslab.ResNet, int, int]:
    """A removable block of ``model``; pyramids widen at every block, so give them one first."""
    if not removable_blocks(model):
        model = insert_block(model, 1, 1, gain=0.8).model
    stage, index = removable_blocks(model)[-1]
    return model, stage, index


# -- insertion -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("width", [1.0, 0.5])
def test_inserted_block_starts_as_the_identity(kind: str, train: bool, width: float) -> None:
    model, x = randomised(SPECS[kind]()), images()
    before = outputs(model, x, train)
    for stage in range(len(model.spec.stages)):
        for index in (1, len(model.spec.stages[stage])):
            edit = insert_block(model, stage, index, width=width)
            assert edit.model.spec.blocks_per_stage[stage] == model.spec.blocks_per_stage[stage] + 1
            new, neighbour = edit.model.spec.stages[stage][index], model.spec.stages[stage][index - 1]
            assert (new.kind, new.stride, new.shortcut) == (neighbour.kind, 1, "identity")
            assert new.in_chans == new.out_chans == neighbour.out_chans
            assert new.widths == new_block_spec(model.spec, stage, index, width).widths
            torch.testing.assert_close(outputs(edit.model, x, train), before, **TOL)
            assert_carried(model, edit)
            assert_spec_exact(edit.model)
            # The new block's own tensors are fresh, everything else is carried.
            fresh = {k for k, c in edit.weights.items() if c is None}
            assert fresh and all(k.startswith(f"layer{stage + 1}.{index}.") for k in fresh)


@pytest.mark.parametrize("kind", ["basic", "wide_basic", "pyramid_bottleneck"])
def test_insert_gain_sets_the_new_branch_scale(kind: str) -> None:
    model, x = randomised(SPECS[kind]()), images()
    edit = insert_block(model, 1, 1, gain=0.5)
    assert not torch.allclose(outputs(edit.model, x), outputs(model, x), atol=1e-4)
    producer = getattr(edit.model.stages()[1][1], BLOCK_LAYOUTS[kind].out_producer)
    if isinstance(producer, nn.BatchNorm2d):
        assert torch.all(producer.weight == 0.5) and torch.all(producer.bias == 0)


def test_new_block_copies_its_neighbour_and_scales_widths() -> None:
    spec = bottleneck_spec()
    after_first = new_block_spec(spec, 1, 1)  # after the downsampling block: copies it at its output width
    assert (after_first.in_chans, after_first.widths, after_first.out_chans) == (32, (8, 8), 32)
    before_first = new_block_spec(spec, 1, 0)  # before it: 16 channels, widths scaled by 16/32
    assert (before_first.in_chans, before_first.widths, before_first.out_chans) == (16, (4, 4), 16)
    half = new_block_spec(spec, 1, 1, width=0.5)  # ResBuilder's default: half the neighbour's inner widths
    assert (half.in_chans, half.widths, half.out_chans) == (32, (4, 4), 32)
    assert new_block_spec(spec, 1, 0, width=0.1).widths == (1, 1)  # never below one channel
    with pytest.raises(SurgeryError, match="index 5 is out of range for stage 1"):
        new_block_spec(spec, 1, 5)
    with pytest.raises(SurgeryError, match="stage 7 does not exist"):
        new_block_spec(spec, 7, 0)


# -- deletion ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("train", [False, True])
def test_deleting_a_silenced_block_leaves_outputs_unchanged(kind: str, train: bool) -> None:
    model, x = randomised(SPECS[kind]()), images()
    model, stage, index = with_removable_block(model)
    live = outputs(model, x, train)
    silence_block(model, stage, index)
    before = outputs(model, x, train)
    assert not torch.allclose(before, live, atol=1e-4)  # the block mattered until it was silenced
    edit = delete_block(model, stage, index)
    assert edit.model.spec.blocks_per_stage[stage] == model.spec.blocks_per_stage[stage] - 1
    torch.testing.assert_close(outputs(edit.model, x, train), before, **TOL)
    assert all(c is not None for c in edit.weights.values())  # nothing new, everything carried
    assert_carried(model, edit)
    assert_spec_exact(edit.model)


def test_deleting_renumbers_later_blocks() -> None:
    model = randomised(reslab.make_spec("resnet20"))  # three blocks per stage
    edit = delete_blocks(model, [(0, 1), (2, 2)])
    assert edit.model.spec.blocks_per_stage == [2, 3, 2]
    assert edit.weights["layer1.1.conv1.weight"].source == "layer1.2.conv1.weight"
    assert edit.weights["layer3.1.bn2.bias"].source == "layer3.1.bn2.bias"
    torch.testing.assert_close(edit.model.layer1[1].conv2.weight, model.layer1[2].conv2.weight)


@pytest.mark.parametrize("kind", KINDS)
def test_downsampling_blocks_cannot_be_deleted(kind: str) -> None:
    model = randomised(SPECS[kind]())
    spec = model.spec
    assert spec.stages[1][0].stride == 2
    assert "shortcut (only identity blocks" in why_not_deletable(spec, 1, 0)
    assert (1, 0) not in removable_blocks(model)
    with pytest.raises(SurgeryError, match=r"block layer2\.0 cannot be removed"):
        delete_block(model, 1, 0)


def test_a_post_activation_block_after_a_linear_stem_is_not_removable() -> None:
    spec = reslab.make_spec("resnet14")
    spec = replace(spec, stem=replace(spec.stem, act=False))
    assert "ReLU" in why_not_deletable(spec, 0, 0)
    assert why_not_deletable(spec, 0, 1) is None  # its input comes out of a ReLU'd block


def test_delete_names_the_missing_block() -> None:
    model = randomised(SPECS["basic"]())
    with pytest.raises(SurgeryError, match="block 4 of stage 0 does not exist"):
        delete_block(model, 0, 4)


# -- channel groups and cuts -----------------------------------------------------------------------------
def test_identity_blocks_of_a_stage_share_one_channel_group() -> None:
    layout = channel_layout(reslab.make_spec("resnet20"))  # option A: zero-padded downsampling
    assert layout.block_sites[(0, 0)]["in"] == layout.block_sites[(0, 2)]["out"] == ("stem",)
    # A zero-padded shortcut passes the 16 stem channels on and appends 16 new ones.
    assert layout.block_sites[(1, 0)]["out"] == ("stem", "layer2.0.out")
    assert layout.widths["layer2.0.out"] == 16
    assert layout.head_site == ("stem", "layer2.0.out", "layer3.0.out")
    projected = channel_layout(reslab.make_spec("resnet20_b"))
    assert projected.block_sites[(1, 0)]["out"] == ("layer2.0.out",)
    assert projected.widths["layer2.0.out"] == 32
    # Every block's internal width is its own group.
    assert sum(1 for g in layout.widths if g not in layout.stream) == 9


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("train", [False, True])
def test_cutting_dead_channels_leaves_outputs_unchanged(kind: str, train: bool) -> None:
    model, x = randomised(SPECS[kind]()), images()
    widths = WidthPenalty(model, INPUT)
    layout = widths.layout
    modules = dict(model.named_modules())
    chosen = {}
    with torch.no_grad():  # kill two channels of every group by zeroing what writes or re-biases them
        for group, width in layout.widths.items():
            dead = [width - 1] if width < 4 else [0, width - 2]
            chosen[group] = dead
            for member in layout.members[group]:
                module = modules[member.module]
                for c in dead:
                    row = member.offset + c
                    if member.kind == "conv":
                        module.weight[row] = 0
                    elif member.kind == "consumer":
                        module.bias[row] = module.running_mean[row] = 0
                    else:  # a ReLU'd BN channel is dead with any negative shift
                        module.weight[row] = 0
                        module.bias[row] = -0.3 if member.kind == "bn_relu" else 0.0
    before = outputs(model, x, train)
    keep = widths.keep(model, threshold=0.0)
    assert {g: sorted(set(range(layout.widths[g])) - set(k)) for g, k in keep.items()} == chosen
    edit = cut_channels(model, keep)
    torch.testing.assert_close(outputs(edit.model, x, train), before, **TOL)
    assert_carried(model, edit)
    assert_spec_exact(edit.model)
    new_layout = channel_layout(edit.model.spec)
    assert new_layout.widths == {g: w - len(chosen[g]) for g, w in layout.widths.items()}
    assert sum(p.numel() for p in edit.model.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_cutting_a_live_channel_changes_the_output(kind: str) -> None:
    model, x = randomised(SPECS[kind]()), images()
    stream = next(iter(channel_layout(model.spec).stream))
    edit = cut_channels(model, {stream: [1, 2, 3]})
    assert not torch.allclose(outputs(edit.model, x), outputs(model, x), atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("train", [False, True])
def test_widening_leaves_outputs_unchanged_and_copies_grow_apart(kind: str, train: bool) -> None:
    model, x = randomised(SPECS[kind]()), images()
    layout = channel_layout(model.spec)
    copies = {g: [0, w - 1, 0] for g, w in layout.widths.items()}  # every group; a channel may go twice
    before = outputs(model, x, train)
    edit = widen_channels(model, copies)
    new_layout = channel_layout(edit.model.spec)
    assert new_layout.widths == {g: w + 3 for g, w in layout.widths.items()}
    torch.testing.assert_close(outputs(edit.model, x, train), before, **TOL)
    assert_spec_exact(edit.model)
    old_state, new_state = model.state_dict(), edit.model.state_dict()
    readers = {conv.module + ".weight" for conv in layout.convs if conv.in_site}
    for key, carry in edit.weights.items():  # written and normalised values are copied exactly
        if key not in readers:
            torch.testing.assert_close(new_state[key], take(old_state[carry.source], carry.index))
    # Where a channel is read, the source and its copies share its weights: unequal shares that add up.
    modules, old_modules = dict(edit.model.named_modules()), dict(model.named_modules())
    for conv in new_layout.convs:
        offsets, old_offsets = new_layout.offsets(conv.in_site or ()), layout.offsets(conv.in_site or ())
        for group in conv.in_site or ():
            start, width = offsets[group], layout.widths[group]
            weight = modules[conv.module].weight.detach()
            original = old_modules[conv.module].weight.detach()[:, old_offsets[group]]
            rows = edit.weights[conv.module + ".weight"].index  # its output channels may be copies too
            original = take(original, rows[:1])
            twins = weight[:, [start, start + width, start + width + 2]]
            torch.testing.assert_close(twins.sum(dim=1), original, **TOL)
            assert not torch.allclose(twins[:, 0], twins[:, 1])
    # The unequal shares give a copy a gradient of its own where it is written.
    new = edit.model.train()
    new(x).square().sum().backward()
    stem = modules["conv1"].weight.grad
    assert not torch.allclose(stem[0], stem[layout.widths["stem"]])


def test_widening_maps_each_copy_to_its_source() -> None:
    model = randomised(SPECS["basic"]())
    edit = widen_channels(model, {"stem": [3, 3]})
    assert edit.weights["bn1.weight"].index[0].tolist() == [*range(16), 3, 3]
    state = edit.model.state_dict()
    torch.testing.assert_close(state["bn1.running_var"][16:], model.bn1.running_var[[3, 3]])
    cut = cut_channels(edit.model, {"stem": list(range(16))})
    assert compose(edit.weights, cut.weights)["bn1.weight"].index[0].tolist() == list(range(16))


def test_widen_rejects_bad_copies() -> None:
    model = randomised(SPECS["basic"]())
    with pytest.raises(SurgeryError, match="unknown channel group 'nope'"):
        widen_channels(model, {"nope": [0]})
    with pytest.raises(SurgeryError, match="group 'stem' has 16 channels, channel 16 does not exist"):
        widen_channels(model, {"stem": [16]})


def test_copies_for_takes_the_strongest_channels_first() -> None:
    layout = channel_layout(SPECS["basic"]())
    strength = {"stem": torch.arange(16.0)}
    assert copies_for({"stem": 20}, layout, strength) == {"stem": [15, 14, 13, 12]}
    assert copies_for({"stem": 35}, layout)["stem"] == [*range(16), 0, 1, 2]
    assert copies_for({"stem": 16}, layout) == {}


@pytest.mark.parametrize("kind", ["basic", "bottleneck", "pyramid_basic"])
def test_expanded_widths_fill_the_budget_with_one_factor(kind: str) -> None:
    from reslab.profile import profile
    model = randomised(SPECS[kind]())
    start = profile(model, INPUT).macs
    layout = channel_layout(model.spec)
    widths = expanded_widths(model, 1.6 * start, INPUT)
    grown = widen_channels(model, copies_for(widths, layout)).model
    cost = profile(grown, INPUT).macs
    assert 1.3 * start < cost <= 1.6 * start
    ratios = [widths.get(g, w) / w for g, w in layout.widths.items() if w >= 8]
    assert max(ratios) - min(ratios) < 0.2  # one factor, up to rounding
    assert expanded_widths(model, start, INPUT) == {}  # no room: nothing grows


def test_cut_of_a_residual_stream_narrows_every_block_it_runs_through() -> None:
    model = randomised(reslab.make_spec("resnet20"))
    edit = cut_channels(model, {"stem": list(range(10)), "layer1.1.w0": [0, 5]})
    spec = edit.model.spec
    assert spec.stem.out_chans == 10
    assert [(b.in_chans, b.widths, b.out_chans) for b in spec.stages[0]] == [(10, (16,), 10), (10, (2,), 10),
                                                                               (10, (16,), 10)]
    # Zero padding now appends 16 channels to 10: the downsampling block maps 10 -> 26.
    assert (spec.stages[1][0].in_chans, spec.stages[1][0].out_chans) == (10, 26)
    assert spec.head.in_chans == 10 + 16 + 32


@pytest.mark.parametrize(("keep", "message"), [
    ({"nope": [0]}, "unknown channel group 'nope'"),
    ({"stem": []}, "group 'stem' would keep no channel"),
    ({"stem": [0, 16]}, "group 'stem' has 16 channels, channel 16 does not exist"),
    ({"stem": [1, 1]}, "group 'stem' lists a channel twice"),
])
def test_cut_rejects_bad_channel_lists(keep: dict, message: str) -> None:
    with pytest.raises(SurgeryError, match=message):
        cut_channels(randomised(SPECS["basic"]()), keep)


# -- chains of edits, round trips, optimizer state --------------------------------------------------------
def test_composed_maps_follow_a_chain_of_edits(tmp_path) -> None:
    model, x = randomised(SPECS["bottleneck"]()), images()
    first = insert_block(model, 0, 2, gain=0.3)
    second = cut_channels(first.model, {"layer1.0.out": [0, 3, 4, 9, 15], "layer2.0.w1": [1, 2, 3]})
    third = delete_block(second.model, 1, 1)
    weights = compose(compose(first.weights, second.weights), third.weights)
    old_state = model.state_dict()
    for key, value in third.model.state_dict().items():
        carry = weights[key]
        if carry is None:
            assert key.startswith("layer1.2.")  # the inserted block
        else:
            torch.testing.assert_close(value, take(old_state[carry.source], carry.index))
    # The edited network saves and loads with its spec like any other.
    save(third.model, tmp_path / "edited.safetensors")
    loaded = load(tmp_path / "edited.safetensors")
    assert loaded.spec == third.model.spec
    torch.testing.assert_close(outputs(loaded, x), outputs(third.model, x))


@pytest.mark.parametrize("kind", KINDS)
def test_every_block_declares_the_layout_of_its_layers(kind):
    """A block class's ``layout`` names exactly its parameterised branch layers, each with the widths its
    tensors have, and ``zero_init_`` silences the branch at ``branch_end``: the edits read nothing else
    about a block, so a new block kind is one class in reslab.layers.blocks."""
    model = reslab.build(SPECS[kind]())  # freshly initialised: BN shifts are 0, as zero_init_ expects
    for block in model.blocks():
        spec, layout = block.spec, type(block).layout
        sizes = {IN: spec.in_chans, OUT: spec.out_chans, **dict(zip(INTERNAL, spec.widths, strict=False))}
        own = {name for name, m in block.named_modules() if name and not name.startswith("downsample")
               and any(True for _ in m.parameters(recurse=False))}
        assert own == {name for name, _ in layout.modules}
        for name, dims in layout.modules:
            weight = block.get_submodule(name).weight
            assert tuple(weight.shape[:len(dims)]) == tuple(sizes[d] for d in dims), (kind, name)
        assert {layout.internal_bns[k] for k in range(len(spec.widths))} <= own
        assert block.branch_end() is block.get_submodule(layout.out_producer)
        x = torch.randn(2, spec.in_chans, 8, 8)
        block.eval().zero_init_()
        skip = x if block.downsample is None else block.downsample(
            torch.relu(block.bn1(x)) if spec.preact and spec.shortcut == "projection" else x)
        if block.downsample is not None:
            expected = torch.relu(skip) if type(block).post_act else skip
            torch.testing.assert_close(block(x), expected, **TOL)


def test_carry_weights_by_name_strict_or_skipping_what_does_not_fit():
    """The state-dict level carry: strict by default (a tensor that does not fit is an error naming both
    keys); with skip_mismatch a new head keeps its own initialisation and is mapped to None, the way a
    fine-tuning start from another task's weights needs it."""
    source = randomised(SPECS["basic"]())
    target = reslab.build(replace(source.spec, head=replace(source.spec.head, num_classes=5)))
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(SurgeryError, match="carrying 'fc.weight' into 'fc.weight': shape"):
        carry_weights(target, source.state_dict())
    assert all(torch.equal(v, fresh[k]) for k, v in target.state_dict().items())  # untouched by the error
    weights = carry_weights(target, source.state_dict(), skip_mismatch=True)
    assert sorted(k for k, c in weights.items() if c is None) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(target.fc.weight, fresh["fc.weight"])
    for key, value in target.state_dict().items():
        if weights[key] is not None:
            assert torch.equal(value, source.state_dict()[key]), key
    state = dict(source.state_dict())
    del state["layer1.0.bn1.running_var"]
    with pytest.raises(SurgeryError, match="the source has no 'layer1.0.bn1.running_var'"):
        carry_weights(source, state)
