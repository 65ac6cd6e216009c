"""Learning-rate schedules as multiplicative factors of the base ELR (sphere) or lr (conventional).

A factor is a pure function of the fractional epoch, so resuming from a checkpoint reproduces it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Schedule = Callable[[float], float]
SCHEDULES = ("constant", "piecewise", "cosine", "linear_decay", "cosine_epoch")


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


def linear_decay(total_epochs: float, final_factor: float) -> Schedule:
    """The paper's "c" schedule, per epoch: epoch e (0-based) of E takes the factor of
    t = (e + 1) / (E + 1): 1 while t <= 1/4, then falling linearly in t towards final_factor
    (reached at t = 1, one epoch after the end). The paper's --c_schedule p is final 1/p."""

    def factor(epoch: float) -> float:
        t = (math.floor(epoch) + 1) / (total_epochs + 1)
        if t <= 0.25:
            return 1.0
        return final_factor + (1 - final_factor) * (1 - t) / 0.75

    return factor


def cosine_epoch(total_epochs: float) -> Schedule:
    """The paper's cosine annealing, per epoch: epoch e (0-based) of E takes the factor
    (1 + cos(pi * e / E)) / 2, from 1 in the first epoch down to its value at e = E - 1
    (above 0, so no floor is needed)."""

    def factor(epoch: float) -> float:
        return 0.5 * (1 + math.cos(math.pi * math.floor(epoch) / total_epochs))

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
    if name == "linear_decay":
        if len(factors) != 1 or not factors[0] > 0:
            raise ValueError(
                f"linear_decay schedule needs one final factor > 0, got {list(factors)}; set "
                "optim.schedule_factors=[0.01] (the paper's --c_schedule 100)"
            )
        return linear_decay(total_epochs, factors[0])
    if name == "cosine_epoch":
        return cosine_epoch(total_epochs)
    raise ValueError(f"schedule={name!r} is unknown; use one of {SCHEDULES}")
