"""Reading CIFAR-10 files: the file format and its failure modes, the checksums, and a run trained from them."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import urllib.error

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from resrepro.cli import app
from resrepro.data import cifar10, load_dataset
from resrepro.errors import ResreproError
from resrepro.train.rundir import RunDir


def test_cifar10_files_load_as_uint8_nchw(fake_cifar):
    splits = load_dataset("cifar10", fake_cifar.root, verify=False)
    train, test = splits.train, splits.eval
    assert (splits.eval_split, train.name, test.name) == ("test", "cifar10/train", "cifar10/test")
    assert train.images.shape == (100, 3, 32, 32) and test.images.shape == (20, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.images.is_contiguous()
    assert train.labels.dtype == torch.int64 and train.num_classes == 10
    # Each file row is the R plane, then G, then B, each 32×32 row-major.
    row = fake_cifar.train_data[37]
    for channel in range(3):
        plane = row[1024 * channel : 1024 * (channel + 1)].reshape(32, 32)
        assert np.array_equal(train.images[37, channel].numpy(), plane)
    assert np.array_equal(train.labels.numpy(), fake_cifar.train_labels)
    assert np.array_equal(test.images.reshape(20, -1).numpy(), fake_cifar.test_data)
    assert np.array_equal(test.labels.numpy(), fake_cifar.test_labels)


def test_checksums_are_verified_by_default(fake_cifar):
    with pytest.raises(ResreproError, match=r"data_batch_1 fails its md5 checksum.*--skip-checksum"):
        load_dataset("cifar10", fake_cifar.root)


def test_missing_directory_says_where_the_files_go(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(ResreproError) as err:
        load_dataset("cifar10", root)
    message = str(err.value)
    assert f"{root / 'cifar-10-batches-py'}/" in message
    assert f"`resrepro train cifar --download --data-dir {root}`" in message  # sweep has no --download
    assert cifar10.CIFAR10.url in message and "\n" not in message


def test_missing_file_is_named(fake_cifar):
    (fake_cifar.folder / "test_batch").unlink()
    with pytest.raises(ResreproError, match=r"which lacks test_batch;"):
        load_dataset("cifar10", fake_cifar.root, verify=False)


def test_failed_download_explains_where_to_put_the_files(tmp_path, monkeypatch):
    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar10, "CIFAR10", type("Offline", (cifar10.CIFAR10,), {"download": offline}))
    with pytest.raises(ResreproError, match=r"downloading CIFAR-10 failed \(URLError.*no network") as err:
        load_dataset("cifar10", tmp_path, download=True)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)


def test_download_leaves_present_files_alone(fake_cifar, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("must not download when the files are there")

    monkeypatch.setattr(cifar10, "_download_cifar10", fail)
    assert len(load_dataset("cifar10", fake_cifar.root, download=True, verify=False).train) == 100


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: b"this is not a pickle",
        lambda blob: blob[: len(blob) // 2],  # a truncated download
        lambda blob: pickle.dumps([1, 2, 3]),
        lambda blob: pickle.dumps({b"labels": [0] * 20}),
        lambda blob: pickle.dumps({b"data": np.zeros((20, 3071), np.uint8), b"labels": [0] * 20}),
        lambda blob: pickle.dumps({b"data": np.zeros((20, 3072), np.float32), b"labels": [0] * 20}),
        lambda blob: pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 19}),
        lambda blob: pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": [10] * 20}),
        lambda blob: pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": ["cat"] * 20}),
    ],
)
def test_damaged_batch_is_named_even_without_checksums(fake_cifar, damage):
    path = fake_cifar.folder / "data_batch_3"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ResreproError, match=r"data_batch_3 is not a CIFAR-10 batch file"):
        load_dataset("cifar10", fake_cifar.root, verify=False)


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (str(self.target),)


def test_pickle_that_runs_code_is_refused(fake_cifar, tmp_path):
    target = tmp_path / "pwned"
    fake_cifar.write("data_batch_2", {"data": _Payload(target), "labels": [0]})
    with pytest.raises(ResreproError, match=r"data_batch_2 .*refusing to load"):
        load_dataset("cifar10", fake_cifar.root, verify=False)
    assert not target.exists()


@pytest.fixture
def published(fake_cifar, monkeypatch):
    """fake_cifar as the published files load (str keys), with its own md5s standing in for the published
    ones, so that its checksums pass."""
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
        entry = pickle.loads((fake_cifar.folder / name).read_bytes())
        fake_cifar.write(name, {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()})

    def md5s(*names: str) -> list[list[str]]:
        return [[n, hashlib.md5((fake_cifar.folder / n).read_bytes()).hexdigest()] for n in names]

    (meta,) = md5s("batches.meta")
    tables = {"train_list": md5s(*(f"data_batch_{i}" for i in range(1, 6))), "test_list": md5s("test_batch"),
              "meta": {**cifar10.CIFAR10.meta, "md5": meta[1]}}
    monkeypatch.setattr(cifar10, "CIFAR10", type("Published", (cifar10.CIFAR10,), tables))
    return fake_cifar


def test_verified_files_are_read_by_torchvision(published, monkeypatch):
    unverified = load_dataset("cifar10", published.root, verify=False)

    def restricted_reader(path):
        raise AssertionError("files that pass their checksum are read by torchvision's CIFAR10")

    monkeypatch.setattr(cifar10, "_read_batch", restricted_reader)
    verified = load_dataset("cifar10", published.root)
    assert np.array_equal(verified.train.images.reshape(100, -1).numpy(), published.train_data)
    for ours, theirs in ((verified.train, unverified.train), (verified.eval, unverified.eval)):
        assert ours.name == theirs.name and ours.num_classes == 10
        assert ours.images.dtype == torch.uint8 and ours.images.is_contiguous()
        assert ours.labels.dtype == torch.int64
        assert torch.equal(ours.images, theirs.images) and torch.equal(ours.labels, theirs.labels)


def test_verified_path_needs_the_class_names_file(published):
    (published.folder / "batches.meta").unlink()
    with pytest.raises(ResreproError, match=r"which lacks batches.meta;"):
        load_dataset("cifar10", published.root)
    assert len(load_dataset("cifar10", published.root, verify=False).train) == 100  # only torchvision reads it


def test_pickle_that_runs_code_fails_its_checksum_before_it_is_unpickled(published, tmp_path):
    target = tmp_path / "pwned"
    published.write("data_batch_2", {"data": _Payload(target), "labels": [0]})
    with pytest.raises(ResreproError, match=r"data_batch_2 fails its md5 checksum"):
        load_dataset("cifar10", published.root)
    assert not target.exists()


def _resrepro(*args: object) -> str:
    """Run a resrepro command in this process (a subprocess would spend seconds importing torch)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(("val_split", "eval_args", "split", "images"),
                         [(0, [], "test", 20), (10, ["--split", "val"], "val", 10)])
