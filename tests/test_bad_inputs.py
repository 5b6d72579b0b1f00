"""Every bad input of issue 20's campaign ends in one clear line on stderr and a non-zero exit status, never a
traceback: each case below builds the input in a temporary folder and runs the ``reslab`` command on it."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import reslab
from reslab import cli
from reslab.io import load_state, save, save_state

TINY = ["--set", "train.batch_size=64", "--set", "data.train_per_class=30", "--set", "train.progress=none",
        "--set", "output.tensorboard=false", "--set", "train.epochs=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished two-epoch digits run that the cases copy and damage."""
    out = tmp_path_factory.mktemp("trained")
    assert cli.main(["train", *TINY, "--out", str(out), "--set", "name=run"]) == 0
    return out / "run"


def copy_run(trained: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(trained, tmp / "run"))


def resave_state(path: Path, edit: Callable[[dict], None]) -> None:
    """Rewrite a checkpoint's training state as a crafted file would (with a matching checksum)."""
    tensors, meta = load_state(path)
    state = json.loads(meta["reslab.train_state"])
    edit(state)
    save_state(path, tensors, {**meta, "reslab.train_state": json.dumps(state)})


def out_is_a_file(tmp, trained):
    (tmp / "file").write_text("x")
    return ["train", *TINY, "--out", str(tmp / "file")], "cannot create the run folder"


def out_cannot_be_created(tmp, trained):
    return ["train", *TINY, "--out", str(tmp / ("d" * 300))], "cannot create the run folder"


def name_of_300_characters(tmp, trained):
    return ["train", *TINY, "--out", str(tmp), "--set", "name=" + "n" * 300], "name: a folder name has at most"


def nul_in_a_name(tmp, trained):
    (tmp / "c.yaml").write_text('name: "a\\0b"\n')
    return ["train", "--config", str(tmp / "c.yaml"), "--out", str(tmp)], "a NUL character cannot be part"


def nul_in_data_dir(tmp, trained):
    return (["train", *TINY, "--set", 'data.data_dir="a\\0b"', "--set", "data.name=mnist"],
            "data.data_dir: a NUL character cannot be part of a name or path")


def config_not_utf8(tmp, trained):
    (tmp / "c.yaml").write_bytes(b"name: caf\xe9\n")
    return ["train", "--config", str(tmp / "c.yaml")], "not UTF-8 text (byte 0xe9"


def duplicate_yaml_key(tmp, trained):
    (tmp / "c.yaml").write_text("optim:\n  lr: 0.1\n  lr: 0.01\n")
    return ["train", "--config", str(tmp / "c.yaml")], "duplicate key 'lr' at line 3"


def seed_of_2_to_the_63(tmp, trained):
    return ["train", *TINY, "--out", str(tmp), "--set", f"seed={2**63}"], "seed: must be in [0, 2**63)"


def cuda_without_cuda(tmp, trained):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return ["train", *TINY, "--out", str(tmp), "--set", "train.device=cuda"], "torch sees no CUDA device"


def spec_json_nested_100000_deep(tmp, trained):
    (tmp / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    return ["train", *TINY, "--out", str(tmp), "--set", f"model.spec={tmp / 'deep.json'}"], "nested too deeply"


def zoo_width_100000(tmp, trained):
    return ["train", *TINY, "--set", "model.name=wrn16_100000"], "widening factor k must be at most 32"


def zoo_depth_600002(tmp, trained):
    return ["train", *TINY, "--set", "model.name=resnet600002"], "depth must be at most 2000"


def image_size_100000(tmp, trained):
    return ["train", *TINY, "--set", "data.image_size=100000"], "data.image_size: must be in [1, 4096]; got 100000"


def empty_config_yaml_without_checkpoint(tmp, trained):
    run = copy_run(trained, tmp)
    (run / "last.safetensors").unlink()
    (run / "config.yaml").write_text("")
    return ["train", "--resume", str(run)], "config.yaml is empty (damaged by an interrupted write?)"


def fewer_epochs_than_trained(tmp, trained):
    return ["train", "--resume", str(copy_run(trained, tmp)), "--set", "train.epochs=1"], "train.epochs is 1 but"


def epoch_counter_not_an_integer(tmp, trained):
    run = copy_run(trained, tmp)
    resave_state(run / "last.safetensors", lambda s: s.update(epoch="2"))
    return ["train", "--resume", str(run)], "training state field 'epoch' must be an integer"


def epoch_counter_negative(tmp, trained):
    run = copy_run(trained, tmp)
    resave_state(run / "last.safetensors", lambda s: s.update(epoch=-5))
    return ["train", "--resume", str(run)], "training state field 'epoch' must be an integer in [0"


def epoch_counter_of_10_to_the_9(tmp, trained):
    run = copy_run(trained, tmp)
    resave_state(run / "last.safetensors", lambda s: s.update(epoch=10**9))
    return ["train", "--resume", str(run), "--set", f"train.epochs={10**6}"], "claims 1000000000 finished epochs"


def optimizer_state_damaged(tmp, trained):
    run = copy_run(trained, tmp)
    resave_state(run / "last.safetensors", lambda s: s["optimizer"].update(param_groups="x"))
    return ["train", "--resume", str(run), "--set", "train.epochs=3"], "training state field 'optimizer'"


def scheduler_state_damaged(tmp, trained):
    run = copy_run(trained, tmp)
    resave_state(run / "last.safetensors", lambda s: s.update(scheduler={"last_epoch": "soon"}))
    return ["train", "--resume", str(run), "--set", "train.epochs=3"], "cannot restore the training state"


def spec_weights_mismatch_on_resume(tmp, trained):
    run = copy_run(trained, tmp)
    tensors, meta = load_state(run / "last.safetensors")
    meta["reslab.spec"] = reslab.model_spec("resnet14").with_classes(10).with_in_chans(1).to_json()
    save_state(run / "last.safetensors", tensors, meta)
    return ["train", "--resume", str(run), "--set", "train.epochs=3"], "weights do not match the spec"


def flipped_bit_on_eval(tmp, trained):
    run = copy_run(trained, tmp)
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-7] ^= 0x01
    (run / "model.safetensors").write_bytes(bytes(data))
    return ["eval", str(run / "model.safetensors")], "checksum mismatch"


