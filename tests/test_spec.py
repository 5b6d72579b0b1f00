"""The spec: validation errors name the field, serialisation round-trips, edits stay valid."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import reslab
from reslab.spec import BlockSpec, HeadSpec, NetSpec, SpecError, StemSpec


def tiny_spec() -> NetSpec:
    return NetSpec(
        "tiny",
        StemSpec("conv3", 1, 8),
        [[BlockSpec("basic", 8, (8,), 8)],
         [BlockSpec("bottleneck", 8, (4, 6), 16, stride=2, shortcut="projection")],
         [BlockSpec("pyramid_basic", 16, (20,), 20, stride=2, shortcut="pad_avgpool")]],
        HeadSpec(20, 3),
    )


def test_free_widths_build_and_run():
    model = reslab.build(tiny_spec())
    assert model.layer2[0].conv1.out_channels == 4 and model.layer2[0].conv2.out_channels == 6
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace_block(0, 0, replace(s.stages[0][0], in_chans=9)),
     r"stages\[0\]\[0\]\.in_chans: is 9 but the previous layer gives 8"),
    (lambda s: s.replace_block(1, 0, replace(s.stages[1][0], widths=(4,))),
     r"stages\[1\]\[0\]\.widths: a bottleneck block has 2"),
    (lambda s: s.replace_block(1, 0, replace(s.stages[1][0], shortcut="identity")),
     r"stages\[1\]\[0\]\.shortcut: identity needs stride 1"),
    (lambda s: s.replace_block(0, 0, replace(s.stages[0][0], stride=3)), r"stages\[0\]\[0\]\.stride"),
    (lambda s: s.replace_block(0, 0, replace(s.stages[0][0], survival=0.0)), r"stages\[0\]\[0\]\.survival"),
    (lambda s: s.replace_block(0, 0, replace(s.stages[0][0], kind="dense")), r"stages\[0\]\[0\]\.kind"),
    (lambda s: replace(s, head=HeadSpec(21, 3)), r"head\.in_chans: is 21 but the last stage gives 20"),
])
def test_validation_names_the_field(edit, message):
    with pytest.raises(SpecError, match=message):
        edit(tiny_spec())


def test_zero_pad_cannot_shrink():
    spec = tiny_spec()
    with pytest.raises(SpecError, match="zero-padded shortcut needs out_chans >= in_chans"):
        spec.replace_block(2, 0, replace(spec.stages[2][0], out_chans=12, widths=(12,)))


def test_json_and_yaml_round_trip(tmp_path):
    spec = tiny_spec().with_drop_path("stochastic_depth", 0.5)
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"spec{suffix}"
        spec.save(path)
        assert NetSpec.load(path) == spec


def test_from_dict_errors_name_the_key():
    data = tiny_spec().to_dict()
    data["stages"][1][0]["widht"] = 3
    with pytest.raises(SpecError, match=r"spec\.stages\[1\]\[0\]: unknown key 'widht'"):
        NetSpec.from_dict(data)
    data = tiny_spec().to_dict()
    data["stages"][0][0]["out_chans"] = "8"
    with pytest.raises(SpecError, match=r"spec\.stages\[0\]\[0\]\.out_chans: expected int, got str"):
        NetSpec.from_dict(data)
    data = tiny_spec().to_dict()
    del data["head"]
    with pytest.raises(SpecError, match="missing key 'head'"):
        NetSpec.from_dict(data)
    with pytest.raises(SpecError, match="f.json: not valid JSON"):
        NetSpec.from_json("{", where="f.json")


def test_linear_decay_of_survival():
    spec = reslab.model_spec("resnet20").with_drop_path("stochastic_depth", 0.5)
    survival = [b.survival for _, _, b in spec.blocks()]
    assert len(survival) == 9
    assert survival[-1] == pytest.approx(0.5)
    assert survival[0] == pytest.approx(1 - 1 / 9 * 0.5)
    assert all(a > b for a, b in zip(survival, survival[1:]))


def test_plain_twin_and_shortcut_override():
    spec = reslab.model_spec("pyramidnet20_a48")
    plain = spec.plain()
    assert plain.name == "plain_pyramidnet20_a48" and {b.shortcut for _, _, b in plain.blocks()} == {"none"}
    proj = reslab.model_spec("resnet20").with_shortcut("projection")
    assert [b.shortcut for _, _, b in proj.blocks()].count("projection") == 2


def test_spec_module_imports_no_torch():
    import subprocess
    import sys

    # reslab/__init__ pulls torch in; load spec.py on its own to check the module itself is torch-free.
    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('spec', "
            f"{json.dumps(reslab.spec.__file__)}); m = importlib.util.module_from_spec(s); "
            "sys.modules['spec'] = m; s.loader.exec_module(m); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_duplicate_keys_in_a_yaml_spec_are_an_error(tmp_path):
    # Issue 20.8: PyYAML keeps the last of two equal keys without a word.
    path = tmp_path / "s.yaml"
    reslab.model_spec("resnet8").save(path)
    path.write_text(path.read_text().replace("name: resnet8", "name: resnet8\nname: resnet14", 1))
    with pytest.raises(SpecError, match=r"s\.yaml: not valid YAML \(duplicate key 'name' at line"):
        NetSpec.load(path)
