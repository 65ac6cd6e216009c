"""Synthetic classification data with a learnable signal: Gaussian inputs labelled by a teacher.

Spec grammar: ``synthetic[:SHAPE[:N_TRAIN[:N_TEST[:CLASSES]]]]`` with SHAPE like ``3x32x32`` or
``40``. Defaults: ``synthetic:3x32x32:5000:1000:10`` (CIFAR shape). Inputs are iid N(0, 1);
labels are argmax(x_flat @ W) for a fixed random linear teacher W, so the labels are a
deterministic, learnable function of the inputs. The data depend only on the spec (data seed
DATA_SEED), never on load_dataset's `seed`, exactly like a real dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spherelab.data.base import DataError, RawSplits, check_splits

DATA_SEED = 0
GRAMMAR = "synthetic[:SHAPE[:N_TRAIN[:N_TEST[:CLASSES]]]], e.g. synthetic:3x32x32:5000:1000:10"


@dataclass(frozen=True)
class SyntheticSpec:
    shape: tuple[int, ...] = (3, 32, 32)
    n_train: int = 5000
    n_test: int = 1000
    num_classes: int = 10

    @property
    def name(self) -> str:
        shape = "x".join(str(d) for d in self.shape)
        return f"synthetic:{shape}:{self.n_train}:{self.n_test}:{self.num_classes}"


def parse_spec(spec: str) -> SyntheticSpec:
    """Parse the grammar above; raise DataError naming the bad part."""
    parts = spec.split(":")
    if parts[0] != "synthetic" or len(parts) > 5:
        raise DataError(f"bad synthetic spec {spec!r}; expected {GRAMMAR}")
    defaults = SyntheticSpec()
    try:
        shape = tuple(int(d) for d in parts[1].split("x")) if len(parts) > 1 else defaults.shape
        counts = [int(p) for p in parts[2:]]
    except ValueError as err:
        raise DataError(f"bad synthetic spec {spec!r} ({err}); expected {GRAMMAR}") from err
    n_train, n_test, classes = (
        counts + [defaults.n_train, defaults.n_test, defaults.num_classes][len(counts) :]
    )
    if min(shape) < 1 or n_train < 1 or n_test < 1 or classes < 2:
        raise DataError(
            f"bad synthetic spec {spec!r}: dimensions and sizes must be >= 1 and classes >= 2; "
            f"expected {GRAMMAR}"
        )
    return SyntheticSpec(shape, n_train, n_test, classes)


def load(spec: SyntheticSpec) -> RawSplits:
    """Float32 inputs of shape (N, *spec.shape), int64 teacher labels."""
    rng = np.random.default_rng(DATA_SEED)
    dim = int(np.prod(spec.shape))
    teacher = rng.standard_normal((dim, spec.num_classes), dtype=np.float32)
    x = rng.standard_normal((spec.n_train + spec.n_test, dim), dtype=np.float32)
    y = np.argmax(x @ teacher, axis=1).astype(np.int64)
    x = x.reshape(-1, *spec.shape)
    raw = RawSplits(
        x_train=x[: spec.n_train],
        y_train=y[: spec.n_train],
        x_test=x[spec.n_train :],
        y_test=y[spec.n_train :],
        num_classes=spec.num_classes,
    )
    return check_splits(raw, spec.name)
