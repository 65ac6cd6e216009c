"""MNIST-1D, generated procedurally by the mnist1d package (never downloaded) and cached as .npz."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import numpy as np

from spherelab.data.base import DataError, RawSplits, cache_dir, check_splits, search_dirs
from spherelab.io import atomic_path

logger = logging.getLogger("spherelab")
SUBDIR = "mnist1d"
_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _default_args() -> dict:
    # mnist1d imports scipy, requests and matplotlib (~0.5 s): only MNIST-1D runs pay for them.
    from mnist1d.data import get_dataset_args  # noqa: PLC0415

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # only used by mnist1d's downloader, which we never call
    return args


def cache_name(args: dict) -> str:
    """File name that changes whenever a generation argument changes."""
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    return f"mnist1d_{digest}.npz"


def _generate(args: dict) -> dict[str, np.ndarray]:
    """Run mnist1d's generator without leaking its global reseeding into the caller's RNGs."""
    from mnist1d.data import make_dataset  # noqa: PLC0415 - heavy, as in _default_args
    from mnist1d.utils import ObjectView  # noqa: PLC0415

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x_train": data["x"].astype(np.float32),
        "y_train": data["y"].astype(np.int64),
        "x_test": data["x_test"].astype(np.float32),
        "y_test": data["y_test"].astype(np.int64),
    }


def _save(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write atomically so a concurrent reader never sees half a file; failure only costs time."""
    try:
        with atomic_path(path) as partial, partial.open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # stub: **arrays vs allow_pickle
    except OSError as err:
        logger.warning("could not cache MNIST-1D at %s (%s); it will be regenerated", path, err)


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in _KEYS}
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"the MNIST-1D cache {path} is unreadable ({err}); delete it") from err


def load(data_dir: str | Path | None) -> RawSplits:
    """x (4000, 40) / (1000, 40) float32, 10 classes, as mnist1d's default arguments give."""
    args = _default_args()
    name = cache_name(args)
    found = [d / name for d in search_dirs(data_dir, SUBDIR) if (d / name).is_file()]
    if found:
        arrays = _read(found[0])
    else:
        logger.info("generating MNIST-1D (a few seconds; cached afterwards)")
        arrays = _generate(args)
        _save(arrays, cache_dir(data_dir, SUBDIR) / name)
    raw = RawSplits(num_classes=10, **arrays)
    return check_splits(raw, f"mnist1d ({found[0] if found else 'generated'})")
