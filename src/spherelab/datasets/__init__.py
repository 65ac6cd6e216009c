"""Per-dataset loaders and helpers behind spherelab.data (import the public API from there)."""

from spherelab.datasets.base import DataError, RawSplits

__all__ = ["DataError", "RawSplits"]
