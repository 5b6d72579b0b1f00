"""Saving and loading: edited networks round-trip; bad files get one clear error and nothing runs."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import replace

import pytest
import torch

import reslab
from reslab.io import CheckpointError, load, load_state, read_spec, save, save_state


def pruned_model() -> torch.nn.Module:
    """A resnet20 with one block's internal width cut to 5 and one block removed: not a zoo network."""
    spec = reslab.model_spec("resnet20").with_classes(4)
    spec = spec.replace_block(0, 1, replace(spec.stages[0][1], widths=(5,)))
    stages = [list(s) for s in spec.stages]
    del stages[1][2]
    return reslab.build(replace(spec, stages=stages, name="resnet20_pruned"))


def test_edited_network_round_trips(tmp_path):
    model = pruned_model().eval()
    save(model, tmp_path / "p.safetensors")
    loaded = load(tmp_path / "p.safetensors").eval()
    assert loaded.spec == model.spec and loaded.spec.blocks_per_stage == [3, 2, 3]
    assert read_spec(tmp_path / "p.safetensors") == model.spec
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_truncated_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save(reslab.create_model("resnet8"), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"m\.safetensors: not a readable safetensors file"):
        load(path)


def test_pickle_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="evil.safetensors"):
        load(path)
    assert not marker.exists()


def test_mismatched_weights_and_spec(tmp_path):
    model = reslab.create_model("resnet8")
    tensors = dict(model.state_dict())
    tensors["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "bad.safetensors"
    save_state(path, tensors, {"reslab.spec": model.spec.to_json()})
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: weight 'layer1\.0\.conv1\.weight' has shape"):
        load(path)
    del tensors["fc.bias"]
    save_state(path, {k: v for k, v in tensors.items() if k != "layer1.0.conv1.weight"} | {
        "layer1.0.conv1.weight": model.layer1[0].conv1.weight}, {"reslab.spec": model.spec.to_json()})
    with pytest.raises(CheckpointError, match="missing key 'fc.bias'"):
        load(path)


def test_missing_or_broken_spec(tmp_path):
    path = tmp_path / "nospec.safetensors"
    save_state(path, {"w": torch.zeros(2)}, {})
    with pytest.raises(CheckpointError, match="no reslab spec"):
        load(path)
    save_state(path, {"w": torch.zeros(2)}, {"reslab.spec": '{"name": "x"}'})
    with pytest.raises(CheckpointError, match="spec: missing key 'head'"):
        load(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load(tmp_path / "absent.safetensors")


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    first = reslab.create_model("resnet8")
    save(first, path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("reslab.io.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save(reslab.create_model("resnet14"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind
    tensors, meta = load_state(path)
    assert "reslab.spec" in meta and set(tensors) == set(first.state_dict())


def test_a_checksum_of_tensors_and_metadata_is_verified_on_load(tmp_path):
    # Issue 20.7: one flipped bit in a model file loaded silently.
    path = tmp_path / "m.safetensors"
    save(reslab.create_model("resnet8"), path)
    _, meta = load_state(path)  # verified here, and the checksum key is not handed out
    assert "reslab.checksum" not in meta
    clean = path.read_bytes()
    header = int.from_bytes(clean[:8], "little") + 8
    for offset in (header + 5, len(clean) - 1):  # a weight's byte, the last byte
        damaged = bytearray(clean)
        damaged[offset] ^= 0x04
        path.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=r"m\.safetensors: checksum mismatch"):
            load(path)


def test_a_crafted_spec_is_checked_against_the_tensors_before_it_is_built(tmp_path, monkeypatch):
    # Issue 20.4: the spec was built first; widths of 10^9 asked for 36 GB before any check.
    import reslab.io as io_module

    model = reslab.create_model("resnet8")
    spec = model.spec.to_dict()
    spec["stages"][2][0]["widths"] = [16000]
    path = tmp_path / "crafted.safetensors"
    save_state(path, model.state_dict(), {"reslab.spec": json.dumps(spec)})
    built = []
    real_build = io_module.build
    monkeypatch.setattr(io_module, "build", lambda s: built.append(torch.empty(0).device.type) or real_build(s))
    with pytest.raises(CheckpointError, match=r"weight 'layer3\.0\.conv1\.weight' has shape \(64, 32, 3, 3\), the "
                                              r"spec needs \(16000, 32, 3, 3\)"):
        load(path)
    assert built == ["meta"]  # only ever built on the meta device, which allocates nothing


def test_non_finite_weights_are_refused(tmp_path):
    model = reslab.create_model("resnet8")
    with torch.no_grad():
        model.bn1.running_var[3] = float("inf")
    save(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="weight 'bn1.running_var' holds NaN or infinite values"):
        load(tmp_path / "m.safetensors")
