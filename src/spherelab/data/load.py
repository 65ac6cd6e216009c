"""Datasets as in-memory tensors on the training device, and index-permutation batching.

Names (see available_datasets()):
  mnist1d        procedural MNIST-1D (4000/1000 x 40, 10 classes), generated once, cached as .npz
  fashion_mnist  the four IDX files, (1, 28, 28), 10 classes
  cifar10/100    the official python-pickle batches, (3, 32, 32), 10 / 100 (fine) classes
  synthetic      synthetic[:SHAPE[:N_TRAIN[:N_TEST[:CLASSES]]]], default synthetic:3x32x32:5000:1000:10
  npz:PATH       arrays x_train, y_train, x_test, y_test of any sample shape
  module:attr    a user's loader function (spherelab.data.user), e.g. my_pkg.data:load

Files are looked for in data_dir, $SPHERELAB_DATA, ~/.cache/spherelab, /usr/share/datasets (each
root and its per-dataset subfolder: fashion-mnist, cifar10, cifar100, mnist1d). Downloads and the
MNIST-1D cache go to the first root's subfolder. Only downloads are md5-checked.

Order of the transforms: uint8 pixels / 255 -> train_subset (`subset="random"`: first k of a
permutation seeded by `seed`, original order kept; `"first"`: the first k samples, as the paper)
-> label_noise (`label_noise_style="exact"`: exactly round(p * n) training labels, chosen with
the same seeded generator, each moved to a different uniformly random class; `"paper"`: the
paper's Bernoulli(p) draw and uniform class from RandomState(228), the same for every seed; test
labels untouched) -> normalize (`"split"`: per-channel mean/std of the training split, applied
to both splits, vectors (N, D) use one global mean/std; `"paper"`: the paper's fixed CIFAR
constants; `"none"`). Augmentation runs later, per batch, on the normalized images; the
Dataset's `zero_pixel` is where a raw zero pixel lands, so padding with it equals the paper's
zero padding of the raw image (normalization is per channel, so it commutes with crop and flip).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spherelab.data import cifar, fashion_mnist, mnist1d_cache, npz, synthetic, user
from spherelab.data.base import DataError, RawSplits
from spherelab.data.transforms import NORMALIZATIONS, noisy_labels, normalize_, subset_indices
from spherelab.runtime import is_import_spec

_NAMED = ("mnist1d", "fashion_mnist", "cifar10", "cifar100")


@dataclass(frozen=True)
class Dataset:
    """Both splits on one device; x in the requested float dtype, labels int64."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    noisy: Tensor | None = None  # bool mask of the training samples drawn for label noise
    zero_pixel: Tensor | None = None  # a zero input after normalization (per channel)

    def __post_init__(self) -> None:
        if self.x_train.shape[0] != self.y_train.shape[0] or (
            self.x_test.shape[0] != self.y_test.shape[0]
        ):
            raise DataError(
                f"dataset {self.name!r}: x/y sample counts differ (train "
                f"{self.x_train.shape[0]}/{self.y_train.shape[0]}, test "
                f"{self.x_test.shape[0]}/{self.y_test.shape[0]}); pass matching splits"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (3, 32, 32) or (40,)."""
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


def available_datasets() -> list[str]:
    """Every accepted name; 'synthetic' also takes a size spec and 'npz:PATH' a file path."""
    return [*_NAMED, "synthetic", "npz:PATH", "module:attr"]


def _load_raw(name: str, data_dir: str | Path | None, download: bool) -> tuple[str, RawSplits]:
    """Dispatch a name to its loader; returns the canonical name and the host arrays."""
    name = name.strip()
    if is_import_spec(name):
        return name, user.load(name)
    if name.startswith("npz:"):
        return name, npz.load(name[len("npz:") :])
    if name == "synthetic" or name.startswith("synthetic:"):
        spec = synthetic.parse_spec(name)
        return spec.name, synthetic.load(spec)
    key = name.lower().replace("-", "_")
    if key == "mnist1d":
        return key, mnist1d_cache.load(data_dir)
    if key == "fashion_mnist":
        return key, fashion_mnist.load(data_dir, download)
    if key in cifar.ARCHIVES:
        return key, cifar.load(key, data_dir, download)
    raise DataError(
        f"unknown dataset {name!r}; choose one of {', '.join(available_datasets())} "
        "(PATH: a .npz file; synthetic also accepts synthetic:SHAPE:N_TRAIN[:N_TEST[:CLASSES]])"
    )


def _to_device(x: np.ndarray, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A fresh tensor (safe to normalize in place); uint8 pixels are scaled to [0, 1]."""
    if not (x.flags.writeable and x.flags.c_contiguous):
        x = np.array(x)  # torch cannot wrap read-only buffers (e.g. np.frombuffer) safely
    tensor = torch.from_numpy(x).to(device=device, dtype=dtype, copy=True)
    return tensor.div_(255.0) if x.dtype == np.uint8 else tensor


def load_dataset(
    name: str = "mnist1d",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    train_subset: int | None = None,
    test_subset: int | None = None,
    label_noise: float = 0.0,
    seed: int = 0,
    data_dir: str | Path | None = None,
    download: bool = False,
    normalize: bool | str = True,
    subset: str = "random",
    label_noise_style: str = "exact",
) -> Dataset:
    """Load `name` (see the module docstring) onto `device`; raise DataError with the fix.
    `normalize`: one of NORMALIZATIONS, True for "split", False for "none"."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise DataError(f"dtype={dtype!r} is invalid; pass a floating dtype such as torch.float32")
    how = "split" if normalize is True else "none" if normalize is False else normalize
    if how not in NORMALIZATIONS:
        raise DataError(f"normalize={normalize!r} is unknown; pass one of {NORMALIZATIONS}")
    device = torch.device(device)
    canonical, raw = _load_raw(name, data_dir, download)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = raw.x_train, torch.from_numpy(raw.y_train.astype(np.int64))
    if train_subset is not None:
        keep = subset_indices(x_train.shape[0], train_subset, generator, how=subset)
        x_train, y_train = x_train[keep.numpy()], y_train[keep]
    y_train, noisy = noisy_labels(
        y_train, label_noise, raw.num_classes, generator, label_noise_style
    )
    x_test, y_test = raw.x_test, torch.from_numpy(raw.y_test.astype(np.int64))
    if test_subset is not None:  # a fixed (seed-independent) evaluation subset, for speed
        keep = subset_indices(
            x_test.shape[0], test_subset, torch.Generator().manual_seed(0), "test_subset", subset
        )
        x_test, y_test = x_test[keep.numpy()], y_test[keep]
    xs = [_to_device(x, device, dtype) for x in (x_train, x_test)]
    x_train_t, x_test_t, zero = normalize_(xs[0], xs[1], how)
    return Dataset(
        name=canonical,
        x_train=x_train_t,
        y_train=y_train.to(device),
        x_test=x_test_t,
        y_test=y_test.to(device),
        num_classes=raw.num_classes,
        noisy=noisy.to(device) if bool(noisy.any()) else None,
        zero_pixel=zero,
    )
