"""User data from a loader function: ``data.name = module:attr`` (e.g. ``my_pkg.data:load``).

The loader takes no arguments and returns either

- the four splits ``x_train, y_train, x_test, y_test`` (tensors or arrays; labels are class
  indices), as a tuple, optionally followed by ``num_classes``, or as a dict with those keys
  (``num_classes`` optional), or
- two torch ``Dataset`` objects ``(train, test)`` whose items are ``(x, y)`` pairs; they are
  read once into memory (spherelab keeps a data set on the training device as one tensor).

Classes = 1 + the largest label of either split unless ``num_classes`` is given. The splits
then go through the same subset, label-noise and normalization steps as the built-in sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from spherelab.data.base import DataError, RawSplits, check_splits
from spherelab.runtime import import_object

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _read(dataset: Dataset, spec: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every (x, y) item of a torch Dataset, stacked."""
    try:
        items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
        xs = torch.stack([torch.as_tensor(x) for x, _ in items])
        ys = torch.as_tensor([int(y) for _, y in items])
    except Exception as err:  # noqa: BLE001 - a user Dataset may raise anything
        raise DataError(
            f"dataset {spec!r}: cannot read the {split} Dataset as (x, y) items of equal shape "
            f"({type(err).__name__}: {err}); return tensors instead"
        ) from None
    return xs.numpy(), ys.numpy()


def _splits(result: Any, spec: str) -> tuple[dict[str, np.ndarray], int | None]:
    if isinstance(result, Mapping):
        missing = [k for k in KEYS if k not in result]
        if missing:
            raise DataError(f"dataset {spec!r} returned a dict without {missing}; return {KEYS}")
        declared = result.get("num_classes")
        return {k: _array(result[k]) for k in KEYS}, None if declared is None else int(declared)
    if (
        isinstance(result, Sequence)
        and len(result) == 2
        and all(isinstance(d, Dataset) for d in result)
    ):
        (x_train, y_train), (x_test, y_test) = (
            _read(result[0], spec, "train"), _read(result[1], spec, "test")
        )  # fmt: skip
        return dict(zip(KEYS, (x_train, y_train, x_test, y_test))), None
    if isinstance(result, Sequence) and len(result) in (4, 5):
        declared = int(result[4]) if len(result) == 5 else None
        return {k: _array(v) for k, v in zip(KEYS, result)}, declared
    raise DataError(
        f"dataset {spec!r} returned {type(result).__name__}; return (x_train, y_train, x_test, "
        "y_test[, num_classes]), a dict with those keys, or (train, test) torch Datasets"
    )


def load(spec: str) -> RawSplits:
    """Call the loader that ``spec`` (module:attr) names and check what it returns."""
    loader = import_object(spec, "dataset")
    try:
        result = loader()
    except Exception as err:  # noqa: BLE001 - the user's loader may raise anything
        raise DataError(f"dataset loader {spec!r} raised {type(err).__name__}: {err}") from None
    arrays, declared = _splits(result, spec)
    for key in ("y_train", "y_test"):
        if arrays[key].size == 0 or not np.issubdtype(arrays[key].dtype, np.integer):
            raise DataError(
                f"dataset {spec!r}: {key} has dtype {arrays[key].dtype} and {arrays[key].size} "
                "entries; expected a non-empty integer array of class indices"
            )
    largest = max(int(arrays["y_train"].max()), int(arrays["y_test"].max()))
    raw = RawSplits(num_classes=declared if declared is not None else largest + 1, **arrays)
    return check_splits(raw, f"dataset {spec!r}")
