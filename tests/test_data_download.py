"""Tests of the file-format loaders (npz, Fashion-MNIST IDX, CIFAR pickles) and their downloads.

The files are written here in the official formats; downloads come from a local HTTP server.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from spherelab.data import base, cifar, fashion_mnist
from spherelab.data.base import DataError
from spherelab.data.load import load_dataset

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path, monkeypatch):
    """No test sees the real home cache, $SPHERELAB_DATA or /usr/share/datasets."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(base.ENV_DATA, raising=False)
    monkeypatch.setattr(base, "SYSTEM_DATA", tmp_path / "system")


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1 from a thread, stopped after the test."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: two zero bytes, type 0x08 (ubyte), ndim, big-endian uint32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_fashion(folder: Path, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


def write_cifar(folder: Path, spec: cifar.Archive, per_batch: int = 10) -> np.ndarray:
    """The official layout: pickled dicts of b'data' (N, 3072) uint8 and the label key."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    images = []
    for name in spec.train_files + spec.test_files:
        batch = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, spec.num_classes, per_batch).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": batch, spec.label_key: labels, b"batch_label": b"x"}, handle)
        images.append(batch)
    return np.concatenate(images).reshape(-1, 3, 32, 32)


def pack_cifar(tmp_path: Path, name: str) -> tuple[Path, np.ndarray]:
    spec = cifar.ARCHIVES[name]
    images = write_cifar(tmp_path / "build" / spec.folder, spec)
    archive = tmp_path / spec.filename
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "build" / spec.folder, arcname=spec.folder)
    return archive, images


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_npz_loads_arrays_of_any_sample_shape(tmp_path):
    rng = np.random.default_rng(1)
    x_train, x_test = rng.normal(size=(7, 2, 3, 4)), rng.normal(size=(5, 2, 3, 4))
    y_train, y_test = np.array([0, 1, 2, 0, 1, 2, 0]), np.array([4, 0, 1, 2, 3])
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    ds = load_dataset(f"npz:{path}", dtype=torch.float64, normalize=False)
    assert ds.name == f"npz:{path}" and ds.input_shape == (2, 3, 4) and ds.n_train == 7
    assert ds.num_classes == 5  # largest label of either split, plus one
    assert torch.equal(ds.x_test, torch.from_numpy(x_test))
    assert ds.y_train.dtype == torch.int64 and ds.y_train.tolist() == y_train.tolist()


def npz_arrays(**changes) -> dict[str, np.ndarray]:
    """A valid tiny npz content with some arrays replaced (None drops one)."""
    arrays = {"x_train": np.zeros((3, 2)), "y_train": np.zeros(3, int)}
    arrays |= {"x_test": np.zeros((2, 2)), "y_test": np.zeros(2, int)} | changes
    return {key: value for key, value in arrays.items() if value is not None}


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"y_test": None}, "y_test"),
        ({"y_train": np.zeros(4, int)}, "3 samples but y_train has 4"),
        ({"y_train": np.zeros(3)}, "integer"),
        ({"y_test": np.array([0, -1])}, "labels in"),
        ({"x_test": np.zeros((2, 5))}, "same sample shape"),
    ],
)
def test_bad_npz_arrays_raise_data_error_naming_the_problem(tmp_path, changes, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **npz_arrays(**changes))
    with pytest.raises(DataError, match=needle):
        load_dataset(f"npz:{path}")


def test_missing_npz_file_raises_data_error_with_its_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nope.npz")):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


def test_fashion_mnist_reads_the_four_idx_files(tmp_path):
    arrays = write_fashion(tmp_path / "fm")
    ds = load_dataset("fashion_mnist", data_dir=tmp_path / "fm", normalize=False)
    assert ds.input_shape == (1, 28, 28) and (ds.n_train, ds.n_test) == (6, 4)
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte.gz"][:, None] / 255.0).float()
    assert torch.equal(ds.x_test, expected)
    assert ds.y_train.tolist() == arrays["train-labels-idx1-ubyte.gz"].tolist()


def test_fashion_mnist_is_found_in_the_subfolder_of_spherelab_data(tmp_path, monkeypatch):
    write_fashion(tmp_path / "shared" / "fashion-mnist")
    monkeypatch.setenv(base.ENV_DATA, str(tmp_path / "shared"))
    assert load_dataset("fashion_mnist").n_train == 6


def test_missing_fashion_mnist_names_every_searched_folder_and_the_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", data_dir=tmp_path / "mine")
    message = str(err.value)
    for folder in (
        tmp_path / "mine",
        tmp_path / "home" / ".cache" / "spherelab" / "fashion-mnist",
        tmp_path / "system" / "fashion-mnist",
    ):
        assert str(folder) in message
    assert "download=True" in message and "dataset-fashion-mnist" in message


def test_truncated_idx_file_raises_data_error(tmp_path):
    write_fashion(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="Debian package dataset-fashion-mnist absent")
def test_real_fashion_mnist_has_the_published_sizes():
    ds = load_dataset("fashion_mnist", data_dir=REAL_FASHION)
    assert (ds.n_train, ds.n_test, ds.num_classes) == (60000, 10000, 10)
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10


def test_cifar10_reads_the_pickled_batches_from_a_folder(tmp_path):
    images = write_cifar(tmp_path / "cifar-10-batches-py", cifar.ARCHIVES["cifar10"])
    ds = load_dataset("cifar10", data_dir=tmp_path, normalize=False, dtype=torch.float64)
    assert ds.input_shape == (3, 32, 32) and (ds.n_train, ds.n_test, ds.num_classes) == (50, 10, 10)
    assert torch.equal(ds.x_train, torch.from_numpy(images[:50] / 255.0))


def test_cifar100_reads_fine_labels_from_a_local_archive(tmp_path):
    archive, images = pack_cifar(tmp_path / "src", "cifar100")
    (tmp_path / "data").mkdir()
    archive.rename(tmp_path / "data" / archive.name)
    ds = load_dataset("cifar100", data_dir=tmp_path / "data", normalize=False)
    assert (ds.n_train, ds.n_test, ds.num_classes) == (10, 10, 100)
    assert torch.equal(ds.x_test, torch.from_numpy(images[10:] / 255.0).float())
    assert (tmp_path / "data" / "cifar100" / "cifar-100-python" / "train").is_file()


def test_cifar10_download_checks_the_md5_and_extracts_into_the_cache(tmp_path, served, monkeypatch):
    folder, url = served
    archive, images = pack_cifar(tmp_path / "src", "cifar10")
    archive.rename(folder / archive.name)
    spec = cifar.ARCHIVES["cifar10"]
    patched = cifar.Archive(
        **{**vars(spec), "url": url + archive.name, "md5": md5(folder / archive.name)}
    )
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10", patched)
    ds = load_dataset("cifar10", download=True, normalize=False)
    cache = tmp_path / "home" / ".cache" / "spherelab" / "cifar10"
    assert (cache / "cifar-10-batches-py" / "test_batch").is_file()
    assert torch.equal(ds.x_test, torch.from_numpy(images[50:] / 255.0).float())
    monkeypatch.setitem(
        cifar.ARCHIVES,
        "cifar10",
        cifar.Archive(**{**vars(patched), "url": "http://127.0.0.1:9/x.tar.gz"}),
    )
    assert load_dataset("cifar10").n_train == 50  # second load needs no network


def test_download_with_a_wrong_checksum_raises_and_keeps_no_file(tmp_path, served, monkeypatch):
    folder, url = served
    archive, _ = pack_cifar(tmp_path / "src", "cifar10")
    archive.rename(folder / archive.name)
    spec = cifar.ARCHIVES["cifar10"]
    bad = cifar.Archive(**{**vars(spec), "url": url + archive.name, "md5": "0" * 32})
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10", bad)
    with pytest.raises(DataError, match="bad checksum") as err:
        load_dataset("cifar10", data_dir=tmp_path / "data", download=True)
    assert md5(folder / archive.name) in str(err.value)
    assert not any(path.is_file() for path in (tmp_path / "data").rglob("*"))


def test_unreachable_mirror_raises_data_error_naming_the_url(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "MIRROR", "http://127.0.0.1:9/")
    with pytest.raises(DataError, match="could not download http://127.0.0.1:9/"):
        load_dataset("fashion_mnist", data_dir=tmp_path, download=True)


def test_fashion_mnist_download_fetches_the_four_files_from_the_mirror(
    tmp_path, served, monkeypatch
):
    folder, url = served
    write_fashion(folder)
    monkeypatch.setattr(fashion_mnist, "MIRROR", url)
    monkeypatch.setattr(
        fashion_mnist, "FILES", {name: md5(folder / name) for name in fashion_mnist.FILES}
    )
    ds = load_dataset("fashion_mnist", data_dir=tmp_path / "data", download=True)
    assert (
        ds.n_train == 6
        and (tmp_path / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    )
