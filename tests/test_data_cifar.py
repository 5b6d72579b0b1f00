"""CIFAR-10/100 python batches written here in torchvision's layout: contents, and that damaged or
crafted pickles give one clear error naming the file without running any code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from reslab.data import DataConfig, DataError, load_data

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def make_cifar10(root, write_cifar, per_batch=20):
    train = [(cifar_images(per_batch, i), [(j + i) % 10 for j in range(per_batch)]) for i in range(5)]
    test = (cifar_images(10, 99), list(range(10)))
    return write_cifar(root, "cifar10", train, test, CIFAR10_NAMES), train, test


def test_cifar10_batches_load_in_file_order(tmp_path, write_cifar):
    _, train, test = make_cifar10(tmp_path, write_cifar)
    bundle = load_data(DataConfig(name="cifar10", data_dir=str(tmp_path), val_fraction=0))
    assert bundle.class_names == CIFAR10_NAMES and (bundle.in_chans, bundle.image_size) == (3, 32)
    assert torch.equal(bundle.train.images, torch.from_numpy(np.concatenate([b[0] for b in train])))
    assert bundle.train.labels.tolist() == [label for b in train for label in b[1]]
    assert torch.equal(bundle.test.images, torch.from_numpy(test[0]))
    # Channel statistics from the training images (uniform noise: mean ~0.5, std ~0.29).
    assert all(abs(m - 0.5) < 0.01 for m in bundle.mean) and all(abs(s - 0.289) < 0.01 for s in bundle.std)
    x, _ = next(bundle.train.batches(16, shuffle=True, augment=True))
    assert x.shape == (16, 3, 32, 32)


def test_cifar100_fine_labels_and_names(tmp_path, write_cifar):
    names = [f"class{i}" for i in range(100)]
    write_cifar(
        tmp_path,
        "cifar100",
        [(cifar_images(200, 0), list(range(100)) * 2)],
        (cifar_images(100, 1), list(range(100))[::-1]),
        names,
    )
    bundle = load_data(DataConfig(name="cifar100", data_dir=str(tmp_path), val_fraction=0.5))
    assert bundle.num_classes == 100 and bundle.class_names == names
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (100, 100, 100)
    assert bundle.test.labels.tolist() == list(range(100))[::-1]


def test_missing_cifar_says_what_was_expected_where(tmp_path):
    with pytest.raises(DataError) as err:
        load_data(DataConfig(name="cifar10", data_dir=str(tmp_path)))
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in str(err.value)
    assert "download: true" in str(err.value)


def test_truncated_batch_is_named(tmp_path, write_cifar):
    folder, _, _ = make_cifar10(tmp_path, write_cifar)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=rf"CIFAR batch {path} is corrupt or not a CIFAR pickle"):
        load_data(DataConfig(name="cifar10", data_dir=str(tmp_path)))


def test_garbage_batch_is_named(tmp_path, write_cifar):
    folder, _, _ = make_cifar10(tmp_path, write_cifar)
    (folder / "test_batch").write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError, match=r"CIFAR batch .*test_batch is corrupt"):
        load_data(DataConfig(name="cifar10", data_dir=str(tmp_path)))


class RunsCode:
    """Pickles into a call of os.system: loading it with plain pickle would run the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_crafted_pickle_is_refused_without_running_code(tmp_path, write_cifar):
    folder, _, _ = make_cifar10(tmp_path, write_cifar)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({"data": RunsCode(f"touch {marker}"), "labels": [0]}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_2 is corrupt .*refusing to load global posix\.system"):
        load_data(DataConfig(name="cifar10", data_dir=str(tmp_path)))
    assert not marker.exists()


def test_out_of_range_label_is_named(tmp_path, write_cifar):
    folder, _, _ = make_cifar10(tmp_path, write_cifar)
    with open(folder / "data_batch_5", "wb") as f:
        pickle.dump({b"data": cifar_images(2, 0).reshape(2, -1), b"labels": [1, 10]}, f, protocol=2)
    with pytest.raises(DataError, match=r"label 10 at index 1 of .*data_batch_5 is out of range \[0, 9\]"):
        load_data(DataConfig(name="cifar10", data_dir=str(tmp_path)))


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({b"labels": [0]}, r"has no 'data' entry"),
        (
            {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
            r"'data' must be a contiguous uint8 array of shape \(N, 3072\)",
        ),

        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"has 2 images but 1 labels"),
        ([1, 2, 3], r"holds a list, expected a dict"),
    ],
)
def test_malformed_batch_contents_are_named(tmp_path, write_cifar, batch, message):
    folder, _, _ = make_cifar10(tmp_path, write_cifar)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(DataError, match=rf"CIFAR batch .*data_batch_1:? {message}"):
        load_data(DataConfig(name="cifar10", data_dir=str(tmp_path)))


def test_downloaded_archives_are_extracted_only_when_every_member_stays_inside(tmp_path):
    # Issue 20.8: a member named ../x (or a link out) would be written outside data_dir on Python 3.11.
    import io
    import tarfile

    from reslab.data.sources import extract_tar

    def archive(name: str, *members: tuple[str, bytes]):
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            for member, data in members:
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    target = tmp_path / "data"
    target.mkdir()
    bad = archive("bad.tar.gz", ("cifar-10-batches-py/readme", b"ok"), ("../escaped", b"evil"))
    with pytest.raises(DataError, match="bad.tar.gz: refusing to extract it, a member is unsafe"):
        extract_tar(bad, target)
    assert not (tmp_path / "escaped").exists() and not (target / "cifar-10-batches-py").exists()
    extract_tar(archive("good.tar.gz", ("cifar-10-batches-py/readme", b"ok")), target)
    assert (target / "cifar-10-batches-py" / "readme").read_bytes() == b"ok"
