"""CIFAR-10/100 from the official python-pickle batches: a folder, its tar.gz, or a download.

The batches are pickles; only archives with a verified md5 (downloads) or files the user placed
are ever unpickled.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spherelab.data.base import DataError, RawSplits, cache_dir, check_splits, search_dirs
from spherelab.data.fetch import download, extract_tar


@dataclass(frozen=True)
class Archive:
    """One official archive: where to get it, its md5, what it unpacks to, how labels are keyed."""

    url: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    num_classes: int

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# Official archives (https://www.cs.toronto.edu/~kriz/cifar.html); tests monkeypatch this table.
ARCHIVES: dict[str, Archive] = {
    "cifar10": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key=b"labels",
        num_classes=10,
    ),
    "cifar100": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key=b"fine_labels",
        num_classes=100,
    ),
}


def _has_batches(folder: Path, spec: Archive) -> bool:
    return all((folder / name).is_file() for name in spec.train_files + spec.test_files)


def _find(spec: Archive, name: str, data_dir: str | Path | None) -> Path | None:
    """The batch folder: found unpacked, or unpacked from an archive found next to it."""
    dirs = search_dirs(data_dir, name)
    for directory in dirs:
        for folder in (directory / spec.folder, directory):
            if _has_batches(folder, spec):
                return folder
    for directory in dirs:
        if (directory / spec.filename).is_file():
            return _unpack(spec, directory / spec.filename, cache_dir(data_dir, name))
    return None


def _unpack(spec: Archive, archive: Path, target: Path) -> Path:
    extract_tar(archive, target)
    if not _has_batches(target / spec.folder, spec):
        raise DataError(
            f"{archive} did not contain {spec.folder}/ with {', '.join(spec.train_files)} and "
            f"{', '.join(spec.test_files)}; delete it and download the official archive"
        )
    return target / spec.folder


def _read_batches(folder: Path, names: tuple[str, ...], spec: Archive) -> tuple[np.ndarray, ...]:
    images, labels = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            images.append(data.reshape(data.shape[0], 3, 32, 32))
            labels.append(np.asarray(batch[spec.label_key], dtype=np.int64))
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as err:
            raise DataError(
                f"could not read CIFAR batch {path} ({type(err).__name__}: {err}); expected a "
                f"pickled dict with b'data' (N, 3072) uint8 and {spec.label_key!r}; fetch it again"
            ) from err
    return np.concatenate(images), np.concatenate(labels)


def load(name: str, data_dir: str | Path | None, download_missing: bool) -> RawSplits:
    """Images as uint8 (N, 3, 32, 32), labels int64; 10 or 100 (fine) classes."""
    spec = ARCHIVES[name]
    folder = _find(spec, name, data_dir)
    if folder is None and download_missing:
        target = cache_dir(data_dir, name)
        archive = download(spec.url, target / spec.filename, spec.md5)
        folder = _unpack(spec, archive, target)
    if folder is None:
        looked = "; ".join(str(d) for d in search_dirs(data_dir, name))
        raise DataError(
            f"{name}: neither {spec.folder}/ nor {spec.filename} was found in any of: {looked}. "
            f"Fix: pass download=True (CLI: --set data.download=true; fetches {spec.url} into "
            f"{cache_dir(data_dir, name)}), "
            "or put the folder or archive in data_dir or $SPHERELAB_DATA"
        )
    x_train, y_train = _read_batches(folder, spec.train_files, spec)
    x_test, y_test = _read_batches(folder, spec.test_files, spec)
    raw = RawSplits(x_train, y_train, x_test, y_test, spec.num_classes)
    return check_splits(raw, f"{name} ({folder})")
