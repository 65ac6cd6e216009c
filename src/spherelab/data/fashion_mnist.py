"""Fashion-MNIST from its four IDX files (gzipped or not), found locally or fetched on request."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from spherelab.data.base import DataError, RawSplits, cache_dir, check_splits, search_dirs
from spherelab.data.fetch import download

SUBDIR = "fashion-mnist"
# Official mirror of the Fashion-MNIST README; md5 of each .gz file as published there.
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_IDX_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file of unsigned bytes (magic 0x0000 08 NDIM, big-endian uint32 dims)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            blob = handle.read()
    except OSError as err:
        raise DataError(f"could not read {path}: {err}; delete it and fetch it again") from err
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] != _IDX_UBYTE or blob[3] == 0:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic {blob[:4]!r})")
    ndim = blob[3]
    dims = tuple(int(d) for d in np.frombuffer(blob, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(blob) - offset != int(np.prod(dims)):
        raise DataError(
            f"{path} declares shape {dims} but holds {len(blob) - offset} bytes of data; "
            "the file is truncated or corrupt, fetch it again"
        )
    return np.frombuffer(blob, dtype=np.uint8, offset=offset).reshape(dims)


def _find(data_dir: str | Path | None) -> Path | None:
    """First directory holding all four files (each either gzipped or plain)."""
    for directory in search_dirs(data_dir, SUBDIR):
        if all(_locate(directory, name) is not None for name in FILES):
            return directory
    return None


def _locate(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _fetch(data_dir: str | Path | None) -> Path:
    target = cache_dir(data_dir, SUBDIR)
    for name, md5 in FILES.items():
        if _locate(target, name) is None:
            download(MIRROR + name, target / name, md5)
    return target


def load(data_dir: str | Path | None, download_missing: bool) -> RawSplits:
    """Images as uint8 (N, 1, 28, 28), labels int64, 10 classes."""
    directory = _find(data_dir)
    if directory is None and download_missing:
        directory = _fetch(data_dir)
    if directory is None:
        looked = "; ".join(str(d) for d in search_dirs(data_dir, SUBDIR))
        raise DataError(
            f"fashion_mnist: the files {', '.join(FILES)} were not found in any of: {looked}. "
            "Fix: pass download=True (CLI: --set data.download=true; fetches them from the official mirror into "
            f"{cache_dir(data_dir, SUBDIR)}), install the Debian package dataset-fashion-mnist, "
            "or put them in data_dir or $SPHERELAB_DATA"
        )
    arrays = [read_idx(_locate(directory, name)) for name in FILES]  # type: ignore[arg-type]
    x_train, y_train, x_test, y_test = arrays
    raw = RawSplits(
        x_train=x_train[:, None],
        y_train=y_train.astype(np.int64),
        x_test=x_test[:, None],
        y_test=y_test.astype(np.int64),
        num_classes=10,
    )
    return check_splits(raw, f"fashion_mnist ({directory})")
