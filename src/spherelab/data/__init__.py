"""Data sets as in-memory tensors on the training device, and index-permutation batching.

One loader per source (mnist1d_cache, fashion_mnist, cifar, npz, synthetic) behind
`load_dataset`; see `available_datasets()` for the names.
"""

from spherelab.data.augment import PAD_MODES, Augment, augment_images, image_augment
from spherelab.data.base import DataError
from spherelab.data.batching import BatchSampler, fixed_batches
from spherelab.data.load import Dataset, available_datasets, load_dataset
from spherelab.data.transforms import NOISE_STYLES, NORMALIZATIONS, SUBSETS

__all__ = [
    "NOISE_STYLES",
    "NORMALIZATIONS",
    "PAD_MODES",
    "SUBSETS",
    "Augment",
    "BatchSampler",
    "DataError",
    "Dataset",
    "augment_images",
    "available_datasets",
    "fixed_batches",
    "image_augment",
    "load_dataset",
]
