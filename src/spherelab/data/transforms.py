"""Training-split transforms applied by load_dataset: subsets, label noise, normalization."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from spherelab.data.base import DataError

SUBSETS = ("random", "first")  # a seeded random subset | the first k samples (the paper)
NOISE_STYLES = ("exact", "paper")  # see noisy_labels
NORMALIZATIONS = ("split", "paper", "none")  # see normalize_
# The paper's fixed input normalization for CIFAR-10 and CIFAR-100 alike, per RGB channel, in
# pixel units / 255.
PAPER_MEAN = (0.4914, 0.4822, 0.4465)
PAPER_STD = (0.2023, 0.1994, 0.2010)
PAPER_NOISE_SEED = 228  # the paper's label noise is drawn from this seed, whatever the run seed


def subset_indices(
    n_train: int,
    k: int,
    generator: torch.Generator,
    what: str = "train_subset",
    how: str = "random",
) -> Tensor:
    """`how="random"`: the first k of a seeded permutation, sorted (original order kept; nested
    in k for one seed). `how="first"`: the first k samples, as the paper takes them."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_train:
        split = what.split("_")[0]
        raise DataError(
            f"{what}={k!r} is invalid: the {split} split has {n_train} samples; "
            f"pass an integer in [1, {n_train}] or None for all of them"
        )
    if how == "first":
        return torch.arange(k)
    if how != "random":
        raise DataError(f"data.subset={how!r} is unknown; pass one of {SUBSETS}")
    return torch.randperm(n_train, generator=generator)[:k].sort().values


def noisy_labels(
    y: Tensor,
    fraction: float,
    num_classes: int,
    generator: torch.Generator,
    style: str = "exact",
) -> tuple[Tensor, Tensor]:
    """The labels with noise, and the boolean mask of the samples drawn for it.

    `exact`: exactly round(fraction * n) labels, chosen with `generator`, each moved to a
    different uniformly random class. `paper`: each label is drawn for noise independently with
    probability `fraction`, then given a uniformly random class (which may be its own), all from
    numpy's RandomState(228), so the noise is the same for every run seed.
    """
    valid = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not valid or not 0.0 <= float(fraction) <= 1.0:
        raise DataError(
            f"label_noise={fraction!r} is invalid; pass the fraction of training labels to "
            "corrupt, a number in [0, 1]"
        )
    if style not in NOISE_STYLES:
        raise DataError(f"data.label_noise_style={style!r} is unknown; pass one of {NOISE_STYLES}")
    mask = torch.zeros(y.shape[0], dtype=torch.bool)
    if fraction == 0:
        return y, mask
    if style == "paper":
        return _paper_noise(y, float(fraction), num_classes)
    count = round(float(fraction) * y.shape[0])
    if count == 0:
        return y, mask
    if num_classes < 2:
        raise DataError(f"label_noise={fraction!r} needs at least 2 classes, got {num_classes}")
    chosen = torch.randperm(y.shape[0], generator=generator)[:count]
    # A shift in [1, K-1] modulo K never maps a label to itself and is uniform over the others.
    shift = torch.randint(1, num_classes, (count,), generator=generator)
    noisy = y.clone()
    noisy[chosen] = (y[chosen] + shift) % num_classes
    mask[chosen] = True
    return noisy, mask


def _paper_noise(y: Tensor, fraction: float, num_classes: int) -> tuple[Tensor, Tensor]:
    rs = np.random.RandomState(PAPER_NOISE_SEED)
    mask = rs.rand(y.shape[0]) <= fraction  # one uniform draw per sample, in sample order
    classes = rs.choice(num_classes, int(mask.sum()))  # then one class per drawn sample
    noisy = y.clone()
    chosen = torch.from_numpy(mask)
    noisy[chosen] = torch.from_numpy(classes.astype(np.int64))
    return noisy, chosen


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std broadcastable to x: per channel (dim 1) for samples of >= 2 dims, a single
    global pair for vectors (N, D), so relative feature scales of vector data are kept."""
    dims = tuple(d for d in range(x.dim()) if d != 1) if x.dim() > 2 else tuple(range(x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, unbiased=False)
    # A constant channel carries no information; leave its scale alone instead of dividing by 0.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean, std


def paper_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """The paper's fixed CIFAR mean and std, broadcastable to RGB images (N, 3, H, W)."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise DataError(
            f"data.normalize='paper' uses the paper's CIFAR constants for RGB images (N, 3, H, W);"
            f" this data set has samples of shape {tuple(x.shape[1:])}: use 'split' or 'none'"
        )
    mean = torch.tensor(PAPER_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(PAPER_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return mean, std


def normalize_(
    x_train: Tensor, x_test: Tensor, how: str = "split"
) -> tuple[Tensor, Tensor, Tensor]:
    """Standardize both splits in place (no second copy of a large split): `split` with the
    training split's statistics, `paper` with the paper's fixed constants, `none` not at all.
    Also returns the value a zero input takes afterwards (per channel, broadcastable to one
    sample): what the paper's zero padding of a raw image becomes."""
    if how not in NORMALIZATIONS:
        raise DataError(f"data.normalize={how!r} is unknown; pass one of {NORMALIZATIONS}")
    if how == "none":
        return x_train, x_test, torch.zeros((), dtype=x_train.dtype, device=x_train.device)
    mean, std = paper_stats(x_train) if how == "paper" else channel_stats(x_train)
    zero = (torch.zeros_like(mean) - mean) / std  # the same operations as on the data
    return x_train.sub_(mean).div_(std), x_test.sub_(mean).div_(std), zero[0]
