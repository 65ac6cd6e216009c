"""Index-permutation batching from a seeded CPU generator (no DataLoader), and eval batches."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from spherelab.data.base import DataError


class BatchSampler:
    """Per epoch, a fresh permutation of range(n) split into batches of `batch_size`.

    The last batch is smaller when batch_size does not divide n (nothing dropped: 50000 / 128
    gives 391 steps). batch_size <= 0 or >= n means full-batch GD: one batch, range(n) in order,
    and the generator is not consumed. Index tensors live on `device` (default CPU); moving the
    permutation once per epoch avoids a host-to-device copy per step.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator,
        *,
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DataError(f"n={n!r} is invalid; the sampler needs the dataset size, an int >= 1")
        if generator.device.type != "cpu":
            raise DataError(
                f"the sampler's generator is on {generator.device}; pass a CPU torch.Generator "
                "(permutations are drawn on the CPU so that runs replay bitwise everywhere)"
            )
        self.n = n
        self.full_batch = batch_size <= 0 or batch_size >= n
        self.batch_size = n if self.full_batch else int(batch_size)
        self.generator = generator
        self.device = torch.device("cpu") if device is None else torch.device(device)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch_indices(self) -> list[Tensor]:
        """The batches of one epoch (int64 index tensors); advances the generator once."""
        if self.full_batch:
            return [torch.arange(self.n, device=self.device)]
        order = torch.randperm(self.n, generator=self.generator).to(self.device)
        return list(order.split(self.batch_size))

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "batch_size": self.batch_size, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator, so the following epochs replay bitwise."""
        if (state["n"], state["batch_size"]) != (self.n, self.batch_size):
            raise DataError(
                f"sampler state is for n={state['n']}, batch_size={state['batch_size']} but this "
                f"sampler has n={self.n}, batch_size={self.batch_size}; build it with those"
            )
        self.generator.set_state(state["generator"])


def fixed_batches(n: int, batch_size: int) -> list[slice]:
    """Unshuffled consecutive batches (the paper's train metrics); <= 0 or >= n gives one batch."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"n={n!r} is invalid; pass the dataset size, an int >= 1")
    if batch_size <= 0 or batch_size >= n:
        return [slice(0, n)]
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