def test_cli_trains_and_evaluates_from_cifar10_files(fake_cifar, tmp_path, val_split, eval_args, split, images):
    run = tmp_path / "run"
    _resrepro("train", "cifar", "--dataset", "cifar10", "--data-dir", fake_cifar.root, "--skip-checksum",
              "--n", "1", "--width", "8", "--iters", "6", "--batch-size", "16", "--eval-every", "3",
              "--val-split", val_split, "--out", run)
    config, summary = RunDir(run).read_config(), RunDir(run).read_summary()
    assert config["dataset"] == summary["dataset"] == "cifar10" and config["data_dir"] == str(fake_cifar.root)
    assert summary["final"]["eval_split"] == split
    # Fractional epochs count the training images: the fixture's 100 less the held-out ones.
    assert RunDir(run).read_metrics()[-1]["epoch"] == pytest.approx(6 * 16 / (100 - val_split), abs=1e-4)
    result = json.loads(_resrepro("eval", run, "--format", "json", *eval_args))
    assert (result["dataset"], result["split"], result["images"]) == ("cifar10", split, images)
    assert result["top1_error"] == summary["final"]["eval_error"]
    assert result["loss"] == pytest.approx(summary["final"]["eval_loss"], rel=1e-6)
    if val_split:
        test = json.loads(_resrepro("eval", run, "--format", "json", "--split", "test"))
        assert (test["split"], test["images"]) == ("test", 20)
