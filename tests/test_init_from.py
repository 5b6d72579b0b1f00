"""model.init_from: torchvision/timm state dicts (.pth, bare .safetensors), reslab files and checkpoints; a
strict backbone, a new classifier where the classes differ, and what loaded said on the console."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import reslab
from reslab.io import CheckpointError
from reslab.train import Trainer, load_config


def tiny(*overrides: str):
    return load_config(None, ["train.epochs=1", "train.batch_size=64", "data.train_per_class=30",
                              "train.progress=none", "output.tensorboard=false", *overrides])


def assert_backbone_equal(model: torch.nn.Module, state: dict[str, torch.Tensor], skip=("conv1.weight",)) -> None:
    own = model.state_dict()
    backbone = [k for k in own if not k.startswith("fc.") and k not in skip]
    assert backbone and [k for k in backbone if not torch.equal(own[k], state[k])] == []


def test_a_torchvision_pth_starts_a_run_with_a_new_head(tmp_path, capsys):
    theirs = torchvision.models.resnet18(weights=None)
    torch.save(theirs.state_dict(), tmp_path / "tv_resnet18.pth")
    trainer = Trainer(tiny("model.name=resnet18", f"model.init_from={tmp_path / 'tv_resnet18.pth'}"),
                      run_dir=tmp_path / "run")
    state = theirs.state_dict()
    assert_backbone_equal(trainer.model, state)
    # Digits are grey: the RGB stem is summed over its input channels (as timm adapts a stem).
    torch.testing.assert_close(trainer.model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert trainer.model.fc.weight.shape == (10, 512)
    out = capsys.readouterr().out
    assert "loaded 120 of 122 tensors; new classifier (1000 classes in the file, 10 here)" in out


def test_timm_names_and_wrapper_prefixes_in_a_bare_safetensors_file(tmp_path):
    source = reslab.create_model("resnet8", num_classes=10, in_chans=1)
    state = {("module." + k).replace("module.fc.", "module.head.fc."): v for k, v in source.state_dict().items()}
    save_file(state, tmp_path / "timm_style.safetensors")
    trainer = Trainer(tiny(f"model.init_from={tmp_path / 'timm_style.safetensors'}"), run_dir=tmp_path / "run")
    own = trainer.model.state_dict()
    assert [k for k, v in source.state_dict().items() if not torch.equal(own[k], v)] == []  # head too: same shape


def test_another_architecture_is_an_error_naming_the_counts(tmp_path):
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(CheckpointError) as err:
        Trainer(tiny("model.name=resnet18", f"model.init_from={tmp_path / 'r50.pth'}"), run_dir=tmp_path / "run")
    message = str(err.value)
    assert "r50.pth: 23 of the model's 120 backbone tensors do not load (0 missing, 23 with another shape)" in message
    assert "and 198 of the file's have no place in it; first: 'layer1.0.conv1.weight' is (64, 64, 1, 1) in the " \
        "file, (64, 64, 3, 3)" in message
    assert "model.init_strict: false" in message


def test_init_strict_false_loads_what_matches_and_says_so(tmp_path, capsys):
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    Trainer(tiny("model.name=resnet18", f"model.init_from={tmp_path / 'r50.pth'}", "model.init_strict=false"),
            run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert "r50.pth: loaded 97 of 122 tensors" in out
    assert "23 backbone tensor(s) left at their initialisation (init_strict: false)" in out
    assert "198 of the file's tensors have no place in this model (ignored)" in out


def test_a_reslab_checkpoint_of_other_classes_gets_a_new_head(tmp_path):
    source = reslab.create_model("resnet8", num_classes=10, in_chans=1)
    record = {"input_size": [1, 8, 8], "mean": [0.5], "std": [0.25], "class_names": list("abcdefghij")}
    reslab.io.save(source, tmp_path / "letters.safetensors", preprocess=record)
    trainer = Trainer(tiny(f"model.init_from={tmp_path / 'letters.safetensors'}"), run_dir=tmp_path / "run")
    assert_backbone_equal(trainer.model, source.state_dict(), skip=())
    assert not torch.equal(trainer.model.fc.weight, source.fc.weight)  # ten classes, but others
    trainer.fit()
    again = Trainer(tiny(f"model.init_from={tmp_path / 'run' / 'last.safetensors'}", "seed=3"),
                    run_dir=tmp_path / "again")
    assert torch.equal(again.model.fc.weight, trainer.model.fc.weight)  # a checkpoint of the same classes


def test_a_non_tensor_pth_is_refused(tmp_path):
    torch.save({"state_dict": {"conv1.weight": [1, 2]}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd.pth: expected a state dict of tensors, but 'conv1.weight' is list"):
        Trainer(tiny(f"model.init_from={tmp_path / 'odd.pth'}"), run_dir=tmp_path / "run")
