"""Learning-rate schedules as multiplicative factors of the base ELR (sphere) or lr (conventional).

A factor is a pure function of the fractional epoch, so resuming from a checkpoint reproduces it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Schedule = Callable[[float], float]
SCHEDULES = ("constant", "piecewise", "cosine")


def constant() -> Schedule:
    return lambda epoch: 1.0


def piecewise(milestones: Sequence[float], factors: Sequence[float]) -> Schedule:
    """Factor 1 before milestones[0], factors[i] from milestones[i] on (epochs, ascending)."""
    if len(milestones) != len(factors):
        raise ValueError(
            f"piecewise schedule needs as many factors as milestones, got "
            f"{len(factors)} factors for {len(milestones)} milestones"
        )
    if list(milestones) != sorted(milestones):
        raise ValueError(f"schedule milestones {list(milestones)} must be ascending")
    if any(f <= 0 for f in factors):
        raise ValueError(f"schedule factors {list(factors)} must all be > 0")

    def factor(epoch: float) -> float:
        value = 1.0
        for m, f in zip(milestones, factors):
            if epoch >= m:
                value = f
        return value

    return factor


def cosine(total_epochs: float, final_factor: float = 0.0) -> Schedule:
    """Half-cosine from 1 at epoch 0 to final_factor at total_epochs."""

    def factor(epoch: float) -> float:
        t = min(max(epoch / total_epochs, 0.0), 1.0)
        return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def make_schedule(
    name: str, total_epochs: float, milestones: Sequence[float] = (), factors: Sequence[float] = ()
) -> Schedule:
    if name == "constant":
        return constant()
    if name == "piecewise":
        return piecewise(milestones, factors)
    if name == "cosine":
        # A floor keeps the ELR positive (SphereSGD rejects 0): 1e-3 of the base value.
        final = factors[0] if factors else 1e-3
        if not final > 0:
            raise ValueError(
                f"cosine schedule floor {final} must be > 0 (set "
                "optim.schedule_factors=[1e-3] or leave it empty)"
            )
        return cosine(total_epochs, final_factor=final)
    raise ValueError(f"schedule={name!r} is unknown; use one of {SCHEDULES}")