def nan_weights_on_eval(tmp, trained):
    run = copy_run(trained, tmp)
    model = reslab.load(run / "model.safetensors")
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    save(model, run / "model.safetensors")
    return ["eval", str(run / "model.safetensors")], "weight 'fc.weight' holds NaN or infinite values"


def widths_of_10_to_the_9_in_a_checkpoint(tmp, trained):
    run = copy_run(trained, tmp)
    tensors, meta = load_state(run / "model.safetensors")
    spec = json.loads(meta["reslab.spec"])
    spec["stages"][2][0]["widths"] = [10**9]
    save_state(run / "model.safetensors", tensors, {**meta, "reslab.spec": json.dumps(spec)})
    return ["eval", str(run / "model.safetensors")], "at most 16384 channels per layer"


def widths_in_bounds_that_the_tensors_lack(tmp, trained):
    run = copy_run(trained, tmp)
    tensors, meta = load_state(run / "last.safetensors")
    spec = json.loads(meta["reslab.spec"])
    spec["stages"][2][0]["widths"] = [16000]
    save_state(run / "last.safetensors", tensors, {**meta, "reslab.spec": json.dumps(spec)})
    return ["train", "--resume", str(run), "--set", "train.epochs=3"], "the spec needs (16000,"


def run_folder_in_use(tmp, trained):
    from reslab.train.rundir import RunLock

    run = copy_run(trained, tmp)
    tmp.lock = RunLock(run)  # held until the case's folder object is gone
    return ["train", "--resume", str(run), "--set", "train.epochs=3"], "is in use by another reslab process"


def overwrite_of_a_live_run(tmp, trained):
    from reslab.train.rundir import RunLock

    run = copy_run(trained, tmp)
    tmp.lock = RunLock(run)
    return ["train", *TINY, "--out", str(tmp), "--set", "name=run", "--overwrite"], "is in use by another"


def foreign_files_in_the_run_folder(tmp, trained):
    (tmp / "run").mkdir()
    (tmp / "run" / "report.md").write_text("mine")
    return ["train", *TINY, "--out", str(tmp), "--set", "name=run"], "holds report.md, which reslab did not write"


def disk_full_at_a_checkpoint(tmp, trained, monkeypatch):
    import reslab.io

    real, calls = reslab.io.save_file, []

    def save_file(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(reslab.io, "save_file", save_file)
    return ["train", *TINY, "--out", str(tmp)], "No space left on device; the previous checkpoint is kept"


def read_only_folder_during_a_run(tmp, trained, monkeypatch):
    import reslab.train.rundir as rundir

    real = rundir.append_jsonl

    def append_jsonl(path, row):
        if path.name == "metrics.jsonl":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        real(path, row)

    monkeypatch.setattr(rundir, "append_jsonl", append_jsonl)
    return ["train", *TINY, "--out", str(tmp)], "metrics.jsonl: Read-only file system"


def cifar_batch_with_zero_strides(tmp, trained, write_cifar):
    images = np.zeros((10, 3, 32, 32), dtype=np.uint8)
    folder = write_cifar(tmp, "cifar10", [(images, [0] * 10)] * 5, (images, [0] * 10), [f"c{i}" for i in range(10)])

    class Dtype:
        def __reduce__(self):
            return np.dtype, ("u1",)

    class Phantom:  # 3,000 images declared over 8 bytes
        def __reduce__(self):
            return np.ndarray, ((3000, 3072), Dtype(), b"\x01" * 8, 0, (0, 0))

    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Phantom(), b"labels": [0] * 3000}, f, protocol=2)
    return (["train", *TINY, "--out", str(tmp), "--set", "data.name=cifar10", "--set", f"data.data_dir={tmp}"],
            "'data' must be a contiguous uint8 array")


