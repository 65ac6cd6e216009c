"""Training-split transforms applied by load_dataset: seeded subset, label noise, normalization."""

from __future__ import annotations

import torch
from torch import Tensor

from spherelab.data.base import DataError


def subset_indices(
    n_train: int, k: int, generator: torch.Generator, what: str = "train_subset"
) -> Tensor:
    """First k of a seeded permutation, sorted (original order kept; nested in k for one seed)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_train:
        split = what.split("_")[0]
        raise DataError(
            f"{what}={k!r} is invalid: the {split} split has {n_train} samples; "
            f"pass an integer in [1, {n_train}] or None for all of them"
        )
    return torch.randperm(n_train, generator=generator)[:k].sort().values


def noisy_labels(
    y: Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> Tensor:
    """Replace exactly round(fraction * n) labels, chosen at random, by a different random class."""
    valid = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not valid or not 0.0 <= float(fraction) <= 1.0:
        raise DataError(
            f"label_noise={fraction!r} is invalid; pass the fraction of training labels to "
            "corrupt, a number in [0, 1]"
        )
    count = round(float(fraction) * y.shape[0])
    if count == 0:
        return y
    if num_classes < 2:
        raise DataError(f"label_noise={fraction!r} needs at least 2 classes, got {num_classes}")
    chosen = torch.randperm(y.shape[0], generator=generator)[:count]
    # A shift in [1, K-1] modulo K never maps a label to itself and is uniform over the others.
    shift = torch.randint(1, num_classes, (count,), generator=generator)
    noisy = y.clone()
    noisy[chosen] = (y[chosen] + shift) % num_classes
    return noisy


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std broadcastable to x: per channel (dim 1) for samples of >= 2 dims, a single
    global pair for vectors (N, D), so relative feature scales of vector data are kept."""
    dims = tuple(d for d in range(x.dim()) if d != 1) if x.dim() > 2 else tuple(range(x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, unbiased=False)
    # A constant channel carries no information; leave its scale alone instead of dividing by 0.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean, std


def normalize_(x_train: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor]:
    """Standardize both splits in place (no second copy of a large split) with train statistics."""
    mean, std = channel_stats(x_train)
    return x_train.sub_(mean).div_(std), x_test.sub_(mean).div_(std)
