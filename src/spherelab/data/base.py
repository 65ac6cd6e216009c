"""Shared pieces of the dataset loaders: the error type, the raw split container, where to look."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_DATA = "SPHERELAB_DATA"
SYSTEM_DATA = Path("/usr/share/datasets")


class DataError(ValueError):
    """A dataset could not be found, fetched, verified or understood; the message says the fix."""


@dataclass(frozen=True)
class RawSplits:
    """Host-side arrays as a source delivers them (uint8 pixels are scaled to [0, 1] later)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def search_roots(data_dir: str | Path | None) -> list[Path]:
    """Roots in search order: data_dir, $SPHERELAB_DATA, ~/.cache/spherelab, /usr/share/datasets."""
    roots = [] if data_dir is None else [Path(data_dir).expanduser()]
    if os.environ.get(ENV_DATA):
        roots.append(Path(os.environ[ENV_DATA]).expanduser())
    roots.append(Path.home() / ".cache" / "spherelab")
    roots.append(SYSTEM_DATA)
    return roots


def search_dirs(data_dir: str | Path | None, subdir: str) -> list[Path]:
    """Every root and its `subdir` (e.g. fashion-mnist), in search order, without duplicates."""
    dirs: list[Path] = []
    for root in search_roots(data_dir):
        for candidate in (root, root / subdir):
            if candidate not in dirs:
                dirs.append(candidate)
    return dirs


def cache_dir(data_dir: str | Path | None, subdir: str) -> Path:
    """Where downloads and generated caches are written: the first search root's `subdir`."""
    return search_roots(data_dir)[0] / subdir


def _check_finite(x: np.ndarray, name: str) -> None:
    """DataError with the count and the first index of NaN/inf features (integers are finite)."""
    if not np.issubdtype(x.dtype, np.floating):
        return
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{name} has {int(bad.sum())} non-finite values (NaN or inf), the first at index "
            f"{first}; remove or impute them before training"
        )


def check_splits(raw: RawSplits, source: str) -> RawSplits:
    """Validate shapes, dtypes, finite features and label range; raise DataError naming
    `source` otherwise. Every loader returns through here."""
    for split in ("train", "test"):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if x.ndim < 2 or x.shape[0] == 0:
            raise DataError(
                f"{source}: x_{split} has shape {x.shape}; expected (N, ...) with N >= 1"
            )
        if not (np.issubdtype(x.dtype, np.number) and not np.iscomplexobj(x)):
            raise DataError(
                f"{source}: x_{split} has dtype {x.dtype}; expected a real numeric array"
            )
        _check_finite(x, f"{source}: x_{split}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{source}: y_{split} has shape {y.shape} and dtype {y.dtype}; "
                "expected a 1-D integer array of class indices"
            )
        if y.shape[0] != x.shape[0]:
            raise DataError(
                f"{source}: x_{split} has {x.shape[0]} samples but y_{split} has {y.shape[0]}; "
                "they must match"
            )
        if y.min() < 0 or y.max() >= raw.num_classes:
            raise DataError(
                f"{source}: y_{split} has labels in [{y.min()}, {y.max()}]; "
                f"expected class indices in [0, {raw.num_classes - 1}]"
            )
    if raw.x_train.shape[1:] != raw.x_test.shape[1:]:
        raise DataError(
            f"{source}: train samples have shape {raw.x_train.shape[1:]} but test samples "
            f"{raw.x_test.shape[1:]}; both splits need the same sample shape"
        )
    return raw