def class_folder_linking_to_its_parent(tmp, trained, write_image):
    for label in ("a", "b"):
        for i in range(4):
            write_image(tmp / "images" / label / f"{i}.png", torch.full((3, 8, 8), 40 * i, dtype=torch.uint8))
    os.symlink(tmp / "images", tmp / "images" / "loop")
    return (["train", *TINY, "--out", str(tmp), "--set", "data.name=imagefolder", "--set",
             f"data.data_dir={tmp / 'images'}"], "is a symlink to")


CASES = [
    out_is_a_file, out_cannot_be_created, name_of_300_characters, nul_in_a_name, nul_in_data_dir, config_not_utf8,
    duplicate_yaml_key, seed_of_2_to_the_63, cuda_without_cuda, spec_json_nested_100000_deep, zoo_width_100000,
    zoo_depth_600002, image_size_100000, empty_config_yaml_without_checkpoint, fewer_epochs_than_trained,
    epoch_counter_not_an_integer, epoch_counter_negative, epoch_counter_of_10_to_the_9, optimizer_state_damaged,
    scheduler_state_damaged, spec_weights_mismatch_on_resume, flipped_bit_on_eval, nan_weights_on_eval,
    widths_of_10_to_the_9_in_a_checkpoint, widths_in_bounds_that_the_tensors_lack, run_folder_in_use,
    overwrite_of_a_live_run, foreign_files_in_the_run_folder, disk_full_at_a_checkpoint,
    read_only_folder_during_a_run, cifar_batch_with_zero_strides, class_folder_linking_to_its_parent,
]


class Folder(type(Path())):
    """A tmp_path that can carry a case's live objects (a held lock) until the case ends."""


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_gives_one_line_and_a_non_zero_exit(case, trained, tmp_path, capsys, request):
    wanted = case.__code__.co_varnames[2 : case.__code__.co_argcount]  # e.g. monkeypatch, write_image
    fixtures = {name: request.getfixturevalue(name) for name in wanted}
    folder = Folder(tmp_path)  # kept alive through the command: it may hold the case's lock
    argv, expected = case(folder, trained, **fixtures)
    capsys.readouterr()
    code = cli.main(argv)  # an exception escaping here is the traceback the user would see
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "Warning" not in line]
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith(f"reslab {argv[0]}: error: "), err
    assert expected in lines[0]


def test_sixteen_bit_pngs_are_read_as_their_eight_bit_images(tmp_path):
    # uint16 from torchvision's decoder used to reach the uint8 pipeline and fail there.
    from PIL import Image

    from reslab.data import DataConfig, load_data

    for label in range(2):
        for i in range(5):
            (tmp_path / str(label)).mkdir(exist_ok=True)
            value = 257 * (50 * label + 10 * i)  # the 16-bit value of the 8-bit level 50*label + 10*i
            Image.fromarray(np.full((6, 6), value, dtype=np.uint16)).save(tmp_path / str(label) / f"{i}.png")
    bundle = load_data(DataConfig(name="imagefolder", data_dir=str(tmp_path), num_workers=0, val_fraction=0))
    images = torch.cat([bundle.train.images, bundle.test.images])
    assert images.dtype == torch.uint8
    assert sorted(images[:, 0, 0, 0].tolist()) == sorted(50 * label + 10 * i for label in range(2) for i in range(5))


def test_a_dangling_symlink_is_skipped_with_skip_bad_images(tmp_path, write_image):
    for label in ("a", "b"):
        for i in range(4):
            write_image(tmp_path / label / f"{i}.png", torch.full((3, 8, 8), 30 * i, dtype=torch.uint8))
    os.symlink(tmp_path / "gone.png", tmp_path / "a" / "9.png")
    from reslab.data import DataConfig, load_data

    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        bundle = load_data(DataConfig(name="imagefolder", data_dir=str(tmp_path), num_workers=0,
                                      skip_bad_images=True, val_fraction=0))
    assert bundle.skipped == [str(tmp_path / "a" / "9.png")]
